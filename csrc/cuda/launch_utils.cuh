// Host helpers shared by the CUDA launchers (compiled by nvcc, torch-free):
// the launch itself, dtype dispatch, vector width and alignment, SM count.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "channel_norm_launch.h"

namespace fusednorm::cuda {

// kernel<<<grid, block, shared_bytes, stream>>>(args...). Every launch goes
// through here so that the CUDA emulator (tests/emu), which compiles these
// files as host C++, runs the same launch on the CPU.
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                   Args&&... args) {
#ifdef FUSEDNORM_CUDA_EMULATION
  ::emu::launch(kernel, ::emu::LaunchConfig{grid, block, shared_bytes, stream}, std::forward<Args>(args)...);
#else
  // The launch syntax, which clang-format would split:
  // clang-format off
  kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
  // clang-format on
#endif
}

template <typename S, typename A>
struct Types {
  using scalar_t = S;
  using acc_t = A;
};

// Calls f(Types<scalar_t, acc_t>{}) for the runtime dtype.
template <typename F>
cudaError_t dispatch_dtype(DType dtype, const F& f) {
  switch (dtype) {
    case DType::kFloat:
      return f(Types<float, float>{});
    case DType::kDouble:
      return f(Types<double, double>{});
    case DType::kHalf:
      return f(Types<__half, float>{});
    case DType::kBFloat16:
      return f(Types<__nv_bfloat16, float>{});
  }
  return cudaErrorInvalidValue;
}

inline int element_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat:
      return 4;
    case DType::kDouble:
      return 8;
    case DType::kHalf:
    case DType::kBFloat16:
      return 2;
  }
  return 1;
}

// Elements per 16-byte access.
inline int vector_width(DType dtype) { return 16 / element_size(dtype); }

inline bool aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs) {
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 != 0) {
      return false;
    }
  }
  return true;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// SM count of the current device; cached because it sits on every launch path.
inline int multiprocessor_count() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    return 1;
  }
  if (device >= 0 && device < kMaxDevices) {
    const int cached = cache[device].load(std::memory_order_relaxed);
    if (cached > 0) {
      return cached;
    }
  }
  int count = 0;
  if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count <= 0) {
    return 1;
  }
  if (device >= 0 && device < kMaxDevices) {
    cache[device].store(count, std::memory_order_relaxed);
  }
  return count;
}

}  // namespace fusednorm::cuda
