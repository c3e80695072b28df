// The ghost operation of GhostSR (Nie et al., §3.1, Eq. 1-6): op registration and the CPU kernels.
//
// Ops (namespace ghostsr, see ghost_shift.h for the semantics):
//   ghost_shift(x, index, offset, d, probs=None, residual=None, scale=1.0, relu=False, negative_slope=0.0,
//               slopes=None)
//       -> [N, c_out, H, W]: forward, Eq. 1-2 with the one-hot W of Eq. 5; optional fused epilogue
//       residual + scale * act(Y), act = PReLU of the per-channel slopes when given, else ReLU (slope 0) or leaky
//       ReLU when relu, else none
//   ghost_shift_backward(grad_out, index, offset, d, num_in) -> dL/dx     transposed move, summed per source channel
//   ghost_shift_offset_grad(grad_out, x, index, d) -> [(2d+1)^2]          straight-through dL/dS(W') of Eq. 6
// The autograd formula and the fake (meta) functions are registered from Python (ghostsr_plugin/ops/backend.py).
//
// CPU kernels: one pass over memory, threads from at::parallel_for (OpenMP), inner loops over W (NCHW) or over
// channels (channels_last) are plain copies/adds the compiler vectorises. Forward and input gradient are exact:
// the forward only moves values; the input gradient adds in the order the reference does (ascending output
// channel, intrinsic users then the moved sum of ghost users), rounding to the tensor's dtype at every step.
#include "ghost_shift.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <Python.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

namespace ghostsr {
namespace {

// Work per thread chunk below which splitting further is not worth a thread hand-off (elements).
constexpr int64_t kChunkElems = 1 << 15;

// Output channels grouped by the entry of the virtual concat [I, G] they read, ascending within a group
// (a stable counting sort of the channel map). Entry e < n: intrinsic channel e; e >= n: ghost of channel e - n.
struct ChannelUsers {
  int64_t num_in = 0;
  std::vector<int64_t> start;  // 2n + 1 offsets into users
  std::vector<int64_t> users;  // c_out output channels

  const int64_t* begin(int64_t entry) const { return users.data() + start[entry]; }
  const int64_t* end(int64_t entry) const { return users.data() + start[entry + 1]; }
};

// Validates every value of a CPU channel map (never trusted: an out-of-range value would read out of bounds).
std::vector<int64_t> read_index(const at::Tensor& index, int64_t num_in) {
  at::Tensor contiguous = index.contiguous();
  const int64_t* data = contiguous.data_ptr<int64_t>();
  std::vector<int64_t> values(data, data + contiguous.numel());
  for (size_t c = 0; c < values.size(); ++c) {
    TORCH_CHECK(values[c] >= 0 && values[c] < 2 * num_in, "ghost_shift: channel map value ", values[c],
                " at position ", c, " is out of range; values must lie in [0, ", 2 * num_in - 1, "] (2 x ", num_in,
                " intrinsic channels)");
  }
  return values;
}

ChannelUsers group_users(const std::vector<int64_t>& index, int64_t num_in) {
  ChannelUsers u;
  u.num_in = num_in;
  u.start.assign(2 * num_in + 1, 0);
  for (int64_t entry : index) ++u.start[entry + 1];
  for (int64_t e = 0; e < 2 * num_in; ++e) u.start[e + 1] += u.start[e];
  std::vector<int64_t> fill(u.start.begin(), u.start.end() - 1);
  u.users.resize(index.size());
  for (size_t c = 0; c < index.size(); ++c) u.users[fill[index[c]]++] = static_cast<int64_t>(c);
  return u;
}

// Tasks of (batch, source channel, block of rows): rows per block so a task moves about kChunkElems elements.
struct RowBlocks {
  int64_t rows, count;
  RowBlocks(int64_t H, int64_t W) {
    rows = std::max<int64_t>(1, std::min<int64_t>(H, kChunkElems / std::max<int64_t>(W, 1)));
    count = H == 0 ? 0 : (H + rows - 1) / rows;
  }
};

// Grain (tasks per chunk) so that a chunk handles at least kChunkElems elements.
int64_t grain_for(int64_t elems_per_task) {
  return std::max<int64_t>(1, kChunkElems / std::max<int64_t>(elems_per_task, 1));
}

// ---------------------------------------------------------------------------------------------------------------
// Forward. The kernels decide where every output element comes from (a source element or the zero fill) and hand
// runs of elements to a Writer, which stores them:
//   * BitWriter: the plain op; pure data movement on the raw bits (S = unsigned integer of the element size), exact
//     for every dtype, zero fill is all-zero bits (+0.0);
//   * EpilogueWriter: the fused epilogue out = residual + scale * act(value), in the same pass.
// Short runs are plain loops the compiler vectorises (the build disables their conversion into memcpy calls);
// long ones go to memcpy/memset.

constexpr int64_t kLongRunBytes = 1024;

template <typename S>
struct BitWriter {
  using Elem = S;
  static constexpr int64_t kBlockBytes = 64, kBlock = kBlockBytes / sizeof(S);  // a short run moves in 64-byte blocks
  S* out;

  void copy(int64_t pos, const S* src_in, int64_t len) const {
    S* __restrict__ dst = out + pos;
    const S* __restrict__ src = src_in;  // the op never writes its input
    if (len * static_cast<int64_t>(sizeof(S)) >= kLongRunBytes) {
      std::memcpy(dst, src, len * sizeof(S));
      return;
    }
    int64_t i = 0;
    for (; i + kBlock <= len; i += kBlock) __builtin_memcpy(dst + i, src + i, kBlockBytes);  // inlined moves
    for (; i < len; ++i) dst[i] = src[i];
  }

  void zero(int64_t pos, int64_t len) const {
    S* __restrict__ dst = out + pos;
    if (len * static_cast<int64_t>(sizeof(S)) >= kLongRunBytes) {
      std::memset(dst, 0, len * sizeof(S));
      return;
    }
    int64_t i = 0;
    for (; i + kBlock <= len; i += kBlock) __builtin_memset(dst + i, 0, kBlockBytes);
    for (; i < len; ++i) dst[i] = 0;
  }
};

// The epilogue's activation: none, ReLU (torch.relu: +0 for v < 0), leaky ReLU with a nonzero slope, or PReLU
// (one slope per output channel, nn.PReLU's weight).
enum class Act { kNone, kRelu, kLeaky, kPrelu };

// Where a PReLU epilogue reads the slope of an element: its channel is (pos / plane) % c_out in NCHW (one channel
// per run, the kernels never write across a plane) and pos % c_out + i in channels_last (a run stays in one pixel).
template <typename T>
struct ChannelSlopes {
  const T* slopes;  // c_out values, or null
  int64_t plane, c_out;
  bool channels_last;
};

// out = residual + scale * act(value), rounded to T after each step as the separate PyTorch ops round (relu; leaky
// ReLU and PReLU in opmath, rounded; a multiplication by a Python scalar computes in opmath and rounds; the addition
// rounds). Leaky ReLU and PReLU are v * (v > 0 ? unit : slope) as PyTorch's vectorised kernels compute them (the
// value of v > 0 ? v : v * slope). `unit` is 1 held as data, not a literal: GCC folds v * 1 and turns the select
// into a branch around v * slope, which its default -ftrapping-math keeps from vectorising (25x slower on mixed
// signs).
template <typename T, Act Activation, bool Residual>
struct EpilogueWriter {
  using Elem = T;
  using A = at::opmath_type<T>;
  T* out;
  const T* residual;
  A scale, slope, unit;
  ChannelSlopes<T> channel;

  static T apply(A v, T r, A s, A slope, A unit) {
    if constexpr (Activation == Act::kRelu) v = v < A(0) ? A(0) : v;
    if constexpr (Activation == Act::kLeaky || Activation == Act::kPrelu) {
      v = static_cast<A>(static_cast<T>(v * (v > A(0) ? unit : slope)));
    }
    const T scaled = static_cast<T>(v * s);
    if constexpr (Residual) {
      return static_cast<T>(static_cast<A>(r) + static_cast<A>(scaled));
    } else {
      return scaled;
    }
  }

  // The slope of a run from `pos` in NCHW (PReLU: its channel's; otherwise the leaky slope).
  A run_slope(int64_t pos) const {
    if constexpr (Activation == Act::kPrelu) {
      return static_cast<A>(channel.slopes[(pos / channel.plane) % channel.c_out]);
    } else {
      return slope;
    }
  }

  void copy(int64_t pos, const T* src_in, int64_t len) const {
    T* __restrict__ dst = out + pos;
    const T* __restrict__ src = src_in;
    const T* __restrict__ res = Residual ? residual + pos : nullptr;
    const A s = scale, u = unit;  // locals: stores through dst cannot change them, so the loop vectorises
    if (Activation == Act::kPrelu && channel.channels_last) {
      const T* __restrict__ sl = channel.slopes + pos % channel.c_out;
      for (int64_t i = 0; i < len; ++i) {
        dst[i] = apply(static_cast<A>(src[i]), Residual ? res[i] : T(0), s, static_cast<A>(sl[i]), u);
      }
      return;
    }
    const A a = run_slope(pos);
    for (int64_t i = 0; i < len; ++i) dst[i] = apply(static_cast<A>(src[i]), Residual ? res[i] : T(0), s, a, u);
  }

  void zero(int64_t pos, int64_t len) const {
    T* __restrict__ dst = out + pos;
    const T* __restrict__ res = Residual ? residual + pos : nullptr;
    const A s = scale, u = unit;
    if (Activation == Act::kPrelu && channel.channels_last) {
      const T* __restrict__ sl = channel.slopes + pos % channel.c_out;
      for (int64_t i = 0; i < len; ++i) dst[i] = apply(A(0), Residual ? res[i] : T(0), s, static_cast<A>(sl[i]), u);
      return;
    }
    const A a = run_slope(pos);
    for (int64_t i = 0; i < len; ++i) dst[i] = apply(A(0), Residual ? res[i] : T(0), s, a, u);
  }
};

// Rows [y0, y1) of one plane (output elements from `pos`) of Eq. 1 with a one-hot W: out[y, x] = src[y + dy, x + dx],
// zero outside. The rows whose source row exists are one flat run moved by dy * W + dx; the |dx| columns that this
// run fills from the neighbouring row (or that have no source) are then rewritten as zero fill.
template <typename Writer>
inline void shift_rows(const Writer& w, const typename Writer::Elem* src, int64_t pos, int64_t y0, int64_t y1,
                       int64_t H, int64_t W, int64_t dy, int64_t dx) {
  const int64_t ya = std::clamp<int64_t>(-dy, y0, y1), yb = std::clamp<int64_t>(H - dy, ya, y1);  // rows with a source
  w.zero(pos + y0 * W, (ya - y0) * W);
  w.zero(pos + yb * W, (y1 - yb) * W);
  if (ya == yb) return;
  if (dx <= -W || dx >= W) {
    w.zero(pos + ya * W, (yb - ya) * W);
    return;
  }
  const int64_t p0 = ya * W + std::max<int64_t>(0, -dx), p1 = yb * W - std::max<int64_t>(0, dx);
  w.copy(pos + p0, src + p0 + dy * W + dx, p1 - p0);
  const int64_t xa = std::max<int64_t>(0, -dx), xb = W - std::max<int64_t>(0, dx);  // columns with a source
  if (xa == 0 && xb == W) return;
  for (int64_t y = ya; y < yb; ++y) {
    w.zero(pos + y * W, xa);
    w.zero(pos + y * W + xb, W - xb);
  }
}

// NCHW: one task per (batch, source channel, row block) writes every output channel made from that source, so
// each input row is read from memory once and reused from cache for its copies.
template <typename Writer>
void forward_nchw(const Writer& w, const typename Writer::Elem* x, const ChannelUsers& u, int64_t N, int64_t c_out,
                  int64_t H, int64_t W, int64_t dy, int64_t dx) {
  const int64_t n = u.num_in, plane = H * W;
  const RowBlocks blocks(H, W);
  const int64_t per_task = blocks.rows * W * std::max<int64_t>(1, c_out / std::max<int64_t>(n, 1));
  at::parallel_for(0, N * n * blocks.count, grain_for(per_task), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t block = task % blocks.count, bs = task / blocks.count, s = bs % n, b = bs / n;
      const int64_t y0 = block * blocks.rows, y1 = std::min(H, y0 + blocks.rows);
      const auto* src = x + (b * n + s) * plane;
      for (const int64_t* c = u.begin(s); c != u.end(s); ++c) {
        w.copy((b * c_out + *c) * plane + y0 * W, src + y0 * W, (y1 - y0) * W);
      }
      for (const int64_t* c = u.begin(n + s); c != u.end(n + s); ++c) {
        shift_rows(w, src, (b * c_out + *c) * plane, y0, y1, H, W, dy, dx);
      }
    }
  });
}

// A run of output channels [out_c, out_c + len) copied from consecutive channels of one input pixel.
struct Run {
  int64_t out_c, src_c, len;
  bool ghost;
};

std::vector<Run> channel_runs(const std::vector<int64_t>& index, int64_t n) {
  std::vector<Run> runs;
  for (int64_t c = 0; c < static_cast<int64_t>(index.size()); ++c) {
    const bool ghost = index[c] >= n;
    const int64_t src = ghost ? index[c] - n : index[c];
    if (!runs.empty() && runs.back().ghost == ghost && runs.back().src_c + runs.back().len == src) {
      ++runs.back().len;
    } else {
      runs.push_back({c, src, 1, ghost});
    }
  }
  return runs;
}

// Channels_last: one task per output row (b, y); each output pixel gathers its channels from the intrinsic pixel
// (y, x) and the moved one (y + dy, x + dx). Maps made of long runs (the default [I, G]) move runs; scattered maps
// (clustering, §3.2) gather channel by channel into a pixel buffer first.
template <typename Writer>
void forward_nhwc(const Writer& w, const typename Writer::Elem* x, const std::vector<int64_t>& index, int64_t n,
                  int64_t N, int64_t H, int64_t W, int64_t dy, int64_t dx) {
  using E = typename Writer::Elem;
  const int64_t c_out = static_cast<int64_t>(index.size());
  const std::vector<Run> runs = channel_runs(index, n);
  const bool by_runs = static_cast<int64_t>(runs.size()) * 4 <= c_out;
  std::vector<int64_t> src_c(c_out);
  std::vector<uint8_t> is_ghost(c_out);
  for (int64_t c = 0; c < c_out; ++c) {
    is_ghost[c] = index[c] >= n;
    src_c[c] = is_ghost[c] ? index[c] - n : index[c];
  }
  at::parallel_for(0, N * H, grain_for(W * c_out), [&](int64_t begin, int64_t end) {
    std::vector<E> pixel(by_runs ? 0 : c_out);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H, ys = y + dy;
      const bool row_valid = ys >= 0 && ys < H;
      for (int64_t col = 0; col < W; ++col) {
        const int64_t pos = (row * W + col) * c_out;
        const E* p0 = x + (row * W + col) * n;
        const int64_t xs = col + dx;
        const E* p1 = row_valid && xs >= 0 && xs < W ? x + ((b * H + ys) * W + xs) * n : nullptr;
        if (by_runs) {
          for (const Run& r : runs) {
            const E* p = r.ghost ? p1 : p0;
            if (p == nullptr) {
              w.zero(pos + r.out_c, r.len);
            } else {
              w.copy(pos + r.out_c, p + r.src_c, r.len);
            }
          }
        } else {
          for (int64_t c = 0; c < c_out; ++c) {
            pixel[c] = is_ghost[c] ? (p1 ? p1[src_c[c]] : E(0)) : p0[src_c[c]];
          }
          w.copy(pos, pixel.data(), c_out);
        }
      }
    }
  });
}

template <size_t Bytes>
struct BitsOf;
template <>
struct BitsOf<2> {
  using type = uint16_t;
};
template <>
struct BitsOf<4> {
  using type = uint32_t;
};
template <>
struct BitsOf<8> {
  using type = uint64_t;
};

template <typename T, Act Activation, typename Run>
void with_residual(bool residual, T* out, const T* res, double scale, double slope, const ChannelSlopes<T>& channel,
                   const Run& run) {
  using A = at::opmath_type<T>;
  const A s = static_cast<A>(scale), a = static_cast<A>(slope);
  if (residual) {
    run(EpilogueWriter<T, Activation, true>{out, res, s, a, A(1), channel});
  } else {
    run(EpilogueWriter<T, Activation, false>{out, res, s, a, A(1), channel});
  }
}

template <typename T, typename Run>
void with_epilogue(bool relu, double slope, const ChannelSlopes<T>& channel, bool residual, T* out, const T* res,
                   double scale, const Run& run) {
  if (channel.slopes != nullptr) {
    with_residual<T, Act::kPrelu>(residual, out, res, scale, slope, channel, run);
  } else if (!relu) {
    with_residual<T, Act::kNone>(residual, out, res, scale, slope, channel, run);
  } else if (slope == 0.0) {
    with_residual<T, Act::kRelu>(residual, out, res, scale, slope, channel, run);
  } else {
    with_residual<T, Act::kLeaky>(residual, out, res, scale, slope, channel, run);
  }
}

at::Tensor ghost_shift_cpu(const at::Tensor& x_in, const at::Tensor& index, int64_t offset, int64_t d,
                           const std::optional<at::Tensor>& probs, const std::optional<at::Tensor>& residual_in,
                           double scale, bool relu, double negative_slope,
                           const std::optional<at::Tensor>& slopes_in) {
  check_forward_args(x_in, index, offset, d, probs);
  const int64_t c_out = index.size(0);
  const auto [cl, x, residual, out] = forward_tensors(x_in, c_out, residual_in);
  const at::Tensor slopes = channel_slopes(slopes_in, x, c_out);
  const int64_t N = x.size(0), n = x.size(1), H = x.size(2), W = x.size(3);
  const std::vector<int64_t> map = read_index(index, n);
  if (out.numel() == 0) return out;
  const auto [dy, dx] = offset_to_shift(offset, d);
  const bool epilogue = relu || slopes.defined() || residual.defined() || scale != 1.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ghost_shift_cpu", [&] {
    auto run = [&](const auto& writer) {
      using E = typename std::decay_t<decltype(writer)>::Elem;
      const E* src = reinterpret_cast<const E*>(x.const_data_ptr<scalar_t>());
      if (cl) {
        forward_nhwc(writer, src, map, n, N, H, W, dy, dx);
      } else {
        forward_nchw(writer, src, group_users(map, n), N, c_out, H, W, dy, dx);
      }
    };
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    if (!epilogue) {
      using S = typename BitsOf<sizeof(scalar_t)>::type;
      run(BitWriter<S>{reinterpret_cast<S*>(out_data)});
    } else {
      const scalar_t* res = residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr;
      const ChannelSlopes<scalar_t> channel{slopes.defined() ? slopes.const_data_ptr<scalar_t>() : nullptr, H * W,
                                            c_out, cl};
      with_epilogue<scalar_t>(relu, negative_slope, channel, residual.defined(), out_data, res, scale, run);
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Gradient w.r.t. the intrinsic features: for source s,
//   dL/dI_s = sum_{c: index[c] = s} g_c  +  move^T( sum_{c: index[c] = n + s} g_c ),
// move^T(B)[y, x] = B[y - dy, x - dx] (zero outside). Sums run in ascending c and round to scalar_t at each step,
// exactly as the reference (index_add_ into [I, G], then a + shift(b)).

template <typename T>
inline T add(T a, T b) {
  return static_cast<T>(a + b);  // Half/BFloat16: computed in float, rounded once
}

template <typename T>
inline void add_row(T* dst, const T* src, int64_t len) {
  for (int64_t i = 0; i < len; ++i) dst[i] = add(dst[i], src[i]);
}

template <typename T>
void backward_x_nchw(const T* g, T* gx, const ChannelUsers& u, int64_t N, int64_t c_out, int64_t H, int64_t W,
                     int64_t dy, int64_t dx) {
  const int64_t n = u.num_in, plane = H * W;
  const int64_t xa = std::clamp<int64_t>(dx, 0, W), xb = std::clamp<int64_t>(W + dx, 0, W);  // columns fed by G
  const RowBlocks blocks(H, W);
  at::parallel_for(0, N * n * blocks.count, grain_for(blocks.rows * W * 2), [&](int64_t begin, int64_t end) {
    std::vector<T> moved(W);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t block = task % blocks.count, bs = task / blocks.count, s = bs % n, b = bs / n;
      const int64_t y0 = block * blocks.rows, y1 = std::min(H, y0 + blocks.rows);
      const T* g_b = g + b * c_out * plane;
      T* dst = gx + (b * n + s) * plane;
      const int64_t *i0 = u.begin(s), *i1 = u.end(s), *g0 = u.begin(n + s), *g1 = u.end(n + s);
      for (int64_t y = y0; y < y1; ++y) {
        T* out = dst + y * W;
        if (i0 == i1) {
          std::fill_n(out, W, T(0));
        } else {
          std::copy_n(g_b + *i0 * plane + y * W, W, out);
          for (const int64_t* c = i0 + 1; c != i1; ++c) add_row(out, g_b + *c * plane + y * W, W);
        }
        const int64_t yr = y - dy;
        if (g0 == g1 || yr < 0 || yr >= H || xa >= xb) continue;
        const T* ghost_sum = g_b + *g0 * plane + yr * W;
        if (g1 - g0 > 1) {
          std::copy_n(ghost_sum, W, moved.data());
          for (const int64_t* c = g0 + 1; c != g1; ++c) add_row(moved.data(), g_b + *c * plane + yr * W, W);
          ghost_sum = moved.data();
        }
        add_row(out + xa, ghost_sum + xa - dx, xb - xa);
      }
    }
  });
}

template <typename T>
void backward_x_nhwc(const T* g, T* gx, const ChannelUsers& u, int64_t N, int64_t c_out, int64_t H, int64_t W,
                     int64_t dy, int64_t dx) {
  const int64_t n = u.num_in;
  at::parallel_for(0, N * H, grain_for(W * c_out), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H, yr = y - dy;
      const bool row_valid = yr >= 0 && yr < H;
      for (int64_t col = 0; col < W; ++col) {
        T* out = gx + (row * W + col) * n;
        const T* p0 = g + (row * W + col) * c_out;
        const int64_t xr = col - dx;
        const T* p1 = row_valid && xr >= 0 && xr < W ? g + ((b * H + yr) * W + xr) * c_out : nullptr;
        for (int64_t s = 0; s < n; ++s) {
          const int64_t *i0 = u.begin(s), *i1 = u.end(s), *g0 = u.begin(n + s), *g1 = u.end(n + s);
          T acc = i0 == i1 ? T(0) : p0[*i0];
          for (const int64_t* c = i0 + 1; c < i1; ++c) acc = add(acc, p0[*c]);
          if (p1 != nullptr && g0 != g1) {
            T moved = p1[*g0];
            for (const int64_t* c = g0 + 1; c < g1; ++c) moved = add(moved, p1[*c]);
            acc = add(acc, moved);
          }
          out[s] = acc;
        }
      }
    }
  });
}

at::Tensor ghost_shift_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& index, int64_t offset, int64_t d,
                                    int64_t num_in) {
  check_backward_args(grad_out_in, index, offset, d, num_in);
  const bool cl = is_channels_last(grad_out_in);
  const at::Tensor grad_out = in_layout(grad_out_in, cl);
  const int64_t N = grad_out.size(0), H = grad_out.size(2), W = grad_out.size(3), c_out = index.size(0);
  const ChannelUsers users = group_users(read_index(index, num_in), num_in);
  at::Tensor grad_x = at::empty({N, num_in, H, W}, grad_out.options().memory_format(
                                                       cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  if (grad_x.numel() == 0) return grad_x;
  const auto [dy, dx] = offset_to_shift(offset, d);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "ghost_shift_backward_cpu", [&] {
    const scalar_t* g = grad_out.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_x.mutable_data_ptr<scalar_t>();
    if (cl) {
      backward_x_nhwc(g, gx, users, N, c_out, H, W, dy, dx);
    } else {
      backward_x_nchw(g, gx, users, N, c_out, H, W, dy, dx);
    }
  });
  return grad_x;
}

// ---------------------------------------------------------------------------------------------------------------
// Straight-through gradient to S(W') (Eq. 6): for every window position k with move (dy_k, dx_k),
//   r_k = sum_{b, ghost c} sum_{y, x} g[b, c, y, x] * I[b, src(c), y + dy_k, x + dx_k]   (zero outside),
// accumulated in float (double for float64) within a plane or row and in double across them; the partial sums
// are added in a fixed order, so the result does not depend on the thread count.

template <typename A>
inline A dot(const A* a, const A* b, int64_t len) {
  using Vec = at::vec::Vectorized<A>;
  Vec acc0(A(0)), acc1(A(0));
  int64_t i = 0;
  for (; i + 2 * Vec::size() <= len; i += 2 * Vec::size()) {
    acc0 = at::vec::fmadd(Vec::loadu(a + i), Vec::loadu(b + i), acc0);
    acc1 = at::vec::fmadd(Vec::loadu(a + i + Vec::size()), Vec::loadu(b + i + Vec::size()), acc1);
  }
  A lanes[Vec::size()];
  (acc0 + acc1).store(lanes);
  A sum = 0;
  for (int64_t l = 0; l < Vec::size(); ++l) sum += lanes[l];
  for (; i < len; ++i) sum += a[i] * b[i];
  return sum;
}

// Ghost output channels and their sources.
struct Ghosts {
  std::vector<int64_t> channel, source;
};

Ghosts ghost_channels(const std::vector<int64_t>& index, int64_t n) {
  Ghosts gh;
  for (int64_t c = 0; c < static_cast<int64_t>(index.size()); ++c) {
    if (index[c] >= n) {
      gh.channel.push_back(c);
      gh.source.push_back(index[c] - n);
    }
  }
  return gh;
}

// NCHW: one task per (batch, ghost channel) computes its K dot products; partial[task * K + k].
template <typename T, typename A>
void offset_grad_nchw(const T* g, const T* x, const Ghosts& gh, double* partial, int64_t N, int64_t n, int64_t c_out,
                      int64_t H, int64_t W, int64_t d) {
  const int64_t plane = H * W, num_ghost = static_cast<int64_t>(gh.channel.size()), K = window_size(d);
  at::parallel_for(0, N * num_ghost, grain_for(plane * K), [&](int64_t begin, int64_t end) {
    std::vector<A> g_buf, x_buf;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / num_ghost, j = task % num_ghost;
      const T* g_plane = g + (b * c_out + gh.channel[j]) * plane;
      const T* x_plane = x + (b * n + gh.source[j]) * plane;
      const A *ga, *xa;
      if constexpr (std::is_same_v<T, A>) {
        ga = g_plane;
        xa = x_plane;
      } else {  // fp16/bf16: widen the two planes once, then all K reductions run in float
        g_buf.assign(g_plane, g_plane + plane);
        x_buf.assign(x_plane, x_plane + plane);
        ga = g_buf.data();
        xa = x_buf.data();
      }
      for (int64_t k = 0; k < K; ++k) {
        const auto [dy, dx] = offset_to_shift(k, d);
        const int64_t y0 = std::clamp<int64_t>(-dy, 0, H), y1 = std::clamp<int64_t>(H - dy, 0, H);
        const int64_t x0 = std::clamp<int64_t>(-dx, 0, W), x1 = std::clamp<int64_t>(W - dx, 0, W);
        double acc = 0;
        if (x0 < x1) {
          for (int64_t y = y0; y < y1; ++y) acc += dot(ga + y * W + x0, xa + (y + dy) * W + x0 + dx, x1 - x0);
        }
        partial[task * K + k] = acc;
      }
    }
  });
}

// Channels_last: one task per row (b, y); partial[row * K + k].
template <typename T, typename A>
void offset_grad_nhwc(const T* g, const T* x, const Ghosts& gh, double* partial, int64_t N, int64_t n, int64_t c_out,
                      int64_t H, int64_t W, int64_t d) {
  const int64_t num_ghost = static_cast<int64_t>(gh.channel.size()), K = window_size(d);
  at::parallel_for(0, N * H, grain_for(W * num_ghost * K), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H;
      for (int64_t k = 0; k < K; ++k) {
        const auto [dy, dx] = offset_to_shift(k, d);
        const int64_t ys = y + dy;
        const int64_t x0 = std::clamp<int64_t>(-dx, 0, W), x1 = std::clamp<int64_t>(W - dx, 0, W);
        A acc = 0;
        if (ys >= 0 && ys < H) {
          for (int64_t col = x0; col < x1; ++col) {
            const T* pg = g + (row * W + col) * c_out;
            const T* px = x + ((b * H + ys) * W + col + dx) * n;
            for (int64_t j = 0; j < num_ghost; ++j) {
              acc += static_cast<A>(pg[gh.channel[j]]) * static_cast<A>(px[gh.source[j]]);
            }
          }
        }
        partial[row * K + k] = static_cast<double>(acc);
      }
    }
  });
}

at::Tensor ghost_shift_offset_grad_cpu(const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& index,
                                       int64_t d) {
  check_offset_grad_args(grad_out_in, x_in, index, d);
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl), grad_out = in_layout(grad_out_in, cl);
  const int64_t N = x.size(0), n = x.size(1), H = x.size(2), W = x.size(3), c_out = index.size(0);
  const int64_t K = window_size(d);
  const Ghosts gh = ghost_channels(read_index(index, n), n);
  const int64_t tasks = cl ? N * H : N * static_cast<int64_t>(gh.channel.size());
  std::vector<double> partial(tasks * K, 0.0);
  if (x.numel() != 0 && grad_out.numel() != 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ghost_shift_offset_grad_cpu", [&] {
      using A = at::opmath_type<scalar_t>;
      const scalar_t* g = grad_out.const_data_ptr<scalar_t>();
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      if (cl) {
        offset_grad_nhwc<scalar_t, A>(g, xp, gh, partial.data(), N, n, c_out, H, W, d);
      } else {
        offset_grad_nchw<scalar_t, A>(g, xp, gh, partial.data(), N, n, c_out, H, W, d);
      }
    });
  }
  std::vector<double> total(K, 0.0);
  for (int64_t t = 0; t < tasks; ++t) {
    for (int64_t k = 0; k < K; ++k) total[k] += partial[t * K + k];
  }
  return at::tensor(total, at::TensorOptions().dtype(at::kDouble)).to(offset_grad_dtype(x.scalar_type()));
}

}  // namespace
}  // namespace ghostsr

TORCH_LIBRARY(ghostsr, m) {
  // The fake (meta) functions and the autograd formula live in this Python module.
  m.set_python_module("ghostsr_plugin.ops.backend");
  m.def(
      "ghost_shift(Tensor x, Tensor index, int offset, int d, Tensor? probs=None, Tensor? residual=None, "
      "float scale=1.0, bool relu=False, float negative_slope=0.0, Tensor? slopes=None) -> Tensor");
  m.def("ghost_shift_backward(Tensor grad_out, Tensor index, int offset, int d, int num_in) -> Tensor");
  m.def("ghost_shift_offset_grad(Tensor grad_out, Tensor x, Tensor index, int d) -> Tensor");
}

TORCH_LIBRARY_IMPL(ghostsr, CPU, m) {
  m.impl("ghost_shift", &ghostsr::ghost_shift_cpu);
  m.impl("ghost_shift_backward", &ghostsr::ghost_shift_backward_cpu);
  m.impl("ghost_shift_offset_grad", &ghostsr::ghost_shift_offset_grad_cpu);
}

#ifdef GHOSTSR_WITH_CUDA
TORCH_LIBRARY_IMPL(ghostsr, CUDA, m) {
  m.impl("ghost_shift", &ghostsr::ghost_shift_cuda);
  m.impl("ghost_shift_backward", &ghostsr::ghost_shift_backward_cuda);
  m.impl("ghost_shift_offset_grad", &ghostsr::ghost_shift_offset_grad_cuda);
}
#endif

// The Python module ghostsr_plugin._C: importing it registers the ops above; WITH_CUDA tells whether CUDA kernels
// were compiled in.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "GhostSR compiled ghost-shift ops (torch.ops.ghostsr)",
                               -1, nullptr};
  PyObject* m = PyModule_Create(&module);
  if (m == nullptr) return nullptr;
#ifdef GHOSTSR_WITH_CUDA
  PyModule_AddIntConstant(m, "WITH_CUDA", 1);
#else
  PyModule_AddIntConstant(m, "WITH_CUDA", 0);
#endif
  return m;
}
