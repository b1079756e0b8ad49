// fusednorm::batch_norm_act from C++ against ATen's batch_norm + activation,
// forward and backward through LibTorch autograd (no Python anywhere).
#include <fusednorm/fusednorm.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "norm_test_utils.h"

namespace {

using fusednorm_test::activation_cases;
using fusednorm_test::ActivationCase;

class BatchNormAct : public ::testing::TestWithParam<std::tuple<int, bool, bool>> {};

TEST_P(BatchNormAct, MatchesATenForwardAndBackward) {
  const auto [case_index, channels_last, with_residual] = GetParam();
  const ActivationCase act = activation_cases().at(case_index);
  torch::manual_seed(0);
  const auto options = fusednorm_test::options(torch::kFloat64);
  torch::Tensor x = torch::randn({4, 5, 6, 7}, options) * 2 + 0.5;
  if (channels_last) {
    x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  }
  x.requires_grad_();
  torch::Tensor residual = torch::randn({4, 5, 6, 7}, options).requires_grad_();
  torch::Tensor weight = (torch::rand({5}, options) + 0.5).requires_grad_();
  torch::Tensor bias = torch::randn({5}, options).requires_grad_();
  torch::Tensor running_mean = torch::zeros({5}, options), running_var = torch::ones({5}, options);
  torch::Tensor ref_mean = running_mean.clone(), ref_var = running_var.clone();

  auto [out, save_mean, save_invstd] = fusednorm::batch_norm_act(
      x, weight, bias, running_mean, running_var, with_residual ? std::optional<torch::Tensor>(residual) : std::nullopt,
      /*training=*/true, 0.1, 1e-5, act.name, act.params);
  torch::Tensor z = torch::batch_norm(x, weight, bias, ref_mean, ref_var, /*training=*/true, 0.1, 1e-5,
                                      /*cudnn_enabled=*/false);
  if (with_residual) {
    z = z + residual;
  }
  const torch::Tensor expected = act.reference(z);
  EXPECT_TRUE(torch::allclose(out, expected, 1e-10, 1e-10)) << act.name;
  EXPECT_TRUE(torch::allclose(running_mean, ref_mean, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(running_var, ref_var, 1e-12, 1e-12));
  if (channels_last) {
    EXPECT_TRUE(out.is_contiguous(torch::MemoryFormat::ChannelsLast));
  }

  std::vector<torch::Tensor> inputs{x, weight, bias};
  if (with_residual) {
    inputs.push_back(residual);
  }
  fusednorm_test::expect_same_gradients(out, expected, inputs, 1e-9, act.name);
}

INSTANTIATE_TEST_SUITE_P(AllActivations, BatchNormAct,
                         ::testing::Combine(::testing::Range(0, static_cast<int>(activation_cases().size())),
                                            ::testing::Bool(), ::testing::Bool()));

TEST(BatchNormActEval, UsesRunningStatistics) {
  const auto options = fusednorm_test::options(torch::kFloat32);
  const torch::Tensor x = torch::randn({3, 4, 5}, options);
  const torch::Tensor running_mean = torch::randn({4}, options), running_var = torch::rand({4}, options) + 0.5;
  auto [out, mean, invstd] = fusednorm::batch_norm_act(x, std::nullopt, std::nullopt, running_mean, running_var,
                                                       std::nullopt, /*training=*/false, 0.1, 1e-5, "silu");
  const torch::Tensor expected =
      torch::silu(torch::batch_norm(x, {}, {}, running_mean, running_var, false, 0.1, 1e-5, /*cudnn_enabled=*/false));
  EXPECT_TRUE(torch::allclose(out, expected, 1e-5, 1e-6));
}

TEST(BatchNormActErrors, ClearMessages) {
  const torch::Tensor x = torch::randn({2, 3, 4});
  try {
    fusednorm::batch_norm_act(x, torch::ones({4}), std::nullopt, std::nullopt, std::nullopt, std::nullopt, true, 0.1,
                              1e-5, "relu");
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight must be a 1-d tensor of 3 elements"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fusednorm::batch_norm_act(x, std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt, true,
                                         0.1, 1e-5, "not_an_activation"),
               c10::Error);
}

}  // namespace
