// ATen-side helpers shared by the CUDA launchers (the .cpp files that turn
// tensors into the kernels' raw parameter structs).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/util/Exception.h>

#include "channel_norm_launch.h"

namespace fusednorm::detail {

// The device type the kernels' tensors live on: CUDA, or the CPU in the CUDA
// emulator's build of these files (tests/emu), which registers them in place
// of the CPU kernels.
#ifdef FUSEDNORM_CUDA_EMULATION
constexpr c10::DeviceType kKernelDevice = c10::DeviceType::CPU;
#else
constexpr c10::DeviceType kKernelDevice = c10::DeviceType::CUDA;
#endif

inline bool on_kernel_device(const at::Tensor& t) { return t.device().type() == kKernelDevice; }

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
