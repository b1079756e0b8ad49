// Emulator stand-in for c10/cuda/CUDAException.h (tests/emu): a failed
// emulated launch becomes the same c10::Error (RuntimeError in Python) as on
// the GPU, with the emulator's error text (its findings are on stderr).
#pragma once

#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

const char* emu_cudaGetErrorString(cudaError_t e);
cudaError_t emu_cudaGetLastError();

#define C10_CUDA_CHECK(EXPR)                                                                              \
  do {                                                                                                    \
    const cudaError_t emu_check_error = (EXPR);                                                           \
    TORCH_CHECK(emu_check_error == cudaSuccess, "CUDA error: ", emu_cudaGetErrorString(emu_check_error)); \
  } while (0)

#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(emu_cudaGetLastError())
