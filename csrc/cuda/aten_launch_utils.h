// ATen-side helpers shared by the CUDA launchers (the .cpp files that turn
// tensors into the kernels' raw parameter structs).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "channel_norm_launch.h"

namespace fusednorm::detail {

inline cuda::DType to_cuda_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return cuda::DType::kFloat;
    case at::kDouble:
      return cuda::DType::kDouble;
    case at::kHalf:
      return cuda::DType::kHalf;
    case at::kBFloat16:
      return cuda::DType::kBFloat16;
    default:
      TORCH_CHECK(false, "fusednorm: CUDA kernels support float, double, half and bfloat16, got ", t);
  }
}

inline const void* optional_ptr(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

inline void* optional_mutable_ptr(const at::Tensor& t) { return t.defined() ? t.mutable_data_ptr() : nullptr; }

}  // namespace fusednorm::detail
