// What the autograd Functions of the fused norms share: saving the arguments their
// backward op reads again, turning autograd's bookkeeping into the backward op's
// output_mask, and its gradients back into one entry per forward argument.
#pragma once

#include <torch/autograd.h>

#include <array>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "fusednorm/ops.h"

namespace fusednorm::autograd_detail {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::optional<at::Tensor> as_optional(const at::Tensor& t);

// Position of each optional tensor argument among the variables autograd tracks
// (input is 0); -1 when absent. Absent optionals are not tracked, so later
// positions shift.
std::vector<int64_t> tracked_positions(std::initializer_list<const std::optional<at::Tensor>*> optionals);

// Where weight, bias, residual and activation_weight sit in a forward op's
// argument list, and how many arguments it has.
struct ArgumentPositions {
  size_t count;
  size_t weight;
  size_t bias;
  size_t residual;
  size_t activation_weight;
};

// The forward arguments every fused norm has.
struct NormActArgs {
  const at::Tensor& input;
  const std::optional<at::Tensor>& weight;
  const std::optional<at::Tensor>& bias;
  const std::optional<at::Tensor>& residual;
  const std::string& activation;
  const std::vector<double>& activation_params;
  const std::optional<at::Tensor>& activation_weight;
  const std::optional<at::Tensor>& activation_seed;
};

// In forward: saves args and the op's statistics outputs (marked non-differentiable).
// tracked: tracked positions (see tracked_positions) of weight, bias, residual,
// activation_weight.
void save_norm_act(AutogradContext* ctx, const NormActArgs& args, const std::vector<at::Tensor>& stats,
                   std::array<int64_t, 4> tracked);

// In backward: what save_norm_act saved, the incoming gradient and the output_mask.
struct SavedNormAct {
  SavedNormAct(AutogradContext* ctx, const variable_list& grad_outputs);

  at::Tensor grad_out;
  at::Tensor input;
  std::optional<at::Tensor> weight, bias, residual, activation_weight, activation_seed;
  std::vector<at::Tensor> stats;
  std::string activation;
  std::vector<double> activation_params;
  std::array<bool, 5> output_mask{};

  // The backward op's gradients as one entry per forward argument.
  variable_list gradients(const NormActGrads& grads, const ArgumentPositions& positions) const;
};

// Running statistics updated in place below autograd: tell autograd.
void bump_versions_if(bool updated, std::initializer_list<const std::optional<at::Tensor>*> stats);

// Autograd of the ops with batch_norm_act's signature (batch_norm_act,
// instance_norm_act): `use_batch_stats` is `training` / `use_input_stats`, which
// is also when the running statistics are updated.
template <auto ForwardOp, auto BackwardOp>
class RunningStatsNormFunction : public torch::autograd::Function<RunningStatsNormFunction<ForwardOp, BackwardOp>> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                               const std::optional<at::Tensor>& running_var, const std::optional<at::Tensor>& residual,
                               bool use_batch_stats, double momentum, double eps, std::string activation,
                               std::vector<double> activation_params,
                               const std::optional<at::Tensor>& activation_weight,
                               const std::optional<at::Tensor>& activation_seed) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, save_mean, save_invstd] =
        ForwardOp(input, weight, bias, running_mean, running_var, residual, use_batch_stats, momentum, eps, activation,
                  activation_params, activation_weight, activation_seed);
    const auto t = tracked_positions(
        {&weight, &bias, &running_mean, &running_var, &residual, &activation_weight, &activation_seed});
    save_norm_act(ctx,
                  {input, weight, bias, residual, activation, activation_params, activation_weight, activation_seed},
                  {save_mean, save_invstd}, {t[0], t[1], t[4], t[5]});
    ctx->saved_data["use_batch_stats"] = use_batch_stats;
    return {out, save_mean, save_invstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const SavedNormAct s(ctx, grad_outputs);
    const auto grads = BackwardOp(s.grad_out, s.input, s.weight, s.bias, s.residual, s.stats[0], s.stats[1],
                                  ctx->saved_data["use_batch_stats"].toBool(), s.activation, s.activation_params,
                                  s.activation_weight, s.activation_seed, s.output_mask);
    return s.gradients(grads, {.count = 13, .weight = 1, .bias = 2, .residual = 5, .activation_weight = 11});
  }
};

// The Autograd kernel of such an op.
template <auto ForwardOp, auto BackwardOp>
std::tuple<at::Tensor, at::Tensor, at::Tensor> running_stats_norm_autograd(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& residual, bool use_batch_stats, double momentum, double eps,
    c10::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  auto outputs = RunningStatsNormFunction<ForwardOp, BackwardOp>::apply(
      input, weight, bias, running_mean, running_var, residual, use_batch_stats, momentum, eps, std::string(activation),
      activation_params.vec(), activation_weight, activation_seed);
  bump_versions_if(use_batch_stats, {&running_mean, &running_var});
  return {outputs[0], outputs[1], outputs[2]};
}

}  // namespace fusednorm::autograd_detail
