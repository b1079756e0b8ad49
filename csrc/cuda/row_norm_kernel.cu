// Host launchers of the row-norm kernels: dtype dispatch, vectorisation choice,
// launch configuration. Torch-free (see row_norm_launch.h).
#include <algorithm>
#include <cstdint>

#include "launch_utils.cuh"
#include "row_norm_kernel.cuh"
#include "row_norm_launch.h"

namespace fusednorm::cuda {
namespace {

// Vectors per thread below which a warp reduces a row; longer rows get a block.
constexpr int64_t kVectorsPerLane = 4;
constexpr int kRowsPerWarpBlock = 8;  // 256 threads
constexpr int kMinRowThreads = 64;
// A full SM runs 8 blocks of 256 threads; two waves of column-pass blocks keep
// every SM busy without making the partials (and ATen's final sum) large.
constexpr int64_t kColumnBlocksPerSm = 8;
constexpr int64_t kWaves = 2;
// Each chunk writes its partials once, so it should cover enough rows to make
// that write small next to what it reads.
constexpr int64_t kMinRowsPerChunk = 32;
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kMaxGridX = (int64_t{1} << 31) - 1;

int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) {
    p *= 2;
  }
  return p;
}

RowParams row_params(const RowGeometry& g, const RowInputs& in) {
  RowParams p;
  p.M = g.M;
  p.N = g.N;
  p.rms = in.rms;
  p.prelu = in.prelu;
  return p;
}

template <typename scalar_t, typename acc_t>
RowPtrs<scalar_t, acc_t> row_ptrs(const RowInputs& in) {
  return {static_cast<const scalar_t*>(in.x), static_cast<const scalar_t*>(in.residual),
          static_cast<const acc_t*>(in.weight), static_cast<const acc_t*>(in.bias)};
}

// Threads of the row passes: a warp per row for short rows (several rows per
// block), else a block of threads_per_row.
dim3 row_block(const RowPlan& plan) { return dim3(plan.threads_per_row, plan.rows_per_block); }

unsigned row_grid(const RowGeometry& g, const RowPlan& plan) {
  return static_cast<unsigned>(std::min(ceil_div(g.M, plan.rows_per_block), kMaxGridX));
}

template <typename scalar_t, typename acc_t, int VEC>
cudaError_t forward_impl(const RowGeometry& g, const RowPlan& plan, const RowForwardArgs& a, cudaStream_t stream) {
  const ForwardOut<scalar_t, acc_t> out{static_cast<scalar_t*>(a.out), static_cast<acc_t*>(a.mean),
                                        static_cast<acc_t*>(a.rstd), static_cast<acc_t>(a.eps)};
  launch_kernel(row_forward_kernel<scalar_t, acc_t, VEC>, row_grid(g, plan), row_block(plan), 0, stream,
                row_params(g, a.in), row_ptrs<scalar_t, acc_t>(a.in), out, DeviceActivation<acc_t>(a.in.act));
  return cudaGetLastError();
}

template <typename scalar_t, typename acc_t, int VEC>
cudaError_t backward_impl(const RowGeometry& g, const RowPlan& plan, const RowBackwardArgs& a, cudaStream_t stream) {
  const RowParams params = row_params(g, a.in);
  const RowPtrs<scalar_t, acc_t> in = row_ptrs<scalar_t, acc_t>(a.in);
  const DeviceActivation<acc_t> act(a.in.act);
  const GradPtrs<scalar_t, acc_t> grads{static_cast<const scalar_t*>(a.grad_out), static_cast<const acc_t*>(a.mean),
                                        static_cast<const acc_t*>(a.rstd)};
  if (g.M > 0 && (a.grad_input != nullptr || a.grad_residual != nullptr || a.prelu_rows != nullptr)) {
    const RowGradOut<scalar_t, acc_t> rows{static_cast<scalar_t*>(a.grad_input),
                                           static_cast<scalar_t*>(a.grad_residual), static_cast<acc_t*>(a.prelu_rows)};
    launch_kernel(row_backward_kernel<scalar_t, acc_t, VEC>, row_grid(g, plan), row_block(plan), 0, stream, params, in,
                  grads, rows, act);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) {
      return err;
    }
  }
  if (a.partial_weight != nullptr || a.partial_bias != nullptr || a.partial_prelu != nullptr) {
    const ColumnOut<acc_t> columns{static_cast<acc_t*>(a.partial_weight), static_cast<acc_t*>(a.partial_bias),
                                   static_cast<acc_t*>(a.partial_prelu), plan.rows_per_chunk};
    const dim3 grid(static_cast<unsigned>(ceil_div(g.N, int64_t{kWarpSize} * VEC)),
                    static_cast<unsigned>(plan.partial_blocks));
    launch_kernel(row_columns_kernel<scalar_t, acc_t, VEC>, grid, dim3(kWarpSize, kColumnRows), 0, stream, params, in,
                  grads, columns, act);
    return cudaGetLastError();
  }
  return cudaSuccess;
}

}  // namespace

RowPlan plan_rows(const RowGeometry& g, DType dtype, std::initializer_list<const void*> tensors) {
  RowPlan plan;
  const int width = vector_width(dtype);
  plan.vec = g.N % width == 0 && aligned16(tensors) ? width : 1;
  const int64_t nvec = g.N / plan.vec;
  if (nvec <= kWarpSize * kVectorsPerLane) {
    plan.threads_per_row = kWarpSize;
    plan.rows_per_block = kRowsPerWarpBlock;
  } else {
    plan.threads_per_row = static_cast<int>(
        std::clamp<int64_t>(next_pow2(ceil_div(nvec, kVectorsPerLane)), kMinRowThreads, kMaxRowThreads));
    plan.rows_per_block = 1;
  }
  const int64_t column_blocks = std::max<int64_t>(1, ceil_div(g.N, int64_t{kWarpSize} * plan.vec));
  const int64_t target = multiprocessor_count() * kColumnBlocksPerSm * kWaves;
  int64_t chunks = std::max<int64_t>(1, ceil_div(target, column_blocks));
  chunks = std::min({chunks, std::max<int64_t>(1, g.M / kMinRowsPerChunk), kMaxGridY});
  plan.rows_per_chunk = std::max<int64_t>(1, ceil_div(g.M, chunks));
  plan.partial_blocks = std::max<int64_t>(1, ceil_div(g.M, plan.rows_per_chunk));
  return plan;
}

cudaError_t launch_row_norm_forward(const RowGeometry& g, DType dtype, const RowPlan& plan, const RowForwardArgs& args,
                                    cudaStream_t stream) {
  if (g.M == 0 || g.N == 0) {
    return cudaSuccess;
  }
  return dispatch_dtype(dtype, [&](auto types) {
    using T = decltype(types);
    constexpr int kVec = 16 / sizeof(typename T::scalar_t);
    return plan.vec > 1 ? forward_impl<typename T::scalar_t, typename T::acc_t, kVec>(g, plan, args, stream)
                        : forward_impl<typename T::scalar_t, typename T::acc_t, 1>(g, plan, args, stream);
  });
}

cudaError_t launch_row_norm_backward(const RowGeometry& g, DType dtype, const RowPlan& plan,
                                     const RowBackwardArgs& args, cudaStream_t stream) {
  if (g.N == 0) {
    return cudaSuccess;
  }
  return dispatch_dtype(dtype, [&](auto types) {
    using T = decltype(types);
    constexpr int kVec = 16 / sizeof(typename T::scalar_t);
    return plan.vec > 1 ? backward_impl<typename T::scalar_t, typename T::acc_t, kVec>(g, plan, args, stream)
                        : backward_impl<typename T::scalar_t, typename T::acc_t, 1>(g, plan, args, stream);
  });
}

}  // namespace fusednorm::cuda
