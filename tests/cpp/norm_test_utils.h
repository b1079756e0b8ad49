// What the GoogleTest suites share: every activation with its ATen reference, and
// the comparison of an output's gradients with the reference composite's.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace fusednorm_test {

struct ActivationCase {
  std::string name;
  std::vector<double> params;
  std::function<torch::Tensor(const torch::Tensor&)> reference;
};

inline std::vector<ActivationCase> activation_cases() {
  return {
      {"identity", {}, [](const torch::Tensor& z) { return z; }},
      {"relu", {}, [](const torch::Tensor& z) { return torch::relu(z); }},
      {"leaky_relu", {0.2}, [](const torch::Tensor& z) { return torch::leaky_relu(z, 0.2); }},
      {"elu", {0.7}, [](const torch::Tensor& z) { return torch::elu(z, 0.7); }},
      {"selu", {}, [](const torch::Tensor& z) { return torch::selu(z); }},
      {"gelu", {}, [](const torch::Tensor& z) { return torch::gelu(z); }},
      {"gelu_tanh", {}, [](const torch::Tensor& z) { return torch::gelu(z, "tanh"); }},
      {"silu", {}, [](const torch::Tensor& z) { return torch::silu(z); }},
      {"sigmoid", {}, [](const torch::Tensor& z) { return torch::sigmoid(z); }},
      {"tanh", {}, [](const torch::Tensor& z) { return torch::tanh(z); }},
  };
}

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
