// The device the GoogleTest suite runs on. FUSEDNORM_TEST_DEVICE=cuda (make gpu-check)
// runs the oracle comparisons on CUDA tensors, with ATen's own CUDA ops as the
// oracle; the default is the CPU.
#pragma once

#include <torch/torch.h>

#include <cstdlib>
#include <string>

namespace fusednorm_test {

inline torch::Device test_device() {
  static const torch::Device device = [] {
    const char* name = std::getenv("FUSEDNORM_TEST_DEVICE");
    const torch::Device chosen(name != nullptr && *name != '\0' ? name : "cpu");
    TORCH_CHECK(!chosen.is_cuda() || torch::cuda::is_available(), "FUSEDNORM_TEST_DEVICE=", name,
                " but CUDA is not available");
    return chosen;
  }();
  return device;
}

// Tensor options of `dtype` on the test device.
inline torch::TensorOptions options(torch::ScalarType dtype) {
  return torch::TensorOptions().dtype(dtype).device(test_device());
}

}  // namespace fusednorm_test
