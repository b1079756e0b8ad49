// CUDA kernels of the row-norm engine on raw pointers (no ATen), built from the
// channel-norm kernels' pieces (conversions, packs, DeviceActivation, Welford).
//
// Row passes (forward; backward grad_input/grad_residual): a row is reduced by
// a warp (short rows; several rows per block) or by a whole block (long rows),
// threads striding over 16-byte vectors when N and the pointers allow. Forward:
// Welford (layer norm) or a sum of squares (RMS norm) in registers, merged by
// shuffles and, across warps, shared memory; then a second sweep over the row
// (from L1/L2) writes act(xhat * w + b + residual). Backward: two per-row sums
// of g * w and g * w * xhat, g = grad_out * act'(z) recomputed from x and the
// saved statistics, then a second sweep writes grad_input and grad_residual.
// Column pass (backward weight/bias/PReLU sums): blocks of 32 column vectors by
// kColumnRows row lanes over a chunk of rows, combined in shared memory into
// one partial per (chunk, column); ATen sums the partials.
// All offsets are 64-bit; statistics and sums accumulate in acc_t (float for
// half types).
#pragma once

#include "../math/activation.h"
#include "../math/row_norm.h"
#include "channel_norm_kernel.cuh"
#include "row_norm_launch.h"

namespace fusednorm::cuda {

constexpr int kMaxRowThreads = 512;
constexpr int kMaxRowWarps = kMaxRowThreads / kWarpSize;
constexpr int kColumnRows = 8;  // row lanes of a column-pass block (32 x 8 threads)

struct RowParams {
  int64_t M = 0;
  int64_t N = 0;
  bool rms = false;
  math::PReluChannelMap prelu;
};

template <typename scalar_t, typename acc_t>
struct RowPtrs {
  const scalar_t* __restrict__ x;
  const scalar_t* __restrict__ residual;  // nullable
  const acc_t* __restrict__ weight;       // nullable
  const acc_t* __restrict__ bias;         // nullable
};

__device__ __forceinline__ float inverse_sqrt(float v) { return rsqrtf(v); }
__device__ __forceinline__ double inverse_sqrt(double v) { return rsqrt(v); }

// The slope PReLU uses at (row, col); nothing to look up for other activations.
template <typename acc_t>
__device__ __forceinline__ acc_t prelu_slope_at(const DeviceActivation<acc_t>& act, const math::PReluChannelMap& map,
                                                int64_t row, int64_t col) {
  return act.prelu != nullptr ? act.prelu_slope(map(row, col)) : acc_t(0);
}

// One element's recomputation, shared by every pass: xhat and the activation's
// input z = xhat * w + b + residual.
template <typename acc_t>
struct RowElement {
  acc_t xhat;
  acc_t w;
  acc_t z;
};

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ RowElement<acc_t> row_element(const RowPtrs<scalar_t, acc_t>& in, acc_t x, acc_t residual,
                                                         int64_t col, acc_t mean, acc_t rstd) {
  RowElement<acc_t> e;
  e.xhat = (x - mean) * rstd;
  e.w = in.weight != nullptr ? in.weight[col] : acc_t(1);
  e.z = e.xhat * e.w + (in.bias != nullptr ? in.bias[col] : acc_t(0)) + residual;
  return e;
}

// VEC elements of x (and of the residual, zeros when absent) at `offset`, in acc_t.
template <int VEC, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_row_vector(const RowPtrs<scalar_t, acc_t>& in, int64_t offset, acc_t (&x)[VEC],
                                                acc_t (&residual)[VEC]) {
  const Pack<scalar_t, VEC> xp = load_pack<VEC>(in.x + offset);
  Pack<scalar_t, VEC> rp;
  if (in.residual != nullptr) {
    rp = load_pack<VEC>(in.residual + offset);
  }
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    x[j] = to_acc(xp.v[j]);
    residual[j] = in.residual != nullptr ? to_acc(rp.v[j]) : acc_t(0);
  }
}

template <int VEC, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_acc(const scalar_t* p, acc_t (&out)[VEC]) {
  const Pack<scalar_t, VEC> pk = load_pack<VEC>(p);
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    out[j] = to_acc(pk.v[j]);
  }
}

// ---------------------------------------------------------------------------
// Row reductions: F values per thread, combined by `merge` over the threads of
// the row (blockDim.x: a warp, or the whole block when blockDim.y == 1). Every
// thread gets the result. `shared` holds F * kMaxRowWarps values.

template <int F, typename acc_t, typename Merge>
__device__ __forceinline__ void warp_allreduce(acc_t (&v)[F], const Merge& merge) {
#pragma unroll
  for (int m = kWarpSize / 2; m > 0; m /= 2) {
    acc_t other[F];
#pragma unroll
    for (int f = 0; f < F; ++f) {
      other[f] = __shfl_xor_sync(0xffffffffu, v[f], m);
    }
    merge(v, other);
  }
}

template <int F, typename acc_t, typename Merge>
__device__ __forceinline__ void row_allreduce(acc_t (&v)[F], const Merge& merge, acc_t* shared) {
  warp_allreduce(v, merge);
  if (blockDim.x == kWarpSize) {
    return;
  }
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  __syncthreads();  // the previous row's readers are done with `shared`
  if (lane == 0) {
#pragma unroll
    for (int f = 0; f < F; ++f) {
      shared[f * kMaxRowWarps + warp] = v[f];
    }
  }
  __syncthreads();
  // Every warp combines all warps' values itself: no broadcast round needed.
  const bool holds = lane < static_cast<int>(blockDim.x / kWarpSize);
#pragma unroll
  for (int f = 0; f < F; ++f) {
    v[f] = holds ? shared[f * kMaxRowWarps + lane] : acc_t(0);
  }
  warp_allreduce(v, merge);
}

// (n, mean, m2) by Chan's combination; RMS norm keeps mean at 0 and m2 as the
// plain sum of squares, which the same merge then adds.
template <typename acc_t>
struct MomentsMerge {
  __device__ __forceinline__ void operator()(acc_t (&a)[3], const acc_t (&b)[3]) const {
    Welford<acc_t> w;
    w.n = a[0];
    w.mean = a[1];
    w.m2 = a[2];
    welford_merge(w, b[0], b[1], b[2]);
    a[0] = w.n;
    a[1] = w.mean;
    a[2] = w.m2;
  }
};

template <typename acc_t>
struct SumMerge {
  __device__ __forceinline__ void operator()(acc_t (&a)[3], const acc_t (&b)[3]) const {
#pragma unroll
    for (int f = 0; f < 3; ++f) {
      a[f] += b[f];
    }
  }
};

// The rows of this block: blockDim.y rows at a time, grid-striding. With a block
// per row (blockDim.y == 1) the loop is uniform across the block, as
// row_allreduce's barriers need.
__device__ __forceinline__ int64_t first_row() { return static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; }
__device__ __forceinline__ int64_t row_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.y; }

// ---------------------------------------------------------------------------
// Forward.

template <typename scalar_t, typename acc_t>
struct ForwardOut {
  scalar_t* __restrict__ out;
  acc_t* __restrict__ mean;  // nullable
  acc_t* __restrict__ rstd;
  acc_t eps;
};

template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kMaxRowThreads)
    row_forward_kernel(const RowParams p, const RowPtrs<scalar_t, acc_t> in, const ForwardOut<scalar_t, acc_t> o,
                       const DeviceActivation<acc_t> act) {
  __shared__ acc_t shared[3 * kMaxRowWarps];
  const int64_t nvec = p.N / VEC;
  for (int64_t row = first_row(); row < p.M; row += row_stride()) {
    const int64_t base = row * p.N;
    acc_t moments[3] = {acc_t(0), acc_t(0), acc_t(0)};
    for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
      acc_t x[VEC];
      load_acc<VEC>(in.x + base + v * VEC, x);
      if (p.rms) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          moments[2] += x[j] * x[j];
        }
        moments[0] += acc_t(VEC);
      } else {
        acc_t group[3] = {acc_t(VEC), acc_t(0), acc_t(0)};
        group_moments(x, group[1], group[2]);
        MomentsMerge<acc_t>{}(moments, group);
      }
    }
    row_allreduce(moments, MomentsMerge<acc_t>{}, shared);
    const acc_t mean = p.rms ? acc_t(0) : moments[1];
    const acc_t rstd = inverse_sqrt(moments[2] / acc_t(p.N) + o.eps);
    if (threadIdx.x == 0) {
      if (o.mean != nullptr) {
        o.mean[row] = mean;
      }
      o.rstd[row] = rstd;
    }
    for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
      const int64_t offset = base + v * VEC;
      acc_t x[VEC], residual[VEC];
      load_row_vector<VEC>(in, offset, x, residual);
      Pack<scalar_t, VEC> y;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const int64_t col = v * VEC + j;
        const RowElement<acc_t> e = row_element(in, x[j], residual[j], col, mean, rstd);
        y.v[j] = from_acc<scalar_t>(act.forward(e.z, prelu_slope_at(act, p.prelu, row, col), offset + j));
      }
      store_pack<VEC>(o.out + offset, y);
    }
  }
}

// ---------------------------------------------------------------------------
// Backward.

// What both backward passes read besides RowPtrs.
template <typename scalar_t, typename acc_t>
struct GradPtrs {
  const scalar_t* __restrict__ grad_out;
  const acc_t* __restrict__ mean;  // null for RMS norm
  const acc_t* __restrict__ rstd;
};

// VEC elements of one row, recomputed from x and the saved statistics: the
// element (xhat, w, z), grad_out, and g = grad_out * act'(z).
template <typename acc_t, int VEC>
struct BackwardVector {
  RowElement<acc_t> e[VEC];
  acc_t dy[VEC];
  acc_t g[VEC];
};

template <int VEC, typename scalar_t, typename acc_t>
__device__ __forceinline__ BackwardVector<acc_t, VEC> backward_vector(const RowParams& p,
                                                                      const RowPtrs<scalar_t, acc_t>& in,
                                                                      const GradPtrs<scalar_t, acc_t>& grads,
                                                                      const DeviceActivation<acc_t>& act, int64_t row,
                                                                      int64_t col0, acc_t mean, acc_t rstd) {
  const int64_t offset = row * p.N + col0;
  acc_t x[VEC], residual[VEC];
  load_row_vector<VEC>(in, offset, x, residual);
  BackwardVector<acc_t, VEC> b;
  load_acc<VEC>(grads.grad_out + offset, b.dy);
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    b.e[j] = row_element(in, x[j], residual[j], col0 + j, mean, rstd);
    b.g[j] = b.dy[j] * act.derivative(b.e[j].z, prelu_slope_at(act, p.prelu, row, col0 + j), offset + j);
  }
  return b;
}

// PReLU's weight-gradient term of one element: grad_out * z where z <= 0.
template <typename acc_t>
__device__ __forceinline__ acc_t prelu_term(acc_t dy, acc_t z) {
  return z > acc_t(0) ? acc_t(0) : dy * z;
}

// Row pass: grad_input, grad_residual and per-row PReLU sums.
template <typename scalar_t, typename acc_t>
struct RowGradOut {
  scalar_t* __restrict__ grad_input;     // nullable
  scalar_t* __restrict__ grad_residual;  // nullable
  acc_t* __restrict__ prelu_rows;        // nullable
};

template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kMaxRowThreads)
    row_backward_kernel(const RowParams p, const RowPtrs<scalar_t, acc_t> in, const GradPtrs<scalar_t, acc_t> grads,
                        const RowGradOut<scalar_t, acc_t> o, const DeviceActivation<acc_t> act) {
  __shared__ acc_t shared[3 * kMaxRowWarps];
  const int64_t nvec = p.N / VEC;
  const bool want_sums = o.grad_input != nullptr || o.prelu_rows != nullptr;
  for (int64_t row = first_row(); row < p.M; row += row_stride()) {
    const acc_t mean = grads.mean != nullptr ? grads.mean[row] : acc_t(0);
    const acc_t rstd = grads.rstd[row];
    // sums[0] = sum g * w, sums[1] = sum g * w * xhat, sums[2] = PReLU's sum.
    acc_t sums[3] = {acc_t(0), acc_t(0), acc_t(0)};
    if (want_sums) {
      for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
        const BackwardVector<acc_t, VEC> b = backward_vector<VEC>(p, in, grads, act, row, v * VEC, mean, rstd);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const acc_t gw = b.g[j] * b.e[j].w;
          sums[0] += gw;
          sums[1] += gw * b.e[j].xhat;
          sums[2] += prelu_term(b.dy[j], b.e[j].z);
        }
      }
      row_allreduce(sums, SumMerge<acc_t>{}, shared);
    }
    if (o.prelu_rows != nullptr && threadIdx.x == 0) {
      o.prelu_rows[row] = sums[2];
    }
    if (o.grad_input == nullptr && o.grad_residual == nullptr) {
      continue;
    }
    const acc_t mean_gw = p.rms ? acc_t(0) : sums[0] / acc_t(p.N);
    const acc_t mean_gw_xhat = sums[1] / acc_t(p.N);
    for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
      const BackwardVector<acc_t, VEC> b = backward_vector<VEC>(p, in, grads, act, row, v * VEC, mean, rstd);
      Pack<scalar_t, VEC> dx, dres;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        dres.v[j] = from_acc<scalar_t>(b.g[j]);
        dx.v[j] =
            from_acc<scalar_t>(math::row_norm_input_grad(b.g[j] * b.e[j].w, b.e[j].xhat, rstd, mean_gw, mean_gw_xhat));
      }
      const int64_t offset = row * p.N + v * VEC;
      if (o.grad_input != nullptr) {
        store_pack<VEC>(o.grad_input + offset, dx);
      }
      if (o.grad_residual != nullptr) {
        store_pack<VEC>(o.grad_residual + offset, dres);
      }
    }
  }
}

// Column pass: per-(chunk, column) partial sums of g * xhat (weight), g (bias)
// and PReLU's terms (PReLU along the columns); [P, N] each, nullable.
template <typename acc_t>
struct ColumnOut {
  acc_t* __restrict__ weight;
  acc_t* __restrict__ bias;
  acc_t* __restrict__ prelu;
  int64_t rows_per_chunk;
};

template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kWarpSize* kColumnRows)
    row_columns_kernel(const RowParams p, const RowPtrs<scalar_t, acc_t> in, const GradPtrs<scalar_t, acc_t> grads,
                       const ColumnOut<acc_t> o, const DeviceActivation<acc_t> act) {
  const int64_t col0 = (static_cast<int64_t>(blockIdx.x) * kWarpSize + threadIdx.x) * VEC;
  const int64_t chunk = blockIdx.y;
  const int64_t row_begin = chunk * o.rows_per_chunk;
  const int64_t row_end = min(p.M, row_begin + o.rows_per_chunk);
  const bool active = col0 < p.N;  // N % VEC == 0, so the whole vector is in range
  // sums[f][j]: f = weight, bias, PReLU; j = column col0 + j.
  acc_t sums[3][VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    sums[0][j] = sums[1][j] = sums[2][j] = acc_t(0);
  }
  if (active) {
    for (int64_t row = row_begin + threadIdx.y; row < row_end; row += kColumnRows) {
      const acc_t mean = grads.mean != nullptr ? grads.mean[row] : acc_t(0);
      const BackwardVector<acc_t, VEC> b = backward_vector<VEC>(p, in, grads, act, row, col0, mean, grads.rstd[row]);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        sums[0][j] += b.g[j] * b.e[j].xhat;
        sums[1][j] += b.g[j];
        sums[2][j] += prelu_term(b.dy[j], b.e[j].z);
      }
    }
  }
  // The row lanes' sums meet in shared memory; lane 0 adds them up.
  __shared__ acc_t shared[3][kColumnRows][kWarpSize * VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
#pragma unroll
    for (int f = 0; f < 3; ++f) {
      shared[f][threadIdx.y][threadIdx.x * VEC + j] = sums[f][j];
    }
  }
  __syncthreads();
  if (threadIdx.y != 0 || !active) {
    return;
  }
  acc_t* outputs[3] = {o.weight, o.bias, o.prelu};
#pragma unroll
  for (int f = 0; f < 3; ++f) {
    if (outputs[f] == nullptr) {
      continue;
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      acc_t total = acc_t(0);
#pragma unroll
      for (int r = 0; r < kColumnRows; ++r) {
        total += shared[f][r][threadIdx.x * VEC + j];
      }
      outputs[f][chunk * p.N + col0 + j] = total;
    }
  }
}

}  // namespace fusednorm::cuda
