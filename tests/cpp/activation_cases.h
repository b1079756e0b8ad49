// The activations the GoogleTest suites run, each with its ATen oracle.
#pragma once

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

}  // namespace fusednorm_test
