// What the GoogleTest suites share: the activation cases (activation_cases.h) and
// the comparison of an output's gradients with the reference composite's.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "activation_cases.h"
#include "test_device.h"

namespace fusednorm_test {

// Gradients of `out` and of the reference `expected` with respect to `inputs`, for
// one random grad_output, must agree.
inline void expect_same_gradients(const torch::Tensor& out, const torch::Tensor& expected,
                                  const std::vector<torch::Tensor>& inputs, double tolerance, const std::string& what) {
  const torch::Tensor grad = torch::randn_like(out);
  const auto grads = torch::autograd::grad({out}, inputs, {grad});
  const auto ref_grads = torch::autograd::grad({expected}, inputs, {grad});
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_TRUE(torch::allclose(grads[i], ref_grads[i], tolerance, tolerance)) << what << " grad " << i;
  }
}

}  // namespace fusednorm_test
