// Autograd for fusednorm::layer_norm_act and fusednorm::rms_norm_act, in C++ so
// LibTorch programs get gradients too. Calls only the ops (via
// include/fusednorm/ops.h). normalized_shape is not saved: it is the trailing
// normalized_ndim sizes of the saved input.
#include <torch/autograd.h>
#include <torch/library.h>

#include "function_utils.h"
#include "fusednorm/ops.h"

namespace fusednorm {
namespace {

using autograd_detail::as_optional;
using autograd_detail::grads_by_argument;
using autograd_detail::tracked_needs_grad;
using autograd_detail::tracked_positions;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What both functions keep besides the saved tensors.
void save_row_norm_data(AutogradContext* ctx, c10::SymIntArrayRef normalized_shape, const std::string& activation,
                        const std::vector<double>& activation_params, std::vector<int64_t> tracked) {
  ctx->saved_data["normalized_ndim"] = static_cast<int64_t>(normalized_shape.size());
  ctx->saved_data["activation"] = activation;
  ctx->saved_data["activation_params"] = activation_params;
  ctx->saved_data["tracked"] = std::move(tracked);
}

c10::SymIntArrayRef saved_normalized_shape(AutogradContext* ctx, const at::Tensor& input) {
  return input.sym_sizes().slice(input.dim() - ctx->saved_data["normalized_ndim"].toInt());
}

at::Tensor grad_or_zeros(const at::Tensor& grad, const at::Tensor& input) {
  return grad.defined() ? grad : at::zeros_like(input, at::MemoryFormat::Contiguous);
}

class LayerNormActFunction : public torch::autograd::Function<LayerNormActFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                               const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                               const std::optional<at::Tensor>& residual, double eps, const std::string& activation,
                               const std::vector<double>& activation_params,
                               const std::optional<at::Tensor>& activation_weight,
                               const std::optional<at::Tensor>& activation_seed) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, mean, rstd] = layer_norm_act_symint(input, normalized_shape, weight, bias, residual, eps, activation,
                                                   activation_params, activation_weight, activation_seed);
    ctx->save_for_backward({input, weight.value_or(at::Tensor()), bias.value_or(at::Tensor()),
                            residual.value_or(at::Tensor()), mean, rstd, activation_weight.value_or(at::Tensor()),
                            activation_seed.value_or(at::Tensor())});
    save_row_norm_data(ctx, normalized_shape, activation, activation_params,
                       tracked_positions<5>({&weight, &bias, &residual, &activation_weight, &activation_seed}));
    ctx->mark_non_differentiable({mean, rstd});
    return {out, mean, rstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const std::array<bool, 5> mask{ctx->needs_input_grad(0), tracked_needs_grad(ctx, 0), tracked_needs_grad(ctx, 1),
                                   tracked_needs_grad(ctx, 2), tracked_needs_grad(ctx, 3)};
    auto [grad_input, grad_weight, grad_bias, grad_residual, grad_activation_weight] = layer_norm_act_backward_symint(
        grad_or_zeros(grad_outputs[0], input), input, saved_normalized_shape(ctx, input), as_optional(saved[1]),
        as_optional(saved[2]), as_optional(saved[3]), saved[4], saved[5], ctx->saved_data["activation"].toStringRef(),
        ctx->saved_data["activation_params"].toDoubleVector(), as_optional(saved[6]), as_optional(saved[7]), mask);
    // Positions in forward's argument list (input, normalized_shape, weight, bias,
    // residual, eps, activation, activation_params, activation_weight, activation_seed).
    return grads_by_argument(
        10, {{0, grad_input}, {2, grad_weight}, {3, grad_bias}, {4, grad_residual}, {8, grad_activation_weight}});
  }
};

class RmsNormActFunction : public torch::autograd::Function<RmsNormActFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                               const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& residual,
                               std::optional<double> eps, const std::string& activation,
                               const std::vector<double>& activation_params,
                               const std::optional<at::Tensor>& activation_weight,
                               const std::optional<at::Tensor>& activation_seed) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, rstd] = rms_norm_act_symint(input, normalized_shape, weight, residual, eps, activation,
                                           activation_params, activation_weight, activation_seed);
    ctx->save_for_backward({input, weight.value_or(at::Tensor()), residual.value_or(at::Tensor()), rstd,
                            activation_weight.value_or(at::Tensor()), activation_seed.value_or(at::Tensor())});
    save_row_norm_data(ctx, normalized_shape, activation, activation_params,
                       tracked_positions<4>({&weight, &residual, &activation_weight, &activation_seed}));
    ctx->mark_non_differentiable({rstd});
    return {out, rstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const std::array<bool, 4> mask{ctx->needs_input_grad(0), tracked_needs_grad(ctx, 0), tracked_needs_grad(ctx, 1),
                                   tracked_needs_grad(ctx, 2)};
    auto [grad_input, grad_weight, grad_residual, grad_activation_weight] = rms_norm_act_backward_symint(
        grad_or_zeros(grad_outputs[0], input), input, saved_normalized_shape(ctx, input), as_optional(saved[1]),
        as_optional(saved[2]), saved[3], ctx->saved_data["activation"].toStringRef(),
        ctx->saved_data["activation_params"].toDoubleVector(), as_optional(saved[4]), as_optional(saved[5]), mask);
    // Positions in forward's argument list (input, normalized_shape, weight,
    // residual, eps, activation, activation_params, activation_weight, activation_seed).
    return grads_by_argument(9, {{0, grad_input}, {2, grad_weight}, {3, grad_residual}, {7, grad_activation_weight}});
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_autograd(
    const at::Tensor& input, c10::SymIntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    c10::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  auto outputs =
      LayerNormActFunction::apply(input, normalized_shape, weight, bias, residual, eps, std::string(activation),
                                  activation_params.vec(), activation_weight, activation_seed);
  return {outputs[0], outputs[1], outputs[2]};
}

std::tuple<at::Tensor, at::Tensor> rms_norm_act_autograd(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                                                         const std::optional<at::Tensor>& weight,
                                                         const std::optional<at::Tensor>& residual,
                                                         std::optional<double> eps, c10::string_view activation,
                                                         c10::ArrayRef<double> activation_params,
                                                         const std::optional<at::Tensor>& activation_weight,
                                                         const std::optional<at::Tensor>& activation_seed) {
  auto outputs = RmsNormActFunction::apply(input, normalized_shape, weight, residual, eps, std::string(activation),
                                           activation_params.vec(), activation_weight, activation_seed);
  return {outputs[0], outputs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusednorm, Autograd, m) {
  m.impl("layer_norm_act", &layer_norm_act_autograd);
  m.impl("rms_norm_act", &rms_norm_act_autograd);
}

}  // namespace fusednorm
