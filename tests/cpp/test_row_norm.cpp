// fusednorm::layer_norm_act and fusednorm::rms_norm_act from C++ against ATen's
// layer_norm / rms_norm + activation, forward and backward through LibTorch
// autograd (no Python anywhere).
#include <fusednorm/fusednorm.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "activation_cases.h"
#include "test_device.h"

namespace {

using fusednorm_test::activation_cases;
using fusednorm_test::ActivationCase;

const auto kDouble = fusednorm_test::options(torch::kFloat64);

// An input and its normalized_shape: a norm over the last dim, and over the last two.
struct ShapeCase {
  std::vector<int64_t> input;
  std::vector<int64_t> normalized;
};

std::vector<ShapeCase> shape_cases() { return {{{4, 5, 6}, {6}}, {{2, 3, 4, 5}, {4, 5}}}; }

void expect_grads_match(const torch::Tensor& out, const torch::Tensor& expected,
                        const std::vector<torch::Tensor>& inputs, const std::string& what) {
  const torch::Tensor grad = torch::randn_like(out);
  const auto grads = torch::autograd::grad({out}, inputs, {grad});
  const auto ref_grads = torch::autograd::grad({expected}, inputs, {grad});
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_TRUE(torch::allclose(grads[i], ref_grads[i], 1e-9, 1e-9)) << what << " grad " << i;
  }
}

class RowNormAct : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(RowNormAct, LayerNormMatchesATenForwardAndBackward) {
  const auto [case_index, shape_index, with_residual] = GetParam();
  const ActivationCase act = activation_cases().at(case_index);
  const ShapeCase shape = shape_cases().at(shape_index);
  torch::manual_seed(0);
  const torch::Tensor x = (torch::randn(shape.input, kDouble) * 2 + 0.5).requires_grad_();
  const torch::Tensor residual = torch::randn(shape.input, kDouble).requires_grad_();
  const torch::Tensor weight = (torch::rand(shape.normalized, kDouble) + 0.5).requires_grad_();
  const torch::Tensor bias = torch::randn(shape.normalized, kDouble).requires_grad_();

  auto [out, mean, rstd] = fusednorm::layer_norm_act(
      x, shape.normalized, weight, bias, with_residual ? std::optional<torch::Tensor>(residual) : std::nullopt, 1e-5,
      act.name, act.params);
  torch::Tensor z = torch::layer_norm(x, shape.normalized, weight, bias, 1e-5);
  if (with_residual) {
    z = z + residual;
  }
  const torch::Tensor expected = act.reference(z);
  EXPECT_TRUE(torch::allclose(out, expected, 1e-10, 1e-10)) << act.name;
  auto [ref_out, ref_mean, ref_rstd] = torch::native_layer_norm(x, shape.normalized, weight, bias, 1e-5);
  EXPECT_TRUE(torch::allclose(mean, ref_mean, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(rstd, ref_rstd, 1e-12, 1e-12));

  std::vector<torch::Tensor> inputs{x, weight, bias};
  if (with_residual) {
    inputs.push_back(residual);
  }
  expect_grads_match(out, expected, inputs, act.name);
}

TEST_P(RowNormAct, RmsNormMatchesATenForwardAndBackward) {
  const auto [case_index, shape_index, with_residual] = GetParam();
  const ActivationCase act = activation_cases().at(case_index);
  const ShapeCase shape = shape_cases().at(shape_index);
  torch::manual_seed(1);
  const torch::Tensor x = (torch::randn(shape.input, kDouble) * 2 + 0.5).requires_grad_();
  const torch::Tensor residual = torch::randn(shape.input, kDouble).requires_grad_();
  const torch::Tensor weight = (torch::rand(shape.normalized, kDouble) + 0.5).requires_grad_();

  auto [out, rstd] = fusednorm::rms_norm_act(x, shape.normalized, weight,
                                             with_residual ? std::optional<torch::Tensor>(residual) : std::nullopt,
                                             1e-6, act.name, act.params);
  torch::Tensor z = torch::rms_norm(x, shape.normalized, weight, 1e-6);
  if (with_residual) {
    z = z + residual;
  }
  const torch::Tensor expected = act.reference(z);
  EXPECT_TRUE(torch::allclose(out, expected, 1e-10, 1e-10)) << act.name;
  std::vector<int64_t> dims;
  for (size_t d = 0; d < shape.normalized.size(); ++d) {
    dims.push_back(static_cast<int64_t>(shape.input.size() - 1 - d));
  }
  EXPECT_TRUE(torch::allclose(rstd, x.detach().square().mean(dims, /*keepdim=*/true).add(1e-6).rsqrt(), 1e-12, 1e-12));

  std::vector<torch::Tensor> inputs{x, weight};
  if (with_residual) {
    inputs.push_back(residual);
  }
  expect_grads_match(out, expected, inputs, act.name);
}

INSTANTIATE_TEST_SUITE_P(AllActivations, RowNormAct,
                         ::testing::Combine(::testing::Range(0, static_cast<int>(activation_cases().size())),
                                            ::testing::Range(0, static_cast<int>(shape_cases().size())),
                                            ::testing::Bool()));

TEST(RowNormActPReLU, ChannelIsInputDim1WithWeightGradient) {
  torch::manual_seed(2);
  const torch::Tensor x = torch::randn({3, 4, 7}, kDouble).requires_grad_();
  const torch::Tensor slope = (torch::rand({4}, kDouble) * 0.4).requires_grad_();
  const torch::Tensor weight = (torch::rand({7}, kDouble) + 0.5).requires_grad_();
  auto [ln, ln_mean, ln_rstd] =
      fusednorm::layer_norm_act(x, {7}, weight, std::nullopt, std::nullopt, 1e-5, "prelu", {}, slope);
  const torch::Tensor ln_expected = torch::prelu(torch::layer_norm(x, {7}, weight, {}, 1e-5), slope);
  EXPECT_TRUE(torch::allclose(ln, ln_expected, 1e-10, 1e-10));
  expect_grads_match(ln, ln_expected, {x, weight, slope}, "layer_norm prelu");

  auto [rms, rms_rstd] = fusednorm::rms_norm_act(x, {4, 7}, std::nullopt, std::nullopt, 1e-6, "prelu", {}, slope);
  const torch::Tensor rms_expected = torch::prelu(torch::rms_norm(x, {4, 7}, {}, 1e-6), slope);
  EXPECT_TRUE(torch::allclose(rms, rms_expected, 1e-10, 1e-10));
  expect_grads_match(rms, rms_expected, {x, slope}, "rms_norm prelu");
}

TEST(RowNormActBackward, OpsMatchAutograd) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({5, 9}, kDouble).requires_grad_();
  const torch::Tensor weight = (torch::rand({9}, kDouble) + 0.5).requires_grad_();
  const torch::Tensor bias = torch::randn({9}, kDouble).requires_grad_();
  const torch::Tensor grad = torch::randn({5, 9}, kDouble);

  auto [out, mean, rstd] = fusednorm::layer_norm_act(x, {9}, weight, bias, std::nullopt, 1e-5, "silu");
  const auto autograd_grads = torch::autograd::grad({out}, {x, weight, bias}, {grad});
  auto [gx, gw, gb, gr, ga] =
      fusednorm::layer_norm_act_backward(grad, x.detach(), {9}, weight.detach(), bias.detach(), std::nullopt, mean,
                                         rstd, "silu", {}, std::nullopt, std::nullopt, {true, true, true, true, true});
  ASSERT_TRUE(gx && gw && gb);
  EXPECT_FALSE(gr.has_value()) << "no residual, no residual gradient";
  EXPECT_FALSE(ga.has_value()) << "no PReLU, no activation-weight gradient";
  EXPECT_TRUE(torch::allclose(*gx, autograd_grads[0], 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(*gw, autograd_grads[1], 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(*gb, autograd_grads[2], 1e-12, 1e-12));

  auto [rms_out, rms_rstd] = fusednorm::rms_norm_act(x, {9}, weight, std::nullopt, std::nullopt, "gelu");
  const auto rms_autograd = torch::autograd::grad({rms_out}, {x, weight}, {grad});
  auto [rgx, rgw, rgr, rga] =
      fusednorm::rms_norm_act_backward(grad, x.detach(), {9}, weight.detach(), std::nullopt, rms_rstd, "gelu", {},
                                       std::nullopt, std::nullopt, {true, false, true, false});
  ASSERT_TRUE(rgx.has_value());
  EXPECT_FALSE(rgw.has_value()) << "masked out";
  EXPECT_TRUE(torch::allclose(*rgx, rms_autograd[0], 1e-12, 1e-12));
}

TEST(RowNormActErrors, ClearMessages) {
  const torch::Tensor x = torch::randn({2, 3, 4});
  try {
    fusednorm::layer_norm_act(x, {3}, std::nullopt, std::nullopt);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("normalized_shape [3] must match the trailing dimensions"), std::string::npos)
        << e.what();
  }
  try {
    fusednorm::rms_norm_act(x, {4}, torch::ones({5}));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight must have shape normalized_shape [4]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fusednorm::rms_norm_act(x, {4}, std::nullopt, std::nullopt, std::nullopt, "not_an_activation"),
               c10::Error);
}

}  // namespace
