#include "norm_act_function.h"

namespace fusednorm::autograd_detail {

std::optional<at::Tensor> as_optional(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

std::vector<int64_t> tracked_positions(std::initializer_list<const std::optional<at::Tensor>*> optionals) {
  std::vector<int64_t> positions;
  int64_t next = 1;
  for (const auto* t : optionals) {
    positions.push_back(t->has_value() && (*t)->defined() ? next++ : -1);
  }
  return positions;
}

namespace {
constexpr size_t kNumArgTensors = 6;  // input, weight, bias, residual, activation_weight, activation_seed
}  // namespace

void save_norm_act(AutogradContext* ctx, const NormActArgs& args, const std::vector<at::Tensor>& stats,
                   std::array<int64_t, 4> tracked) {
  std::vector<at::Tensor> saved{args.input,
                                args.weight.value_or(at::Tensor()),
                                args.bias.value_or(at::Tensor()),
                                args.residual.value_or(at::Tensor()),
                                args.activation_weight.value_or(at::Tensor()),
                                args.activation_seed.value_or(at::Tensor())};
  saved.insert(saved.end(), stats.begin(), stats.end());
  ctx->save_for_backward(saved);
  ctx->saved_data["activation"] = args.activation;
  ctx->saved_data["activation_params"] = args.activation_params;
  ctx->saved_data["tracked"] = std::vector<int64_t>(tracked.begin(), tracked.end());
  ctx->mark_non_differentiable(stats);
}

SavedNormAct::SavedNormAct(AutogradContext* ctx, const variable_list& grad_outputs) {
  const auto saved = ctx->get_saved_variables();
  input = saved[0];
  weight = as_optional(saved[1]);
  bias = as_optional(saved[2]);
  residual = as_optional(saved[3]);
  activation_weight = as_optional(saved[4]);
  activation_seed = as_optional(saved[5]);
  stats.assign(saved.begin() + kNumArgTensors, saved.end());
  grad_out = grad_outputs[0].defined() ? grad_outputs[0] : at::zeros_like(input);
  activation = ctx->saved_data["activation"].toStringRef();
  activation_params = ctx->saved_data["activation_params"].toDoubleVector();
  const auto tracked = ctx->saved_data["tracked"].toIntVector();
  auto needs = [&](int64_t position) { return position >= 0 && ctx->needs_input_grad(position); };
  output_mask = {ctx->needs_input_grad(0), needs(tracked[0]), needs(tracked[1]), needs(tracked[2]), needs(tracked[3])};
}

variable_list SavedNormAct::gradients(const NormActGrads& grads, const ArgumentPositions& positions) const {
  // Non-tensor and untracked positions stay undefined.
  variable_list out(positions.count);
  const auto& [grad_input, grad_weight, grad_bias, grad_residual, grad_activation_weight] = grads;
  out[0] = grad_input.value_or(at::Tensor());
  out[positions.weight] = grad_weight.value_or(at::Tensor());
  out[positions.bias] = grad_bias.value_or(at::Tensor());
  out[positions.residual] = grad_residual.value_or(at::Tensor());
  out[positions.activation_weight] = grad_activation_weight.value_or(at::Tensor());
  return out;
}

void bump_versions_if(bool updated, std::initializer_list<const std::optional<at::Tensor>*> stats) {
  for (const auto* stat : stats) {
    if (updated && stat->has_value() && (*stat)->defined()) {
      torch::autograd::impl::bump_version(**stat);
    }
  }
}

}  // namespace fusednorm::autograd_detail
