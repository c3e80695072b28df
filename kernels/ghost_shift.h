// The ghost operation of GhostSR (Nie et al., §3.1): shared declarations and argument checks of the compiled op.
//
// Semantics (identical to ghost_shift_reference in ghostsr_plugin/ops/shift.py):
//   * x holds the n intrinsic features I, [N, n, H, W];
//   * the layer's offset is the flat index k of the one-hot weight W of Eq. 2, a move
//     (dy, dx) = (k / (2d+1) - d, k % (2d+1) - d); Eq. 1 with that W reads G[y, x] = I[y + dy, x + dx],
//     zero where (y + dy, x + dx) falls outside the map;
//   * output channel c is entry index[c] of the virtual concatenation [I, G] (2n channels):
//     index[c] < n copies I[index[c]], index[c] >= n is the ghost G[index[c] - n].
// Optional fused epilogue (forward only; its gradient is composed in Python): out = residual + scale * act(Y),
// act = prelu(Y, slopes) when slopes are given (nn.PReLU's weight: one per output channel, or one for all),
// else torch.relu when relu and negative_slope == 0, leaky_relu(Y, negative_slope) when relu and the slope is
// nonzero, none otherwise; each step rounded to the dtype as the separate PyTorch ops would (act, then * scale,
// then residual +).
// Backward: dL/dI is the transposed move of the ghost gradients plus the intrinsic ones, summed per source
// channel; the straight-through gradient of Eq. 6 to S(W') is the K = (2d+1)^2 reductions
// sum_{ghost c} <dL/dY_c, shift_k(I_src(c))>.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <utility>

namespace ghostsr {

// Largest maximum offset accepted; keeps (2d+1)^2 and every offset computation far from int64 overflow.
constexpr int64_t kMaxOffset = 1 << 20;

inline int64_t window_size(int64_t d) { return (2 * d + 1) * (2 * d + 1); }

// Flat offset index k -> (dy, dx), each in [-d, d] (as offset_to_shift in shift.py).
inline std::pair<int64_t, int64_t> offset_to_shift(int64_t offset, int64_t d) {
  return {offset / (2 * d + 1) - d, offset % (2 * d + 1) - d};
}

// Memory-format rule shared by every kernel and by the fake (meta) functions in backend.py: a tensor is processed
// as channels_last (NHWC) when it is channels_last-contiguous and not also NCHW-contiguous; anything else is
// processed (and, if needed, first copied) as contiguous NCHW. Outputs come out in the layout processed.
inline bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::Tensor in_layout(const at::Tensor& t, bool channels_last) {
  return t.contiguous(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

inline bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble;
}

inline void check_features(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.dim() == 4, "ghost_shift: ", what, " must be a 4-D tensor [N, C, H, W], got shape ", t.sizes());
  TORCH_CHECK(is_supported_dtype(t.scalar_type()), "ghost_shift: ", what,
              " must be float32, float16, bfloat16 or float64, got ", t.scalar_type());
}

inline void check_window(int64_t d) {
  TORCH_CHECK(d >= 1 && d <= kMaxOffset, "ghost_shift: maximum offset d must be an integer in [1, ", kMaxOffset,
              "], got ", d);
}

inline void check_offset(int64_t offset, int64_t d) {
  check_window(d);
  TORCH_CHECK(offset >= 0 && offset < window_size(d), "ghost_shift: offset index must lie in [0, ",
              window_size(d) - 1, "] for d=", d, " (a (2d+1)x(2d+1) window), got ", offset);
}

// Checks of the channel map that need no look at its values (the values are checked by each kernel).
inline void check_index(const at::Tensor& index, const at::Tensor& features) {
  TORCH_CHECK(index.scalar_type() == at::kLong && index.dim() == 1,
              "ghost_shift: channel map must be a 1-D int64 tensor, got ", index.scalar_type(), " of shape ",
              index.sizes());
  TORCH_CHECK(index.device() == features.device(), "ghost_shift: channel map is on ", index.device(),
              " but the features are on ", features.device());
}

inline void check_forward_args(const at::Tensor& x, const at::Tensor& index, int64_t offset, int64_t d,
                               const std::optional<at::Tensor>& probs) {
  check_features(x, "intrinsic features x");
  check_index(index, x);
  check_offset(offset, d);
  if (probs.has_value()) {
    const at::Tensor& p = *probs;
    TORCH_CHECK(p.dim() == 1 && p.size(0) == window_size(d), "ghost_shift: offset probabilities must have shape (",
                window_size(d), ",) for d=", d, ", got ", p.sizes());
    TORCH_CHECK(p.is_floating_point(), "ghost_shift: offset probabilities must be floating point, got ",
                p.scalar_type());
    TORCH_CHECK(p.device() == x.device(), "ghost_shift: offset probabilities are on ", p.device(),
                " but the features are on ", x.device());
  }
}

// The optional fused epilogue of the forward: out = residual + scale * act(ghost output).
inline void check_residual(const at::Tensor& residual, const at::Tensor& x, int64_t c_out) {
  TORCH_CHECK(residual.dim() == 4 && residual.size(0) == x.size(0) && residual.size(1) == c_out &&
                  residual.size(2) == x.size(2) && residual.size(3) == x.size(3),
              "ghost_shift: residual must have the output's shape [", x.size(0), ", ", c_out, ", ", x.size(2), ", ",
              x.size(3), "], got ", residual.sizes());
  TORCH_CHECK(residual.scalar_type() == x.scalar_type(), "ghost_shift: residual is ", residual.scalar_type(),
              " but the features are ", x.scalar_type());
  TORCH_CHECK(residual.device() == x.device(), "ghost_shift: residual is on ", residual.device(),
              " but the features are on ", x.device());
}

// A forward's inputs in the layout its kernels process (x decides; a residual follows it) and its output allocated
// in that layout, [N, c_out, H, W]. Call after check_forward_args.
struct ForwardTensors {
  bool channels_last;
  at::Tensor x, residual, out;  // residual undefined when none is given
};

inline ForwardTensors forward_tensors(const at::Tensor& x_in, int64_t c_out,
                                      const std::optional<at::Tensor>& residual_in) {
  ForwardTensors t;
  t.channels_last = is_channels_last(x_in);
  t.x = in_layout(x_in, t.channels_last);
  if (residual_in.has_value()) {
    check_residual(*residual_in, t.x, c_out);
    t.residual = in_layout(*residual_in, t.channels_last);
  }
  const auto format = t.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  t.out = at::empty({t.x.size(0), c_out, t.x.size(2), t.x.size(3)}, t.x.options().memory_format(format));
  return t;
}

// The PReLU slopes of a forward as c_out contiguous values of x's dtype on x's device (one value is used for every
// channel, as nn.PReLU(1)); undefined when none are given.
inline at::Tensor channel_slopes(const std::optional<at::Tensor>& slopes, const at::Tensor& x, int64_t c_out) {
  if (!slopes.has_value()) return at::Tensor();
  const at::Tensor& w = *slopes;
  TORCH_CHECK(w.dim() == 1 && (w.size(0) == c_out || w.size(0) == 1), "ghost_shift: slopes must be a 1-D tensor of ",
              c_out, " values (one per output channel) or 1, got shape ", w.sizes());
  TORCH_CHECK(w.scalar_type() == x.scalar_type(), "ghost_shift: slopes are ", w.scalar_type(),
              " but the features are ", x.scalar_type());
  TORCH_CHECK(w.device() == x.device(), "ghost_shift: slopes are on ", w.device(), " but the features are on ",
              x.device());
  return w.expand({c_out}).contiguous();
}

inline void check_backward_args(const at::Tensor& grad_out, const at::Tensor& index, int64_t offset, int64_t d,
                                int64_t num_in) {
  check_features(grad_out, "output gradient");
  check_index(index, grad_out);
  check_offset(offset, d);
  TORCH_CHECK(num_in >= 0, "ghost_shift_backward: number of intrinsic channels must be >= 0, got ", num_in);
  TORCH_CHECK(grad_out.size(1) == index.size(0), "ghost_shift_backward: output gradient has ", grad_out.size(1),
              " channels but the channel map has ", index.size(0), " entries");
}

inline void check_offset_grad_args(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& index,
                                   int64_t d) {
  check_features(grad_out, "output gradient");
  check_features(x, "intrinsic features x");
  check_index(index, x);
  check_window(d);
  TORCH_CHECK(grad_out.device() == x.device(), "ghost_shift_offset_grad: output gradient is on ", grad_out.device(),
              " but the features are on ", x.device());
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type(), "ghost_shift_offset_grad: output gradient is ",
              grad_out.scalar_type(), " but the features are ", x.scalar_type());
  TORCH_CHECK(grad_out.size(0) == x.size(0) && grad_out.size(2) == x.size(2) && grad_out.size(3) == x.size(3),
              "ghost_shift_offset_grad: output gradient of shape ", grad_out.sizes(),
              " does not match features of shape ", x.sizes());
  TORCH_CHECK(grad_out.size(1) == index.size(0), "ghost_shift_offset_grad: output gradient has ", grad_out.size(1),
              " channels but the channel map has ", index.size(0), " entries");
}

// Dtype of the offset gradient: float64 for float64 features, float32 otherwise (fp16/bf16 accumulate in fp32).
inline at::ScalarType offset_grad_dtype(at::ScalarType features) {
  return features == at::kDouble ? at::kDouble : at::kFloat;
}

#ifdef GHOSTSR_WITH_CUDA
at::Tensor ghost_shift_cuda(const at::Tensor& x, const at::Tensor& index, int64_t offset, int64_t d,
                            const std::optional<at::Tensor>& probs, const std::optional<at::Tensor>& residual,
                            double scale, bool relu, double negative_slope, const std::optional<at::Tensor>& slopes);
at::Tensor ghost_shift_backward_cuda(const at::Tensor& grad_out, const at::Tensor& index, int64_t offset, int64_t d,
                                     int64_t num_in);
at::Tensor ghost_shift_offset_grad_cuda(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& index,
                                        int64_t d);
#endif

}  // namespace ghostsr
