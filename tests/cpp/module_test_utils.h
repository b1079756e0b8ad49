// What the LibTorch module tests share: each fused module's activation next to the
// torch::nn module that is its oracle, and the comparison of a fused module with
// torch::nn's module followed by that activation (forward, buffers, every gradient).
#pragma once

#include <fusednorm/fusednorm.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "test_device.h"

namespace fusednorm_test {

namespace nn = torch::nn;

struct ModuleActivationCase {
  std::string label;
  fusednorm::Activation activation;
  std::function<nn::AnyModule()> reference;
};

// Every activation with its torch::nn module. `channels` sizes the per-channel PReLU;
// `prelu_per_channel` says whether Activation::prelu() means one slope per channel
// (the channel norms) or a single one (LayerNorm, RMSNorm).
inline std::vector<ModuleActivationCase> module_activation_cases(int64_t channels, bool prelu_per_channel) {
  using fusednorm::Activation;
  const int64_t default_prelu = prelu_per_channel ? channels : 1;
  return {
      {"identity", Activation(), [] { return nn::AnyModule(nn::Identity()); }},
      {"relu", Activation::relu(), [] { return nn::AnyModule(nn::ReLU()); }},
      {"leaky_relu", Activation::leaky_relu(0.2),
       [] { return nn::AnyModule(nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.2))); }},
      {"prelu", Activation::prelu(),
       [=] { return nn::AnyModule(nn::PReLU(nn::PReLUOptions().num_parameters(default_prelu))); }},
      {"prelu_channels", Activation::prelu(channels, 0.1),
       [=] { return nn::AnyModule(nn::PReLU(nn::PReLUOptions().num_parameters(channels))); }},
      {"prelu_shared", Activation::prelu(1, 0.1), [] { return nn::AnyModule(nn::PReLU()); }},
      {"rrelu_eval", Activation::rrelu(0.1, 0.3),
       [] { return nn::AnyModule(nn::RReLU(nn::RReLUOptions().lower(0.1).upper(0.3))); }},
      {"elu", Activation::elu(0.7), [] { return nn::AnyModule(nn::ELU(nn::ELUOptions().alpha(0.7))); }},
      {"selu", Activation::selu(), [] { return nn::AnyModule(nn::SELU()); }},
      // alpha 2: 1/alpha is exact in float32, which torch's CELU backward rounds it to.
      {"celu", Activation::celu(2.0), [] { return nn::AnyModule(nn::CELU(nn::CELUOptions().alpha(2.0))); }},
      {"gelu", Activation::gelu(), [] { return nn::AnyModule(nn::GELU()); }},
      {"gelu_tanh", Activation::gelu("tanh"),
       [] { return nn::AnyModule(nn::GELU(nn::GELUOptions().approximate("tanh"))); }},
      {"silu", "silu", [] { return nn::AnyModule(nn::SiLU()); }},
      {"sigmoid", Activation::sigmoid(), [] { return nn::AnyModule(nn::Sigmoid()); }},
      {"tanh", Activation::tanh(), [] { return nn::AnyModule(nn::Tanh()); }},
  };
}

inline size_t num_module_activation_cases() { return module_activation_cases(1, true).size(); }

inline std::string module_activation_label(const ::testing::TestParamInfo<int>& info) {
  return module_activation_cases(1, true)[info.param].label;
}

inline void expect_close(const torch::Tensor& actual, const torch::Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.defined(), expected.defined()) << what;
  if (!expected.defined()) {
    return;
  }
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  EXPECT_TRUE(torch::allclose(actual, expected, 1e-10, 1e-10))
      << what << ": max difference " << (actual - expected).abs().max().item<double>();
}

// Copies every parameter and buffer of `from` into the same-named one of `to`.
inline void copy_state(nn::Module& from, nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto params = to.named_parameters();
  for (const auto& item : from.named_parameters()) {
    ASSERT_TRUE(params.contains(item.key())) << item.key();
    params[item.key()].copy_(item.value());
  }
  auto buffers = to.named_buffers();
  for (const auto& item : from.named_buffers()) {
    ASSERT_TRUE(buffers.contains(item.key())) << item.key();
    buffers[item.key()].copy_(item.value());
  }
}

// Names of every parameter then every buffer, in registration order.
inline std::vector<std::string> state_names(const nn::Module& module) {
  std::vector<std::string> names;
  for (const auto& item : module.named_parameters()) names.push_back(item.key());
  for (const auto& item : module.named_buffers()) names.push_back(item.key());
  return names;
}

struct Run {
  std::vector<int64_t> shape;
  bool training = true;
  bool with_residual = false;
  bool channels_last = false;
  // The output must have the input's memory format (the channel norms' promise).
  bool keeps_memory_format = false;
};

// `fused` against activation(reference(x) + residual) in float64 for two steps (so
// running statistics evolve): the output, every same-named buffer, and the gradients
// of x, the residual and every parameter (PReLU's from the activation module).
// Randomises reference's parameters and running statistics first, then copies them
// and the activation's weight into `fused`.
template <typename Fused, typename Reference>
void compare_with_reference(Fused& fused, Reference& reference, const ModuleActivationCase& act, const Run& run) {
  nn::AnyModule activation = act.reference();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : reference->parameters()) {
      p.uniform_(0.5, 1.5);
    }
    for (auto& item : reference->named_buffers()) {
      if (item.key() == "running_mean" || item.key() == "running_feature_mean") item.value().normal_(0, 0.3);
      if (item.key() == "running_var" || item.key() == "running_feature_var") item.value().uniform_(0.5, 2.0);
    }
    if (auto prelu = activation.ptr()->as<nn::PReLUImpl>()) {
      prelu->weight.uniform_(0.05, 0.5);
    }
  }
  reference->to(test_device(), torch::kFloat64);
  activation.ptr()->to(test_device(), torch::kFloat64);
  fused->to(test_device(), torch::kFloat64);
  copy_state(*reference, *fused);
  if (auto prelu = activation.ptr()->as<nn::PReLUImpl>()) {
    torch::NoGradGuard no_grad;
    auto fused_params = fused->named_parameters();
    ASSERT_TRUE(fused_params.contains("activation.weight"));
    ASSERT_EQ(fused_params["activation.weight"].sizes(), prelu->weight.sizes());
    fused_params["activation.weight"].copy_(prelu->weight);
  }
  reference->train(run.training);
  fused->train(run.training);
  activation.ptr()->eval();  // RReLU: its mean slope (training mode is random, tested on its own)

  for (int step = 0; step < 2; ++step) {
    torch::Tensor x = torch::randn(run.shape, options(torch::kFloat64)) * 2 + 0.5;
    if (run.channels_last) {
      x = x.contiguous(run.shape.size() == 4 ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::ChannelsLast3d);
    }
    x.requires_grad_();
    torch::Tensor residual = torch::randn(run.shape, options(torch::kFloat64)).requires_grad_();
    const torch::Tensor out = run.with_residual ? fused(x, residual) : fused(x);
    torch::Tensor z = reference(x);
    if (run.with_residual) {
      z = z + residual;
    }
    const torch::Tensor expected = activation.forward(z);
    expect_close(out, expected, act.label + " output");
    if (run.keeps_memory_format) {
      EXPECT_TRUE(out.is_contiguous(x.suggest_memory_format())) << act.label;
    }
    auto fused_buffers = fused->named_buffers();
    for (const auto& item : reference->named_buffers()) {
      ASSERT_TRUE(fused_buffers.contains(item.key())) << item.key();
      if (item.value().is_floating_point()) {
        expect_close(fused_buffers[item.key()], item.value(), item.key());
      } else {
        EXPECT_TRUE(torch::equal(fused_buffers[item.key()], item.value())) << item.key();
      }
    }

    std::vector<torch::Tensor> inputs{x}, ref_inputs{x};
    std::vector<std::string> names{"input"};
    if (run.with_residual) {
      inputs.push_back(residual);
      ref_inputs.push_back(residual);
      names.push_back("residual");
    }
    auto reference_params = reference->named_parameters();
    for (const auto& item : fused->named_parameters()) {
      inputs.push_back(item.value());
      ref_inputs.push_back(item.key() == "activation.weight" ? activation.ptr()->named_parameters()["weight"]
                                                             : reference_params[item.key()]);
      names.push_back(item.key());
    }
    const torch::Tensor grad = torch::randn_like(out);
    const auto grads = torch::autograd::grad({out}, inputs, {grad});
    const auto ref_grads = torch::autograd::grad({expected}, ref_inputs, {grad}, /*retain_graph=*/std::nullopt,
                                                 /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t i = 0; i < inputs.size(); ++i) {
      expect_close(grads[i], ref_grads[i], act.label + " gradient of " + names[i]);
    }
  }
}

// The message of the c10::Error that `fn` throws ("" when it throws none).
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace fusednorm_test
