// The ghost operation of GhostSR (Nie et al., §3.1, Eq. 1-6): CUDA kernels (semantics in ghost_shift.h).
//
// Forward and input gradient are memory-bound moves. NCHW: a thread block handles one segment (batch b, output
// channel c, a few rows) of the output; blocks are numbered channel-fastest, so the blocks that read the same
// source rows (the intrinsic copy and its ghosts) run at the same time and the second read hits L2: the input is
// read from memory about once and the output written once. Each thread moves V elements (16 bytes) with aligned
// vector loads and stores; a horizontal move dx reads the two aligned vectors that hold the V source elements and
// funnels them (the funnel position is uniform, a compile-time template). Channels_last: a thread moves V
// consecutive channels of one pixel, vectorised where the channel map is a run of V aligned channels. The optional
// fused epilogue (residual + scale * act(Y), act a ReLU or leaky ReLU) is applied in registers before the store.
// A channel map value out of range stops the kernel with a device-side assertion; nothing is read out of bounds.
#include "ghost_shift.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

namespace ghostsr {
namespace {

constexpr int kThreads = 256;
constexpr int kSegmentElems = 2048;  // output elements a block moves per segment (NCHW)
constexpr int kMaxWindowChunk = 49;  // window positions reduced per offset-gradient launch ((2d+1)^2 for d=3)

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> zero_pack() {
  Pack<T, V> p;
#pragma unroll
  for (int j = 0; j < V; ++j) p.v[j] = T(0);
  return p;
}

// The V elements starting R elements into the concatenation [a, b] (R a compile-time constant: register moves).
template <typename T, int V, int R>
__device__ __forceinline__ Pack<T, V> funnel(const Pack<T, V>& a, const Pack<T, V>& b) {
  Pack<T, V> out;
#pragma unroll
  for (int j = 0; j < V; ++j) out.v[j] = j + R < V ? a.v[j + R] : b.v[j + R - V];
  return out;
}

template <typename T, int V, int R = 0>
__device__ __forceinline__ Pack<T, V> funnel_at(const Pack<T, V>& a, const Pack<T, V>& b, int r) {
  if constexpr (R + 1 < V) {
    if (r == R) return funnel<T, V, R>(a, b);
    return funnel_at<T, V, R + 1>(a, b, r);
  } else {
    return funnel<T, V, R>(a, b);
  }
}

__device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// V elements of a plane moved by (dy, dx): out[j] = plane[y + dy, x0 + j + dx], zero outside. x0 % V == 0 and
// W % V == 0, so every aligned vector of a row lies wholly inside or wholly outside [0, W).
template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load_moved(const T* plane, int64_t H, int64_t W, int64_t y, int64_t x0,
                                                 int64_t dy, int64_t dx) {
  const int64_t ys = y + dy;
  if (ys < 0 || ys >= H) return zero_pack<T, V>();
  const T* row = plane + ys * W;
  const int64_t q = floor_div(x0 + dx, V), wv = W / V;
  const int r = static_cast<int>(x0 + dx - q * V);
  const Pack<T, V> a = q >= 0 && q < wv ? reinterpret_cast<const Pack<T, V>*>(row)[q] : zero_pack<T, V>();
  if (r == 0) return a;
  const Pack<T, V> b = q + 1 >= 0 && q + 1 < wv ? reinterpret_cast<const Pack<T, V>*>(row)[q + 1] : zero_pack<T, V>();
  return funnel_at<T, V>(a, b, r);
}

template <typename T>
__device__ __forceinline__ T add(T a, T b) {
  using A = at::opmath_type<T>;
  return static_cast<T>(static_cast<A>(a) + static_cast<A>(b));  // rounded to T at every step, as the reference
}

template <typename T, int V>
__device__ __forceinline__ void add_pack(Pack<T, V>& acc, const Pack<T, V>& p) {
#pragma unroll
  for (int j = 0; j < V; ++j) acc.v[j] = add(acc.v[j], p.v[j]);
}

// A checked channel-map entry: traps on a value outside [0, 2n).
__device__ __forceinline__ bool valid_entry(int64_t e, int64_t n) {
  const bool ok = e >= 0 && e < 2 * n;
  CUDA_KERNEL_ASSERT_MSG(ok, "ghost_shift: channel map value out of range [0, 2 * num_intrinsic)");
  return ok;
}

// Epilogue arguments of a launch: residual + scale * act(Y), act torch.relu (`relu`), leaky ReLU of `slope`
// (`leaky`), PReLU of the per-channel `slopes` (`leaky` with `slopes` set) or none; `active` is false for the
// plain op.
template <typename T>
struct EpilogueArgs {
  const T* residual;
  const T* slopes;  // c_out values, or null
  at::opmath_type<T> scale, slope;
  bool relu, leaky, active;
};

// The forward's optional fused epilogue on V output elements of channels c, c + c_step, ... (c_step 0 in NCHW, 1 in
// channels_last), rounded to T after each step as the separate PyTorch ops round (leaky ReLU and PReLU as PyTorch's
// kernels: v * (v > 0 ? 1 : slope) in opmath, rounded, the same value as v > 0 ? v : v * slope). `residual` points
// at the same elements in the residual (or is null).
template <typename T, int V>
__device__ __forceinline__ void apply_epilogue(Pack<T, V>& p, const T* residual, const EpilogueArgs<T>& epi,
                                               int64_t c, int64_t c_step) {
  using A = at::opmath_type<T>;
  Pack<T, V> r;
  if (residual != nullptr) r = *reinterpret_cast<const Pack<T, V>*>(residual);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    A v = static_cast<A>(p.v[j]);
    if (epi.relu) v = v < A(0) ? A(0) : v;
    if (epi.leaky) {
      const A slope = epi.slopes != nullptr ? static_cast<A>(epi.slopes[c + j * c_step]) : epi.slope;
      v = static_cast<A>(static_cast<T>(v * (v > A(0) ? A(1) : slope)));
    }
    const T scaled = static_cast<T>(v * epi.scale);
    p.v[j] = residual != nullptr ? static_cast<T>(static_cast<A>(r.v[j]) + static_cast<A>(scaled)) : scaled;
  }
}

// Segments of an NCHW plane: `rows` rows each, so a segment holds about kSegmentElems elements.
struct Segments {
  int64_t rows, per_plane;
  Segments(int64_t H, int64_t W) {
    rows = std::max<int64_t>(1, std::min<int64_t>(H, kSegmentElems / std::max<int64_t>(W, 1)));
    per_plane = (H + rows - 1) / rows;
  }
};

// Grid size of a launch; refuses (rather than silently truncating) a grid beyond CUDA's 2^31 - 1 blocks.
int grid_for(int64_t blocks) {
  TORCH_CHECK(blocks < (int64_t{1} << 31), "ghost_shift: input too large for one CUDA launch (", blocks, " blocks)");
  return static_cast<int>(std::max<int64_t>(blocks, 1));
}

// ------------------------------------------------------------------------------------------------------------
// Forward, NCHW. Block s = c + c_out * (segment + segments * b).
template <typename T, int V>
__global__ void forward_nchw_kernel(const T* __restrict__ x, T* __restrict__ out, const int64_t* __restrict__ index,
                                    int64_t N, int64_t n, int64_t c_out, int64_t H, int64_t W, int64_t seg_rows,
                                    int64_t segs, int64_t dy, int64_t dx, EpilogueArgs<T> epi) {
  const int64_t block = blockIdx.x;
  const int64_t c = block % c_out, seg = (block / c_out) % segs, b = block / (c_out * segs);
  if (b >= N) return;
  const int64_t e = __ldg(index + c);
  if (!valid_entry(e, n)) return;
  const bool ghost = e >= n;
  const T* src = x + (b * n + (ghost ? e - n : e)) * H * W;
  const int64_t plane_offset = (b * c_out + c) * H * W;
  const int64_t mdy = ghost ? dy : 0, mdx = ghost ? dx : 0, wv = W / V, y0 = seg * seg_rows;
  const int64_t count = std::min(seg_rows, H - y0) * wv;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    const int64_t y = y0 + i / wv, x0 = (i % wv) * V, pos = plane_offset + y * W + x0;
    Pack<T, V> val = load_moved<T, V>(src, H, W, y, x0, mdy, mdx);
    if (epi.active) apply_epilogue(val, epi.residual ? epi.residual + pos : nullptr, epi, c, 0);
    *reinterpret_cast<Pack<T, V>*>(out + pos) = val;
  }
}

// Forward, channels_last. Thread i moves channels [V*(i % (c_out/V)), +V) of pixel i / (c_out/V).
template <typename T, int V>
__global__ void forward_nhwc_kernel(const T* __restrict__ x, T* __restrict__ out, const int64_t* __restrict__ index,
                                    int64_t N, int64_t n, int64_t c_out, int64_t H, int64_t W, int64_t dy,
                                    int64_t dx, EpilogueArgs<T> epi) {
  const int64_t groups = c_out / V, total = N * H * W * groups;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t pixel = i / groups, c0 = (i % groups) * V;
    const int64_t col = pixel % W, y = (pixel / W) % H, b = pixel / (W * H);
    const int64_t ys = y + dy, xs = col + dx;
    const T* p0 = x + pixel * n;
    const T* p1 = ys >= 0 && ys < H && xs >= 0 && xs < W ? x + ((b * H + ys) * W + xs) * n : nullptr;
    int64_t e[V];
    bool run = true;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      e[j] = __ldg(index + c0 + j);
      if (!valid_entry(e[j], n)) return;
      run = run && e[j] == e[0] + j;
    }
    const bool ghost0 = e[0] >= n;
    const int64_t s0 = ghost0 ? e[0] - n : e[0];
    Pack<T, V> val;
    if (run && (e[V - 1] >= n) == ghost0 && s0 % V == 0 && n % V == 0) {
      const T* p = ghost0 ? p1 : p0;
      val = p == nullptr ? zero_pack<T, V>() : *reinterpret_cast<const Pack<T, V>*>(p + s0);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const bool ghost = e[j] >= n;
        const T* p = ghost ? p1 : p0;
        val.v[j] = p == nullptr ? T(0) : p[ghost ? e[j] - n : e[j]];
      }
    }
    const int64_t pos = pixel * c_out + c0;
    if (epi.active) apply_epilogue(val, epi.residual ? epi.residual + pos : nullptr, epi, c0, 1);
    *reinterpret_cast<Pack<T, V>*>(out + pos) = val;
  }
}

// Largest vector width (elements of 16 bytes at most) that `len` and the pointers' alignment allow.
template <typename T>
int vector_width(int64_t len, std::initializer_list<const void*> ptrs) {
  int v = static_cast<int>(16 / sizeof(T));
  for (; v > 1; v /= 2) {
    bool ok = len % v == 0;
    for (const void* p : ptrs) ok = ok && reinterpret_cast<uintptr_t>(p) % (v * sizeof(T)) == 0;
    if (ok) break;
  }
  return v;
}

#define GHOSTSR_DISPATCH_WIDTH(v, ...)                 \
  switch (v) {                                         \
    case 8: {                                          \
      if constexpr (16 / sizeof(scalar_t) >= 8) {      \
        constexpr int V = 8;                           \
        __VA_ARGS__();                                 \
      }                                                \
      break;                                           \
    }                                                  \
    case 4: {                                          \
      if constexpr (16 / sizeof(scalar_t) >= 4) {      \
        constexpr int V = 4;                           \
        __VA_ARGS__();                                 \
      }                                                \
      break;                                           \
    }                                                  \
    case 2: {                                          \
      constexpr int V = 2;                             \
      __VA_ARGS__();                                   \
      break;                                           \
    }                                                  \
    default: {                                         \
      constexpr int V = 1;                             \
      __VA_ARGS__();                                   \
    }                                                  \
  }

// ------------------------------------------------------------------------------------------------------------
// Channel users on the device: a stable counting sort of the map in one block (no host sync).
// start[e] .. start[e + 1] index users, the output channels with index[c] == e, in ascending c.
__global__ void group_users_kernel(const int64_t* __restrict__ index, int64_t c_out, int64_t n,
                                   int64_t* __restrict__ start, int64_t* __restrict__ users) {
  const int64_t entries = 2 * n;
  for (int64_t c = threadIdx.x; c < c_out; c += blockDim.x) valid_entry(index[c], n);
  for (int64_t e = threadIdx.x; e < entries; e += blockDim.x) {
    int64_t count = 0;
    for (int64_t c = 0; c < c_out; ++c) count += index[c] == e;
    start[e + 1] = count;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    start[0] = 0;
    for (int64_t e = 0; e < entries; ++e) start[e + 1] += start[e];
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < entries; e += blockDim.x) {
    int64_t pos = start[e];
    for (int64_t c = 0; c < c_out; ++c) {
      if (index[c] == e) users[pos++] = c;
    }
  }
}

// Input gradient, NCHW: dL/dI_s = sum_{intrinsic users} g_c + move^T(sum_{ghost users} g_c). Block per segment
// of grad_x plane (b, s), numbered source-fastest.
template <typename T, int V>
__global__ void backward_x_nchw_kernel(const T* __restrict__ g, T* __restrict__ gx, const int64_t* __restrict__ start,
                                       const int64_t* __restrict__ users, int64_t N, int64_t n, int64_t c_out,
                                       int64_t H, int64_t W, int64_t seg_rows, int64_t segs, int64_t dy,
                                       int64_t dx) {
  const int64_t block = blockIdx.x;
  const int64_t s = block % n, seg = (block / n) % segs, b = block / (n * segs);
  if (b >= N) return;
  const int64_t i0 = start[s], i1 = start[s + 1], g0 = start[n + s], g1 = start[n + s + 1];
  const int64_t plane = H * W, wv = W / V, y0 = seg * seg_rows;
  const T* g_b = g + b * c_out * plane;
  T* dst = gx + (b * n + s) * plane;
  const int64_t count = std::min(seg_rows, H - y0) * wv;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    const int64_t y = y0 + i / wv, x0 = (i % wv) * V;
    Pack<T, V> acc = i0 == i1 ? zero_pack<T, V>() : load_moved<T, V>(g_b + users[i0] * plane, H, W, y, x0, 0, 0);
    for (int64_t u = i0 + 1; u < i1; ++u) add_pack(acc, load_moved<T, V>(g_b + users[u] * plane, H, W, y, x0, 0, 0));
    if (g0 < g1) {
      Pack<T, V> moved = load_moved<T, V>(g_b + users[g0] * plane, H, W, y, x0, -dy, -dx);
      for (int64_t u = g0 + 1; u < g1; ++u) {
        add_pack(moved, load_moved<T, V>(g_b + users[u] * plane, H, W, y, x0, -dy, -dx));
      }
      add_pack(acc, moved);
    }
    reinterpret_cast<Pack<T, V>*>(dst + y * W)[x0 / V] = acc;
  }
}

// Input gradient, channels_last: one thread per element (pixel, s).
template <typename T>
__global__ void backward_x_nhwc_kernel(const T* __restrict__ g, T* __restrict__ gx, const int64_t* __restrict__ start,
                                       const int64_t* __restrict__ users, int64_t N, int64_t n, int64_t c_out,
                                       int64_t H, int64_t W, int64_t dy, int64_t dx) {
  const int64_t total = N * H * W * n;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t s = i % n, pixel = i / n;
    const int64_t col = pixel % W, y = (pixel / W) % H, b = pixel / (W * H);
    const int64_t yr = y - dy, xr = col - dx;
    const T* p0 = g + pixel * c_out;
    const int64_t i0 = start[s], i1 = start[s + 1], g0 = start[n + s], g1 = start[n + s + 1];
    T acc = i0 == i1 ? T(0) : p0[users[i0]];
    for (int64_t u = i0 + 1; u < i1; ++u) acc = add(acc, p0[users[u]]);
    if (g0 < g1 && yr >= 0 && yr < H && xr >= 0 && xr < W) {
      const T* p1 = g + ((b * H + yr) * W + xr) * c_out;
      T moved = p1[users[g0]];
      for (int64_t u = g0 + 1; u < g1; ++u) moved = add(moved, p1[users[u]]);
      acc = add(acc, moved);
    }
    gx[i] = acc;
  }
}

// ------------------------------------------------------------------------------------------------------------
// Straight-through gradient to S(W') (Eq. 6), window positions [k0, k0 + KC): every thread accumulates its
// elements' products in float (double for float64), the block reduces, partial[block * KC + k] holds the sums.
template <typename A, int KC>
__device__ void reduce_block(A (&acc)[KC], A* __restrict__ partial, int kc) {
  __shared__ A warp_sums[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
#pragma unroll
  for (int k = 0; k < KC; ++k) {  // unrolled: acc stays in registers
    if (k >= kc) break;
    A v = acc[k];
    for (int o = 16; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
      A sum = 0;
      for (int w = 0; w < warps; ++w) sum += warp_sums[w];
      partial[int64_t{blockIdx.x} * KC + k] = sum;
    }
    __syncthreads();
  }
}

// NCHW: one block per segment of output channel c (block numbering as the forward); intrinsic channels add 0.
template <typename T, typename A, int KC>
__global__ void offset_grad_nchw_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                        const int64_t* __restrict__ index, A* __restrict__ partial, int64_t N,
                                        int64_t n, int64_t c_out, int64_t H, int64_t W, int64_t seg_rows, int64_t segs,
                                        int64_t d, int64_t k0, int kc) {
  const int64_t block = blockIdx.x;
  const int64_t c = block % c_out, seg = (block / c_out) % segs, b = block / (c_out * segs);
  A acc[KC];
#pragma unroll
  for (int k = 0; k < KC; ++k) acc[k] = 0;
  const int64_t e = __ldg(index + c);
  if (valid_entry(e, n) && e >= n && b < N) {
    const T* gp = g + (b * c_out + c) * H * W;
    const T* xp = x + (b * n + e - n) * H * W;
    const int64_t y0 = seg * seg_rows, count = std::min(seg_rows, H - y0) * W, width = 2 * d + 1;
    for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
      const int64_t y = y0 + i / W, col = i % W;
      const A gv = static_cast<A>(gp[y * W + col]);
#pragma unroll
      for (int k = 0; k < KC; ++k) {
        if (k < kc) {
          const int64_t ys = y + (k0 + k) / width - d, xs = col + (k0 + k) % width - d;
          if (ys >= 0 && ys < H && xs >= 0 && xs < W) acc[k] += gv * static_cast<A>(xp[ys * W + xs]);
        }
      }
    }
  }
  reduce_block<A, KC>(acc, partial, kc);
}

// Channels_last: thread per element (pixel, c) of the output gradient.
template <typename T, typename A, int KC>
__global__ void offset_grad_nhwc_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                        const int64_t* __restrict__ index, A* __restrict__ partial, int64_t N,
                                        int64_t n, int64_t c_out, int64_t H, int64_t W, int64_t d, int64_t k0,
                                        int kc) {
  A acc[KC];
#pragma unroll
  for (int k = 0; k < KC; ++k) acc[k] = 0;
  const int64_t total = N * H * W * c_out, width = 2 * d + 1;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % c_out, pixel = i / c_out;
    const int64_t e = __ldg(index + c);
    if (!valid_entry(e, n) || e < n) continue;
    const int64_t col = pixel % W, y = (pixel / W) % H, b = pixel / (W * H);
    const A gv = static_cast<A>(g[i]);
#pragma unroll
    for (int k = 0; k < KC; ++k) {
      if (k < kc) {
        const int64_t ys = y + (k0 + k) / width - d, xs = col + (k0 + k) % width - d;
        if (ys >= 0 && ys < H && xs >= 0 && xs < W) acc[k] += gv * static_cast<A>(x[((b * H + ys) * W + xs) * n + e - n]);
      }
    }
  }
  reduce_block<A, KC>(acc, partial, kc);
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------
// Host entry points (registered for the CUDA dispatch key in ghost_shift.cpp).

at::Tensor ghost_shift_cuda(const at::Tensor& x_in, const at::Tensor& index_in, int64_t offset, int64_t d,
                            const std::optional<at::Tensor>& probs, const std::optional<at::Tensor>& residual_in,
                            double scale, bool relu, double negative_slope,
                           const std::optional<at::Tensor>& slopes_in) {
  check_forward_args(x_in, index_in, offset, d, probs);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor index = index_in.contiguous();
  const int64_t c_out = index.size(0);
  const auto [cl, x, residual, out] = forward_tensors(x_in, c_out, residual_in);
  const at::Tensor slopes = channel_slopes(slopes_in, x, c_out);
  const int64_t N = x.size(0), n = x.size(1), H = x.size(2), W = x.size(3);
  if (out.numel() == 0) return out;
  const auto [dy, dx] = offset_to_shift(offset, d);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ghost_shift_cuda", [&] {
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    const int64_t* idx = index.const_data_ptr<int64_t>();
    const scalar_t* res = residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr;
    using A = at::opmath_type<scalar_t>;
    const scalar_t* sl = slopes.defined() ? slopes.const_data_ptr<scalar_t>() : nullptr;
    const EpilogueArgs<scalar_t> epi{res,
                                     sl,
                                     static_cast<A>(scale),
                                     static_cast<A>(negative_slope),
                                     sl == nullptr && relu && negative_slope == 0.0,
                                     sl != nullptr || (relu && negative_slope != 0.0),
                                     sl != nullptr || relu || res != nullptr || scale != 1.0};
    if (cl) {
      const int v = vector_width<scalar_t>(c_out, {src, dst, res});
      GHOSTSR_DISPATCH_WIDTH(v, [&] {
        const int64_t threads = N * H * W * (c_out / V);
        const int64_t blocks = std::min<int64_t>((threads + kThreads - 1) / kThreads, int64_t{1} << 20);
        forward_nhwc_kernel<scalar_t, V>
            <<<grid_for(blocks), kThreads, 0, stream>>>(src, dst, idx, N, n, c_out, H, W, dy, dx, epi);
      });
    } else {
      const Segments seg(H, W);
      const int v = vector_width<scalar_t>(W, {src, dst, res});
      GHOSTSR_DISPATCH_WIDTH(v, [&] {
        forward_nchw_kernel<scalar_t, V><<<grid_for(N * seg.per_plane * c_out), kThreads, 0, stream>>>(
            src, dst, idx, N, n, c_out, H, W, seg.rows, seg.per_plane, dy, dx, epi);
      });
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor ghost_shift_backward_cuda(const at::Tensor& grad_out_in, const at::Tensor& index_in, int64_t offset,
                                     int64_t d, int64_t num_in) {
  check_backward_args(grad_out_in, index_in, offset, d, num_in);
  const c10::cuda::CUDAGuard guard(grad_out_in.device());
  const bool cl = is_channels_last(grad_out_in);
  const at::Tensor grad_out = in_layout(grad_out_in, cl), index = index_in.contiguous();
  const int64_t N = grad_out.size(0), H = grad_out.size(2), W = grad_out.size(3), c_out = index.size(0);
  const int64_t n = num_in;
  at::Tensor grad_x = at::empty({N, n, H, W}, grad_out.options().memory_format(
                                                  cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  if (grad_x.numel() == 0) return grad_x;
  const auto [dy, dx] = offset_to_shift(offset, d);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor start = at::empty({2 * n + 1}, index.options());
  at::Tensor users = at::empty({std::max<int64_t>(c_out, 1)}, index.options());
  group_users_kernel<<<1, kThreads, 0, stream>>>(index.const_data_ptr<int64_t>(), c_out, n,
                                                 start.mutable_data_ptr<int64_t>(), users.mutable_data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t* st = start.const_data_ptr<int64_t>();
  const int64_t* us = users.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "ghost_shift_backward_cuda", [&] {
    const scalar_t* g = grad_out.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_x.mutable_data_ptr<scalar_t>();
    if (cl) {
      const int64_t blocks = std::min<int64_t>((N * H * W * n + kThreads - 1) / kThreads, int64_t{1} << 20);
      backward_x_nhwc_kernel<scalar_t><<<grid_for(blocks), kThreads, 0, stream>>>(g, gx, st, us, N, n, c_out, H, W,
                                                                                   dy, dx);
    } else {
      const Segments seg(H, W);
      const int v = vector_width<scalar_t>(W, {g, gx});
      GHOSTSR_DISPATCH_WIDTH(v, [&] {
        backward_x_nchw_kernel<scalar_t, V><<<grid_for(N * seg.per_plane * n), kThreads, 0, stream>>>(
            g, gx, st, us, N, n, c_out, H, W, seg.rows, seg.per_plane, dy, dx);
      });
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_x;
}

at::Tensor ghost_shift_offset_grad_cuda(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                        const at::Tensor& index_in, int64_t d) {
  check_offset_grad_args(grad_out_in, x_in, index_in, d);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = is_channels_last(x_in);
  const at::Tensor x = in_layout(x_in, cl), grad_out = in_layout(grad_out_in, cl), index = index_in.contiguous();
  const int64_t N = x.size(0), n = x.size(1), H = x.size(2), W = x.size(3), c_out = index.size(0);
  const int64_t K = window_size(d);
  const at::ScalarType acc_type = offset_grad_dtype(x.scalar_type());
  at::Tensor result = at::zeros({K}, x.options().dtype(acc_type));
  if (grad_out.numel() == 0 || x.numel() == 0) return result;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const Segments seg(H, W);
  const int64_t blocks = cl ? std::min<int64_t>((N * H * W * c_out + kThreads - 1) / kThreads, int64_t{1} << 16)
                            : N * seg.per_plane * c_out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ghost_shift_offset_grad_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    const scalar_t* g = grad_out.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const int64_t* idx = index.const_data_ptr<int64_t>();
    auto run_chunk = [&](auto kc_tag, int64_t k0) {
      constexpr int KC = decltype(kc_tag)::value;
      const int kc = static_cast<int>(std::min<int64_t>(KC, K - k0));
      at::Tensor partial = at::empty({blocks, KC}, x.options().dtype(acc_type));
      A* part = partial.mutable_data_ptr<A>();
      if (cl) {
        offset_grad_nhwc_kernel<scalar_t, A, KC>
            <<<grid_for(blocks), kThreads, 0, stream>>>(g, xp, idx, part, N, n, c_out, H, W, d, k0, kc);
      } else {
        offset_grad_nchw_kernel<scalar_t, A, KC><<<grid_for(blocks), kThreads, 0, stream>>>(
            g, xp, idx, part, N, n, c_out, H, W, seg.rows, seg.per_plane, d, k0, kc);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      // Fixed-order sum over blocks (deterministic), in double.
      result.narrow(0, k0, kc).copy_(partial.narrow(1, 0, kc).sum(0, /*keepdim=*/false, at::kDouble));
    };
    if (K <= 9) {
      run_chunk(std::integral_constant<int, 9>{}, 0);
    } else if (K <= 25) {
      run_chunk(std::integral_constant<int, 25>{}, 0);
    } else {
      for (int64_t k0 = 0; k0 < K; k0 += kMaxWindowChunk) run_chunk(std::integral_constant<int, kMaxWindowChunk>{}, k0);
    }
  });
  return result;
}

}  // namespace ghostsr
