// CUDA kernels of the channel-norm engine on raw pointers (no ATen: nvcc stays
// fast). All four passes are memory bound, so the design is about bytes in
// flight: 16-byte accesses where the contiguous run allows, several independent
// loads per thread before any arithmetic, and enough blocks to fill the GPU even
// when the reduction has few (n, c) pairs or tiny planes.
//
// Reductions produce per-(n, c, k) partials over K slices of the spatial extent;
// the combine over n / groups / slices happens in ATen (ops/<norm>.cpp).
//   channels-first: one warp per (plane, slice), so planes of 7x7 do not idle a
//     256-thread block, and many slices per plane when planes are large.
//   channels-last: a block tile of block_x threads along C (one vector each) by
//     256 / block_x rows of one sample; the block combines its rows in shared
//     memory into partials per (n, row slice, c).
// Elementwise passes: grid-stride over vectors; a vector never straddles a plane
// (channels-first) or a row (channels-last), so (n, c) costs one or two integer
// divisions per vector, by multiply-shift when indices fit in 31 bits.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "../math/activation.h"
#include "channel_norm_launch.h"

namespace fusednorm::cuda {

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = kThreads / kWarpSize;
// Loads in flight per thread in the reduction passes (the moments pass also
// folds them into one Welford step, so one division per kMomentsUnroll accesses).
constexpr int kMomentsUnroll = 4;
// The backward sums inline the activation derivative once per unrolled element,
// so vector accesses (already 16 bytes per stream) are not unrolled further:
// more copies only add registers (and spills around the math slow-path calls).
template <int VEC>
constexpr int kSumsUnroll = VEC == 1 ? 4 : 1;

// ---------------------------------------------------------------------------
// Scalar conversions (the build disables the implicit __half/__nv_bfloat16 ones).

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ scalar_t from_acc(acc_t v) {
  if constexpr (std::is_same_v<scalar_t, __half>) {
    return __float2half_rn(v);
  } else if constexpr (std::is_same_v<scalar_t, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return static_cast<scalar_t>(v);
  }
}

// VEC consecutive elements, aligned so that one load/store instruction moves them.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <int VEC, typename T>
__device__ __forceinline__ Pack<T, VEC> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, VEC>*>(p);
}

template <int VEC, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, VEC>& v) {
  *reinterpret_cast<Pack<T, VEC>*>(p) = v;
}

// ---------------------------------------------------------------------------
// Index arithmetic.

// n / d by multiply-high and shift (Granlund-Montgomery, as ATen's IntDivider):
// 32-bit multiply when n < 2^31, 64-bit otherwise; no hardware or library divide
// (a 64-bit `/` is a subroutine call, and its register saves become spills).
struct FastDiv {
  uint64_t magic64 = 1;
  uint32_t magic32 = 1;
  uint32_t shift = 0;

  FastDiv() = default;
  __host__ explicit FastDiv(int64_t divisor) {
    const uint64_t d = divisor < 1 ? 1 : static_cast<uint64_t>(divisor);
    while ((uint64_t{1} << shift) < d) {
      ++shift;
    }
    // magic = floor(2^W * (2^shift - d) / d) + 1 for word size W; both fit a word
    // since 2^shift < 2d.
    const unsigned __int128 num = static_cast<unsigned __int128>((uint64_t{1} << shift) - d) << 64;
    magic64 = static_cast<uint64_t>(num / d) + 1;
    if (shift < 32) {
      magic32 = static_cast<uint32_t>((((uint64_t{1} << shift) - d) << 32) / d + 1);
    }
  }
  // Exact for n < 2^31 with small (the divisor is then < 2^31 too), else n < 2^63.
  __device__ __forceinline__ int64_t div(int64_t n, bool small) const {
    if (small) {
      const uint32_t un = static_cast<uint32_t>(n);
      return static_cast<int64_t>((__umulhi(un, magic32) + un) >> shift);
    }
    const uint64_t un = static_cast<uint64_t>(n);
    return static_cast<int64_t>((__umul64hi(un, magic64) + un) >> shift);
  }
};

struct ReduceParams {
  int64_t N = 0;
  int64_t C = 0;
  int64_t S = 0;
  int64_t K = 1;
  int64_t slice = 0;
  int64_t units = 0;    // channels-first: warps = N * C * K
  int64_t c_tiles = 1;  // channels-last: blocks along C
  int block_x = 1;      // channels-last: power of two
  int log2_block_x = 0;
  FastDiv div_K, div_C, div_c_tiles;
};

struct ElementwiseParams {
  int64_t C = 0;
  int64_t numel = 0;
  bool channels_last = false;
  bool small_index = false;  // numel < 2^31: FastDiv's 32-bit path is exact
  FastDiv div_inner;         // channels-first: S, channels-last: C
  FastDiv div_outer;         // channels-first: C, channels-last: S
};

// (n, c) of the element at memory offset e.
__device__ __forceinline__ void channel_of(const ElementwiseParams& p, int64_t e, int64_t& n, int64_t& c) {
  if (!p.channels_last) {
    const int64_t plane = p.div_inner.div(e, p.small_index);
    n = p.div_outer.div(plane, p.small_index);
    c = plane - n * p.C;
  } else {
    const int64_t row = p.div_inner.div(e, p.small_index);
    c = e - row * p.C;
    n = p.div_outer.div(row, p.small_index);
  }
}

// ---------------------------------------------------------------------------
// Activation with its per-element slope resolved the way the CPU kernels do.

template <typename acc_t>
struct DeviceActivation {
  math::ActivationParams params;
  const acc_t* prelu;  // null unless PReLU
  int64_t prelu_stride;
  bool needs_slope;

  __host__ explicit DeviceActivation(const ActivationRaw& a)
      : params(a.params),
        prelu(a.params.kind == math::ActivationKind::kPReLU ? static_cast<const acc_t*>(a.prelu_weight) : nullptr),
        prelu_stride(a.prelu_per_channel ? 1 : 0),
        needs_slope(math::uses_slope(a.params.kind)) {}

  __device__ __forceinline__ acc_t prelu_slope(int64_t c) const {
    return prelu != nullptr ? prelu[c * prelu_stride] : acc_t(0);
  }
  // `offset` is the element's memory offset in the dense tensor: RReLU's noise is
  // a hash of it, so forward, backward and the CPU all draw the same slope.
  __device__ __forceinline__ acc_t slope(acc_t prelu_c, int64_t offset) const {
    return needs_slope ? math::negative_slope<acc_t>(params, prelu_c, offset) : acc_t(0);
  }
  __device__ __forceinline__ acc_t forward(acc_t z, acc_t prelu_c, int64_t offset) const {
    return math::activation_forward<acc_t>(params, z, slope(prelu_c, offset));
  }
  __device__ __forceinline__ acc_t derivative(acc_t z, acc_t prelu_c, int64_t offset) const {
    return math::activation_derivative<acc_t>(params, z, slope(prelu_c, offset));
  }
};

// ---------------------------------------------------------------------------
// Welford / Chan combination.

// a / b for the Welford weights, b a positive count below 2^24. Hardware
// reciprocal plus Newton steps to full precision: IEEE division would add a
// slow-path subroutine call per step, and ptxas saves live registers around it.
__device__ __forceinline__ float count_ratio(float a, float b) {
  float r = __fdividef(1.0f, b);
  r = fmaf(r, fmaf(-b, r, 1.0f), r);
  return a * r;
}
__device__ __forceinline__ double count_ratio(double a, double b) {
  double r = static_cast<double>(__fdividef(1.0f, static_cast<float>(b)));
  r = fma(r, fma(-b, r, 1.0), r);
  r = fma(r, fma(-b, r, 1.0), r);
  return a * r;
}

template <typename acc_t>
struct Welford {
  acc_t n = acc_t(0);
  acc_t mean = acc_t(0);
  acc_t m2 = acc_t(0);
};

// Merges (nb, mb, m2b) into w. Empty sides are allowed (lanes without data).
template <typename acc_t>
__device__ __forceinline__ void welford_merge(Welford<acc_t>& w, acc_t nb, acc_t mb, acc_t m2b) {
  const acc_t n = w.n + nb;
  const acc_t r = n > acc_t(0) ? count_ratio(nb, n) : acc_t(0);
  const acc_t delta = mb - w.mean;
  w.mean += delta * r;
  w.m2 += m2b + delta * delta * w.n * r;
  w.n = n;
}

// Mean and m2 of G values by two passes over registers: exact-ish and needs no
// division beyond the constant 1/G.
template <int G, typename acc_t>
__device__ __forceinline__ void group_moments(const acc_t (&v)[G], acc_t& mean, acc_t& m2) {
  acc_t s = acc_t(0);
#pragma unroll
  for (int i = 0; i < G; ++i) {
    s += v[i];
  }
  mean = s * (acc_t(1) / acc_t(G));
  m2 = acc_t(0);
#pragma unroll
  for (int i = 0; i < G; ++i) {
    const acc_t d = v[i] - mean;
    m2 += d * d;
  }
}

template <typename acc_t>
__device__ __forceinline__ void welford_shfl_merge(Welford<acc_t>& w, int lane_mask) {
  const acc_t nb = __shfl_xor_sync(0xffffffffu, w.n, lane_mask);
  const acc_t mb = __shfl_xor_sync(0xffffffffu, w.mean, lane_mask);
  const acc_t m2b = __shfl_xor_sync(0xffffffffu, w.m2, lane_mask);
  welford_merge(w, nb, mb, m2b);
}

// ---------------------------------------------------------------------------
// partial_moments, channels-first: warp `unit` reduces slice k of plane (n, c).

template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    moments_cf_kernel(const ReduceParams p, const scalar_t* __restrict__ x, acc_t* __restrict__ out_mean,
                      acc_t* __restrict__ out_m2, acc_t* __restrict__ out_count) {
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (unit >= p.units) {
    return;  // whole warps only: nothing below synchronises beyond the warp
  }
  const int lane = threadIdx.x % kWarpSize;
  const int64_t plane = p.div_K.div(unit, false);
  const int64_t k = unit - plane * p.K;
  const int64_t begin = k * p.slice;
  const int len = static_cast<int>(min(p.slice, p.S - begin));
  const scalar_t* __restrict__ src = x + plane * p.S + begin;

  constexpr int kGroup = kMomentsUnroll * VEC;
  constexpr int kTile = kWarpSize * kGroup;
  Welford<acc_t> w;
  int i = 0;
  for (; i + kTile <= len; i += kTile) {
    Pack<scalar_t, VEC> packs[kMomentsUnroll];
#pragma unroll
    for (int u = 0; u < kMomentsUnroll; ++u) {
      packs[u] = load_pack<VEC>(src + i + (u * kWarpSize + lane) * VEC);
    }
    acc_t v[kGroup];
#pragma unroll
    for (int u = 0; u < kMomentsUnroll; ++u) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        v[u * VEC + j] = to_acc(packs[u].v[j]);
      }
    }
    acc_t gm, gm2;
    group_moments(v, gm, gm2);
    welford_merge(w, acc_t(kGroup), gm, gm2);
  }
  // Less than a tile left; whole packs, since len is a multiple of VEC.
  for (int e = i + lane * VEC; e < len; e += kWarpSize * VEC) {
    const Pack<scalar_t, VEC> pk = load_pack<VEC>(src + e);
    acc_t v[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      v[j] = to_acc(pk.v[j]);
    }
    acc_t gm, gm2;
    group_moments(v, gm, gm2);
    welford_merge(w, acc_t(VEC), gm, gm2);
  }
#pragma unroll
  for (int m = kWarpSize / 2; m > 0; m /= 2) {
    welford_shfl_merge(w, m);
  }
  if (lane == 0) {
    out_mean[unit] = w.mean;
    out_m2[unit] = w.m2;
    if (plane == 0) {
      out_count[k] = acc_t(len);
    }
  }
}

// ---------------------------------------------------------------------------
// Shared helpers of the channels-last reductions: block (c_tile, k, n) and the
// thread's (tx, ty) inside the block_x x (256 / block_x) tile.

struct ClTile {
  int tx, ty, rows_step;
  int64_t n, k, c_tile, c0, row_begin;
  int rows;
};

__device__ __forceinline__ ClTile cl_tile(const ReduceParams& p, int vec) {
  ClTile t;
  t.tx = threadIdx.x & (p.block_x - 1);
  t.ty = threadIdx.x >> p.log2_block_x;
  t.rows_step = kThreads >> p.log2_block_x;
  const int64_t b = blockIdx.x;
  const int64_t nk = p.div_c_tiles.div(b, false);
  t.c_tile = b - nk * p.c_tiles;
  t.n = p.div_K.div(nk, false);
  t.k = nk - t.n * p.K;
  t.c0 = (t.c_tile * p.block_x + t.tx) * vec;
  t.row_begin = t.k * p.slice;
  t.rows = static_cast<int>(min(p.slice, p.S - t.row_begin));
  return t;
}

// Threads that share tx (same channels) sit block_x lanes apart in a warp when
// block_x < 32; after the shuffle stage lanes < block_x of each warp hold the warp's
// result ("slot" = warp). For block_x >= 32 every thread is its own slot (= ty).
__device__ __forceinline__ int cl_num_slots(const ReduceParams& p) { return kThreads / max(p.block_x, kWarpSize); }
__device__ __forceinline__ bool cl_slot_holder(const ReduceParams& p) {
  return p.block_x >= kWarpSize || (threadIdx.x % kWarpSize) < p.block_x;
}
__device__ __forceinline__ int cl_slot_entry(const ReduceParams& p, const ClTile& t) {
  const int slot = p.block_x >= kWarpSize ? t.ty : static_cast<int>(threadIdx.x / kWarpSize);
  return slot * p.block_x + t.tx;
}

// ---------------------------------------------------------------------------
// partial_moments, channels-last.

template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    moments_cl_kernel(const ReduceParams p, const scalar_t* __restrict__ x, acc_t* __restrict__ out_mean,
                      acc_t* __restrict__ out_m2, acc_t* __restrict__ out_count) {
  const ClTile t = cl_tile(p, VEC);
  const bool active = t.c0 < p.C;
  // Every channel of the thread sees the same rows, so one count and one
  // division per step serve VEC channels.
  acc_t cnt = acc_t(0);
  acc_t mean[VEC], m2[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    mean[j] = acc_t(0);
    m2[j] = acc_t(0);
  }
  if (active) {
    const scalar_t* __restrict__ src = x + (t.n * p.S + t.row_begin) * p.C + t.c0;
    int r = t.ty;
    for (; r + (kMomentsUnroll - 1) * t.rows_step < t.rows; r += kMomentsUnroll * t.rows_step) {
      Pack<scalar_t, VEC> packs[kMomentsUnroll];
#pragma unroll
      for (int u = 0; u < kMomentsUnroll; ++u) {
        packs[u] = load_pack<VEC>(src + static_cast<int64_t>(r + u * t.rows_step) * p.C);
      }
      const acc_t nb = acc_t(kMomentsUnroll);
      const acc_t ratio = count_ratio(nb, cnt + nb);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        acc_t v[kMomentsUnroll];
#pragma unroll
        for (int u = 0; u < kMomentsUnroll; ++u) {
          v[u] = to_acc(packs[u].v[j]);
        }
        acc_t gm, gm2;
        group_moments(v, gm, gm2);
        const acc_t delta = gm - mean[j];
        mean[j] += delta * ratio;
        m2[j] += gm2 + delta * delta * cnt * ratio;
      }
      cnt += nb;
    }
    for (; r < t.rows; r += t.rows_step) {
      const Pack<scalar_t, VEC> pk = load_pack<VEC>(src + static_cast<int64_t>(r) * p.C);
      cnt += acc_t(1);
      const acc_t inv = count_ratio(acc_t(1), cnt);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const acc_t v = to_acc(pk.v[j]);
        const acc_t d = v - mean[j];
        mean[j] += d * inv;
        m2[j] += d * (v - mean[j]);
      }
    }
  }

  // Rows of the same channels within a warp.
  for (int m = kWarpSize / 2; m >= p.block_x; m /= 2) {
    const acc_t nb = __shfl_xor_sync(0xffffffffu, cnt, m);
    const acc_t n = cnt + nb;
    const acc_t ratio = n > acc_t(0) ? count_ratio(nb, n) : acc_t(0);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const acc_t mb = __shfl_xor_sync(0xffffffffu, mean[j], m);
      const acc_t m2b = __shfl_xor_sync(0xffffffffu, m2[j], m);
      const acc_t delta = mb - mean[j];
      mean[j] += delta * ratio;
      m2[j] += m2b + delta * delta * cnt * ratio;
    }
    cnt = n;
  }

  // Across warps (or rows, for block_x >= 32) through shared memory; [j][entry]
  // so that neighbouring threads hit neighbouring banks.
  __shared__ acc_t sh_n[kThreads];
  __shared__ acc_t sh_mean[VEC][kThreads];
  __shared__ acc_t sh_m2[VEC][kThreads];
  if (cl_slot_holder(p)) {
    const int e = cl_slot_entry(p, t);
    sh_n[e] = cnt;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      sh_mean[j][e] = mean[j];
      sh_m2[j][e] = m2[j];
    }
  }
  __syncthreads();
  if (static_cast<int>(threadIdx.x) >= p.block_x) {
    return;
  }
  // Here tx == threadIdx.x and the registers already hold slot 0.
  const int slots = cl_num_slots(p);
  for (int s = 1; s < slots; ++s) {
    const int e = s * p.block_x + t.tx;
    const acc_t nb = sh_n[e];
    const acc_t n = cnt + nb;
    const acc_t ratio = n > acc_t(0) ? count_ratio(nb, n) : acc_t(0);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const acc_t delta = sh_mean[j][e] - mean[j];
      mean[j] += delta * ratio;
      m2[j] += sh_m2[j][e] + delta * delta * cnt * ratio;
    }
    cnt = n;
  }
  if (active) {
    const int64_t base = (t.n * p.K + t.k) * p.C + t.c0;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      out_mean[base + j] = mean[j];
      out_m2[base + j] = m2[j];
    }
  }
  if (t.n == 0 && t.c_tile == 0 && threadIdx.x == 0) {
    out_count[t.k] = acc_t(t.rows);
  }
}

// ---------------------------------------------------------------------------
// normalize_activate: out = act(x * scale[q] + shift[q] (+ residual)).

template <typename scalar_t, typename acc_t>
struct NormalizePtrs {
  const scalar_t* __restrict__ x;
  const scalar_t* __restrict__ residual;  // nullable
  const acc_t* __restrict__ scale;
  const acc_t* __restrict__ shift;
  scalar_t* __restrict__ out;
  int64_t coef_n_stride;
};

template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    normalize_kernel(const ElementwiseParams p, const NormalizePtrs<scalar_t, acc_t> a,
                     const DeviceActivation<acc_t> act) {
  const int64_t nvec = p.numel / VEC;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; v < nvec; v += stride) {
    const int64_t e = v * VEC;
    const Pack<scalar_t, VEC> xv = load_pack<VEC>(a.x + e);
    Pack<scalar_t, VEC> rv;
    if (a.residual != nullptr) {
      rv = load_pack<VEC>(a.residual + e);
    }
    int64_t n, c;
    channel_of(p, e, n, c);
    const int64_t q = n * a.coef_n_stride + c;
    // Channels-first: the whole vector is one channel; channels-last: VEC
    // consecutive channels.
    const int cstep = p.channels_last ? 1 : 0;
    Pack<scalar_t, VEC> ov;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const int64_t qj = q + j * cstep;
      acc_t z = to_acc(xv.v[j]) * a.scale[qj] + a.shift[qj];
      if (a.residual != nullptr) {
        z += to_acc(rv.v[j]);
      }
      ov.v[j] = from_acc<scalar_t>(act.forward(z, act.prelu_slope(c + j * cstep), e + j));
    }
    store_pack<VEC>(a.out + e, ov);
  }
}

// ---------------------------------------------------------------------------
// backward_partial_sums.

template <typename scalar_t, typename acc_t>
struct SumsPtrs {
  const scalar_t* __restrict__ grad_out;
  const scalar_t* __restrict__ x;
  const scalar_t* __restrict__ residual;  // nullable
  const acc_t* __restrict__ scale;
  const acc_t* __restrict__ shift;
  const acc_t* __restrict__ mean;
  acc_t* __restrict__ sum_g;
  acc_t* __restrict__ sum_g_xmu;
  acc_t* __restrict__ sum_prelu;  // nullable
  int64_t coef_n_stride;
};

// Per-channel constants of one thread's share of the backward sums.
template <typename acc_t>
struct ChannelCoef {
  acc_t scale, shift, mean, prelu;
};

template <typename acc_t>
struct Sums3 {
  acc_t g = acc_t(0);
  acc_t g_xmu = acc_t(0);
  acc_t prelu = acc_t(0);
};

template <typename acc_t>
__device__ __forceinline__ void accumulate_backward(Sums3<acc_t>& s, const DeviceActivation<acc_t>& act,
                                                    const ChannelCoef<acc_t>& k, acc_t dy, acc_t xv, acc_t res,
                                                    int64_t offset, bool want_prelu) {
  const acc_t z = xv * k.scale + k.shift + res;
  const acc_t g = dy * act.derivative(z, k.prelu, offset);
  s.g += g;
  s.g_xmu += g * (xv - k.mean);
  if (want_prelu) {
    s.prelu += z > acc_t(0) ? acc_t(0) : dy * z;
  }
}

template <typename acc_t>
__device__ __forceinline__ void sums_shfl_add(Sums3<acc_t>& s, int lane_mask) {
  s.g += __shfl_xor_sync(0xffffffffu, s.g, lane_mask);
  s.g_xmu += __shfl_xor_sync(0xffffffffu, s.g_xmu, lane_mask);
  s.prelu += __shfl_xor_sync(0xffffffffu, s.prelu, lane_mask);
}

template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    sums_cf_kernel(const ReduceParams p, const SumsPtrs<scalar_t, acc_t> a, const DeviceActivation<acc_t> act) {
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (unit >= p.units) {
    return;
  }
  const int lane = threadIdx.x % kWarpSize;
  const int64_t plane = p.div_K.div(unit, false);
  const int64_t k = unit - plane * p.K;
  const int64_t n = p.div_C.div(plane, false);
  const int64_t c = plane - n * p.C;
  const int64_t q = n * a.coef_n_stride + c;
  const ChannelCoef<acc_t> coef{a.scale[q], a.shift[q], a.mean[q], act.prelu_slope(c)};
  const bool want_prelu = a.sum_prelu != nullptr;
  const int64_t begin = plane * p.S + k * p.slice;
  const int len = static_cast<int>(min(p.slice, p.S - k * p.slice));
  const scalar_t* __restrict__ dy = a.grad_out + begin;
  const scalar_t* __restrict__ xs = a.x + begin;
  const scalar_t* __restrict__ rs = a.residual != nullptr ? a.residual + begin : nullptr;

  // One guarded loop instead of full tiles plus a tail: a single inlined copy set
  // of the activation keeps the register allocation (and the code) small.
  constexpr int kU = kSumsUnroll<VEC>;
  Sums3<acc_t> s;
  for (int i = lane * VEC; i < len; i += kWarpSize * VEC * kU) {
    Pack<scalar_t, VEC> dyp[kU], xp[kU], rp[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int e = i + u * kWarpSize * VEC;
      if (e < len) {
        dyp[u] = load_pack<VEC>(dy + e);
        xp[u] = load_pack<VEC>(xs + e);
        if (rs != nullptr) {
          rp[u] = load_pack<VEC>(rs + e);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int e = i + u * kWarpSize * VEC;
      if (e < len) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          accumulate_backward(s, act, coef, to_acc(dyp[u].v[j]), to_acc(xp[u].v[j]),
                              rs != nullptr ? to_acc(rp[u].v[j]) : acc_t(0), begin + e + j, want_prelu);
        }
      }
    }
  }
#pragma unroll
  for (int m = kWarpSize / 2; m > 0; m /= 2) {
    sums_shfl_add(s, m);
  }
  if (lane == 0) {
    a.sum_g[unit] = s.g;
    a.sum_g_xmu[unit] = s.g_xmu;
    if (want_prelu) {
      a.sum_prelu[unit] = s.prelu;
    }
  }
}

template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    sums_cl_kernel(const ReduceParams p, const SumsPtrs<scalar_t, acc_t> a, const DeviceActivation<acc_t> act) {
  const ClTile t = cl_tile(p, VEC);
  const bool active = t.c0 < p.C;
  const bool want_prelu = a.sum_prelu != nullptr;
  Sums3<acc_t> s[VEC];
  if (active) {
    ChannelCoef<acc_t> coef[VEC];
    const int64_t q = t.n * a.coef_n_stride + t.c0;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      coef[j] = {a.scale[q + j], a.shift[q + j], a.mean[q + j], act.prelu_slope(t.c0 + j)};
    }
    const int64_t begin = (t.n * p.S + t.row_begin) * p.C + t.c0;
    const scalar_t* __restrict__ dy = a.grad_out + begin;
    const scalar_t* __restrict__ xs = a.x + begin;
    const scalar_t* __restrict__ rs = a.residual != nullptr ? a.residual + begin : nullptr;
    constexpr int kU = kSumsUnroll<VEC>;
    for (int r = t.ty; r < t.rows; r += kU * t.rows_step) {
      Pack<scalar_t, VEC> dyp[kU], xp[kU], rp[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int64_t off = static_cast<int64_t>(r + u * t.rows_step) * p.C;
        if (r + u * t.rows_step < t.rows) {
          dyp[u] = load_pack<VEC>(dy + off);
          xp[u] = load_pack<VEC>(xs + off);
          if (rs != nullptr) {
            rp[u] = load_pack<VEC>(rs + off);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int64_t off = begin + static_cast<int64_t>(r + u * t.rows_step) * p.C;
        if (r + u * t.rows_step < t.rows) {
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            accumulate_backward(s[j], act, coef[j], to_acc(dyp[u].v[j]), to_acc(xp[u].v[j]),
                                rs != nullptr ? to_acc(rp[u].v[j]) : acc_t(0), off + j, want_prelu);
          }
        }
      }
    }
  }

  for (int m = kWarpSize / 2; m >= p.block_x; m /= 2) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      sums_shfl_add(s[j], m);
    }
  }

  __shared__ acc_t sh[3][VEC][kThreads];
  if (cl_slot_holder(p)) {
    const int e = cl_slot_entry(p, t);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      sh[0][j][e] = s[j].g;
      sh[1][j][e] = s[j].g_xmu;
      sh[2][j][e] = s[j].prelu;
    }
  }
  __syncthreads();
  if (static_cast<int>(threadIdx.x) >= p.block_x || !active) {
    return;
  }
  const int slots = cl_num_slots(p);
  for (int sl = 1; sl < slots; ++sl) {
    const int e = sl * p.block_x + t.tx;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      s[j].g += sh[0][j][e];
      s[j].g_xmu += sh[1][j][e];
      s[j].prelu += sh[2][j][e];
    }
  }
  const int64_t base = (t.n * p.K + t.k) * p.C + t.c0;
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    a.sum_g[base + j] = s[j].g;
    a.sum_g_xmu[base + j] = s[j].g_xmu;
    if (want_prelu) {
      a.sum_prelu[base + j] = s[j].prelu;
    }
  }
}

// ---------------------------------------------------------------------------
// backward_apply: grad_input = k1 g + k2 (x - mean) + k3, grad_residual = g.

template <typename scalar_t, typename acc_t>
struct ApplyPtrs {
  const scalar_t* __restrict__ grad_out;
  const scalar_t* __restrict__ x;
  const scalar_t* __restrict__ residual;  // nullable
  const acc_t* __restrict__ scale;
  const acc_t* __restrict__ shift;
  const acc_t* __restrict__ mean;
  const acc_t* __restrict__ k1;
  const acc_t* __restrict__ k2;
  const acc_t* __restrict__ k3;
  scalar_t* __restrict__ grad_input;     // nullable
  scalar_t* __restrict__ grad_residual;  // nullable
  int64_t coef_n_stride;
};

template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    apply_kernel(const ElementwiseParams p, const ApplyPtrs<scalar_t, acc_t> a, const DeviceActivation<acc_t> act) {
  const int64_t nvec = p.numel / VEC;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; v < nvec; v += stride) {
    const int64_t e = v * VEC;
    const Pack<scalar_t, VEC> dyv = load_pack<VEC>(a.grad_out + e);
    const Pack<scalar_t, VEC> xv = load_pack<VEC>(a.x + e);
    Pack<scalar_t, VEC> rv;
    if (a.residual != nullptr) {
      rv = load_pack<VEC>(a.residual + e);
    }
    int64_t n, c;
    channel_of(p, e, n, c);
    const int64_t q = n * a.coef_n_stride + c;
    const int cstep = p.channels_last ? 1 : 0;
    Pack<scalar_t, VEC> gi, gr;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const int64_t qj = q + j * cstep;
      const acc_t xj = to_acc(xv.v[j]);
      acc_t z = xj * a.scale[qj] + a.shift[qj];
      if (a.residual != nullptr) {
        z += to_acc(rv.v[j]);
      }
      const acc_t g = to_acc(dyv.v[j]) * act.derivative(z, act.prelu_slope(c + j * cstep), e + j);
      gr.v[j] = from_acc<scalar_t>(g);
      if (a.grad_input != nullptr) {
        gi.v[j] = from_acc<scalar_t>(a.k1[qj] * g + a.k2[qj] * (xj - a.mean[qj]) + a.k3[qj]);
      }
    }
    if (a.grad_input != nullptr) {
      store_pack<VEC>(a.grad_input + e, gi);
    }
    if (a.grad_residual != nullptr) {
      store_pack<VEC>(a.grad_residual + e, gr);
    }
  }
}

}  // namespace fusednorm::cuda
