// fusednorm::group_norm_act, instance_norm_act and batch_layer_norm_act from C++
// against ATen's group_norm / instance_norm / batch_norm + activation, forward and
// backward through LibTorch autograd (no Python anywhere).
#include <fusednorm/fusednorm.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "norm_test_utils.h"

namespace {

using fusednorm_test::activation_cases;
using fusednorm_test::ActivationCase;
using fusednorm_test::expect_same_gradients;

const auto kDouble = fusednorm_test::options(torch::kFloat64);

torch::Tensor make_input(std::vector<int64_t> shape, bool channels_last) {
  torch::Tensor x = torch::randn(shape, kDouble) * 2 + 0.5;
  if (channels_last) {
    x = x.contiguous(shape.size() == 4 ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::ChannelsLast3d);
  }
  return x.requires_grad_();
}

class GroupNormAct : public ::testing::TestWithParam<std::tuple<int, bool, bool, int64_t>> {};

TEST_P(GroupNormAct, MatchesATenForwardAndBackward) {
  const auto [case_index, channels_last, with_residual, groups] = GetParam();
  const ActivationCase act = activation_cases().at(case_index);
  torch::manual_seed(0);
  const torch::Tensor x = make_input({3, 6, 5, 7}, channels_last);
  const torch::Tensor residual = torch::randn({3, 6, 5, 7}, kDouble).requires_grad_();
  const torch::Tensor weight = (torch::rand({6}, kDouble) + 0.5).requires_grad_();
  const torch::Tensor bias = torch::randn({6}, kDouble).requires_grad_();

  auto [out, save_mean, save_invstd] = fusednorm::group_norm_act(
      x, groups, weight, bias, with_residual ? std::optional<torch::Tensor>(residual) : std::nullopt, 1e-5, act.name,
      act.params);
  torch::Tensor z = torch::group_norm(x, groups, weight, bias, 1e-5);
  if (with_residual) {
    z = z + residual;
  }
  const torch::Tensor expected = act.reference(z);
  const std::string what = act.name + " groups=" + std::to_string(groups);
  EXPECT_TRUE(torch::allclose(out, expected, 1e-10, 1e-10)) << what;
  EXPECT_EQ(save_mean.sizes(), (std::vector<int64_t>{3, groups}));
  if (channels_last) {
    EXPECT_TRUE(out.is_contiguous(torch::MemoryFormat::ChannelsLast)) << what;
  }
  std::vector<torch::Tensor> inputs{x, weight, bias};
  if (with_residual) {
    inputs.push_back(residual);
  }
  expect_same_gradients(out, expected, inputs, 1e-9, what);
}

INSTANTIATE_TEST_SUITE_P(AllActivations, GroupNormAct,
                         ::testing::Combine(::testing::Range(0, static_cast<int>(activation_cases().size())),
                                            ::testing::Bool(), ::testing::Bool(), ::testing::Values(1, 3, 6)));

TEST(GroupNormAct, FiveDimensionalChannelsLast) {
  torch::manual_seed(1);
  const torch::Tensor x = make_input({2, 4, 3, 5, 6}, /*channels_last=*/true);
  auto [out, mean, invstd] = fusednorm::group_norm_act(x, 2, std::nullopt, std::nullopt, std::nullopt, 1e-5, "gelu");
  const torch::Tensor expected = torch::gelu(torch::group_norm(x, 2, {}, {}, 1e-5));
  EXPECT_TRUE(torch::allclose(out, expected, 1e-10, 1e-10));
  EXPECT_TRUE(out.is_contiguous(torch::MemoryFormat::ChannelsLast3d));
  expect_same_gradients(out, expected, {x}, 1e-9, "5-d");
}

TEST(InstanceNormAct, RunningStatisticsThenEval) {
  torch::manual_seed(2);
  const torch::Tensor x = make_input({4, 5, 6, 3}, /*channels_last=*/false);
  const torch::Tensor weight = (torch::rand({5}, kDouble) + 0.5).requires_grad_();
  torch::Tensor running_mean = torch::randn({5}, kDouble), running_var = torch::rand({5}, kDouble) + 0.5;
  torch::Tensor ref_mean = running_mean.clone(), ref_var = running_var.clone();
  auto [out, mean, invstd] = fusednorm::instance_norm_act(x, weight, std::nullopt, running_mean, running_var,
                                                          std::nullopt, /*use_input_stats=*/true, 0.1, 1e-5, "silu");
  const torch::Tensor expected =
      torch::silu(torch::instance_norm(x, weight, {}, ref_mean, ref_var, true, 0.1, 1e-5, /*cudnn_enabled=*/false));
  EXPECT_TRUE(torch::allclose(out, expected, 1e-10, 1e-10));
  EXPECT_TRUE(torch::allclose(running_mean, ref_mean, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(running_var, ref_var, 1e-12, 1e-12));
  expect_same_gradients(out, expected, {x, weight}, 1e-9, "instance norm");

  auto [eval_out, eval_mean, eval_invstd] = fusednorm::instance_norm_act(
      x, weight, std::nullopt, running_mean, running_var, std::nullopt, /*use_input_stats=*/false, 0.1, 1e-5, "relu");
  const torch::Tensor eval_expected = torch::relu(
      torch::instance_norm(x, weight, {}, running_mean, running_var, false, 0.1, 1e-5, /*cudnn_enabled=*/false));
  EXPECT_TRUE(torch::allclose(eval_out, eval_expected, 1e-10, 1e-10));
  expect_same_gradients(eval_out, eval_expected, {x, weight}, 1e-9, "instance norm eval");
}

TEST(BatchLayerNormAct, IsTheMixOfBatchAndLayerNorm) {
  // Ziaee & Cano: ((1/m - zeta) * LN(x) + (1 - 1/m - zeta) * BN(x)) / sqrt(C) * weight + bias.
  torch::manual_seed(3);
  const int64_t N = 4, C = 5;
  const double eps = 1e-3, zeta = 1e-4;
  const torch::Tensor x = make_input({N, C, 3, 3}, /*channels_last=*/true);
  const torch::Tensor weight = (torch::rand({C}, kDouble) + 0.5).requires_grad_();
  const torch::Tensor bias = torch::randn({C}, kDouble).requires_grad_();
  auto [out, batch_mean, batch_invstd, feature_mean, feature_invstd] =
      fusednorm::batch_layer_norm_act(x, weight, bias, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
                                      std::nullopt, /*training=*/true, N, 0.1, eps, {true, true, false, false}, "tanh");
  const double m = static_cast<double>(N);
  const torch::Tensor mixed =
      ((1 / m - zeta) * torch::group_norm(x, 1, {}, {}, eps) +
       (1 - 1 / m - zeta) * torch::batch_norm(x, {}, {}, {}, {}, true, 0.1, eps, /*cudnn_enabled=*/false)) /
      std::sqrt(static_cast<double>(C));
  const torch::Tensor expected = torch::tanh(mixed * weight.view({1, C, 1, 1}) + bias.view({1, C, 1, 1}));
  EXPECT_TRUE(torch::allclose(out, expected, 1e-10, 1e-10));
  EXPECT_EQ(feature_mean.sizes(), (std::vector<int64_t>{N}));
  expect_same_gradients(out, expected, {x, weight, bias}, 1e-9, "batch-layer norm");
}

TEST(GroupNormActErrors, ClearMessages) {
  const torch::Tensor x = torch::randn({2, 6, 4});
  try {
    fusednorm::group_norm_act(x, 4, std::nullopt, std::nullopt, std::nullopt, 1e-5, "relu");
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("must be divisible by num_groups (4)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fusednorm::group_norm_act(x, 3, torch::ones({4}), std::nullopt, std::nullopt, 1e-5, "relu"), c10::Error);
  EXPECT_THROW(fusednorm::instance_norm_act(x, std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
                                            /*use_input_stats=*/false, 0.1, 1e-5, "relu"),
               c10::Error);
}

}  // namespace
