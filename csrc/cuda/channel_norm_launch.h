// Host entry points of the CUDA channel-norm kernels (see ops/channel_norm.h for
// what each computes). Torch-free on purpose: channel_norm_kernel.cu includes
// only this and the math headers, so nvcc never parses ATen; the ATen side
// (channel_norm_launch.cpp) allocates, picks the stream and turns the returned
// cudaError_t into a TORCH_CHECK.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <initializer_list>

#include "../math/activation.h"

namespace fusednorm::cuda {

// Input dtype; the accumulation dtype (statistics, coefficients, PReLU weight)
// is double for kDouble and float otherwise.
enum class DType : int32_t { kFloat = 0, kDouble, kHalf, kBFloat16 };

// A dense (N, C, S) tensor: memory (N, C, S) or, when channels_last, (N, S, C).
struct Geometry {
  int64_t N = 0;
  int64_t C = 0;
  int64_t S = 0;
  bool channels_last = false;
};

// How the two reduction passes cut each (n, c)'s spatial extent into K slices.
// Decided before the launch because the caller allocates the [N, C, K] outputs.
struct ReductionPlan {
  int64_t K = 1;
  int64_t slice = 0;    // positions of S per slice (the last slice may be shorter)
  int vec = 1;          // elements per memory access; 1 = scalar path
  int block_x = 1;      // channels-last: threads along C (a power of two, <= 256)
  int64_t c_tiles = 1;  // channels-last: blocks along C
};

// Plans a reduction over tensors of geometry `g`; `tensors` are the data
// pointers the pass reads (null ones are ignored), used for the alignment test
// of the vectorised path. Needs the current device to be the tensors' device.
ReductionPlan plan_reduction(const Geometry& g, DType dtype, std::initializer_list<const void*> tensors);

// Activation as the kernels get it. prelu_weight: accumulation dtype, numel 1
// (prelu_per_channel = false) or C; may be null unless kind == kPReLU.
struct ActivationRaw {
  math::ActivationParams params;
  const void* prelu_weight = nullptr;
  bool prelu_per_channel = false;
};

// Coefficients (scale, shift, mean, k1..k3) are contiguous in the accumulation
// dtype, indexed by q = n * coef_n_stride + c.

// Outputs: mean/m2 of (n, c, k) at (n * C + c) * K + k for channels-first and at
// (n * K + k) * C + c for channels-last (the caller views [N, K, C] as [N, C, K]);
// count[k] = elements in slice k.
struct MomentsArgs {
  const void* x = nullptr;
  void* mean = nullptr;
  void* m2 = nullptr;
  void* count = nullptr;
};

struct NormalizeArgs {
  const void* x = nullptr;
  const void* residual = nullptr;  // optional, x's dtype and layout
  const void* scale = nullptr;
  const void* shift = nullptr;
  int64_t coef_n_stride = 0;
  ActivationRaw act;
  void* out = nullptr;
};

// Outputs laid out as MomentsArgs::mean; sum_prelu is optional.
struct BackwardSumsArgs {
  const void* grad_out = nullptr;
  const void* x = nullptr;
  const void* residual = nullptr;
  const void* scale = nullptr;
  const void* shift = nullptr;
  const void* mean = nullptr;
  int64_t coef_n_stride = 0;
  ActivationRaw act;
  void* sum_g = nullptr;
  void* sum_g_xmu = nullptr;
  void* sum_prelu = nullptr;
};

// grad_input and grad_residual are optional (at least one should be set).
struct BackwardApplyArgs {
  const void* grad_out = nullptr;
  const void* x = nullptr;
  const void* residual = nullptr;
  const void* scale = nullptr;
  const void* shift = nullptr;
  const void* mean = nullptr;
  const void* k1 = nullptr;
  const void* k2 = nullptr;
  const void* k3 = nullptr;
  int64_t coef_n_stride = 0;
  ActivationRaw act;
  void* grad_input = nullptr;
  void* grad_residual = nullptr;
};

// Each returns the launch's cudaError_t (cudaSuccess when there was nothing to do).
cudaError_t launch_partial_moments(const Geometry& g, DType dtype, const ReductionPlan& plan, const MomentsArgs& args,
                                   cudaStream_t stream);
cudaError_t launch_normalize_activate(const Geometry& g, DType dtype, const NormalizeArgs& args, cudaStream_t stream);
cudaError_t launch_backward_partial_sums(const Geometry& g, DType dtype, const ReductionPlan& plan,
                                         const BackwardSumsArgs& args, cudaStream_t stream);
cudaError_t launch_backward_apply(const Geometry& g, DType dtype, const BackwardApplyArgs& args, cudaStream_t stream);

}  // namespace fusednorm::cuda
