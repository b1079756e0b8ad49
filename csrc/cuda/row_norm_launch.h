// Host entry points of the CUDA row-norm kernels (see ops/row_norm.h for what
// they compute). Torch-free, like channel_norm_launch.h whose DType and
// ActivationRaw it shares: row_norm_kernel.cu never parses ATen; the ATen side
// (row_norm_launch.cpp) allocates, picks the stream and checks the returned
// cudaError_t.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <initializer_list>

#include "../math/row_norm.h"
#include "channel_norm_launch.h"

namespace fusednorm::cuda {

// A dense row-major (M, N) tensor: M rows of N elements.
struct RowGeometry {
  int64_t M = 0;
  int64_t N = 0;
};

// How the passes run, decided before the launch because the caller allocates
// the backward's [partial_blocks, N] column partials.
struct RowPlan {
  int vec = 1;               // elements per memory access; 1 = scalar path
  int threads_per_row = 32;  // a warp, or a whole block (a power of two)
  int rows_per_block = 1;    // > 1 only with a warp per row
  // Backward column pass: the rows are cut into partial_blocks chunks of
  // rows_per_chunk rows, each with its own partial column sums.
  int64_t partial_blocks = 1;
  int64_t rows_per_chunk = 0;
};

// Plans the passes over tensors of geometry `g`; `tensors` are the data pointers
// the pass touches (null ones are ignored), for the alignment test of the
// vectorised path. Needs the current device to be the tensors' device.
RowPlan plan_rows(const RowGeometry& g, DType dtype, std::initializer_list<const void*> tensors);

// Tensors every pass reads. weight and bias: N elements in the accumulation
// dtype (double for kDouble, float otherwise), nullable; residual: x's dtype,
// nullable.
struct RowInputs {
  const void* x = nullptr;
  const void* residual = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;
  bool rms = false;  // RMS norm: no mean subtraction
  ActivationRaw act;
  math::PReluChannelMap prelu;
};

// out: x's dtype; mean (nullable, unused by RMS norm) and rstd: [M] accumulation dtype.
struct RowForwardArgs {
  RowInputs in;
  double eps = 0.0;
  void* out = nullptr;
  void* mean = nullptr;
  void* rstd = nullptr;
};

// Every output is nullable. prelu_rows: [M] sums of grad_out * z over z <= 0
// (when prelu.along_rows); partial_*: [partial_blocks, N] column sums of
// g * xhat, g, and grad_out * z over z <= 0 (when not prelu.along_rows).
struct RowBackwardArgs {
  RowInputs in;
  const void* grad_out = nullptr;
  const void* mean = nullptr;  // null for RMS norm
  const void* rstd = nullptr;
  void* grad_input = nullptr;
  void* grad_residual = nullptr;
  void* prelu_rows = nullptr;
  void* partial_weight = nullptr;
  void* partial_bias = nullptr;
  void* partial_prelu = nullptr;
};

// Each returns the first launch's failing cudaError_t (cudaSuccess when there
// was nothing to do).
cudaError_t launch_row_norm_forward(const RowGeometry& g, DType dtype, const RowPlan& plan, const RowForwardArgs& args,
                                    cudaStream_t stream);
cudaError_t launch_row_norm_backward(const RowGeometry& g, DType dtype, const RowPlan& plan,
                                     const RowBackwardArgs& args, cudaStream_t stream);

}  // namespace fusednorm::cuda
