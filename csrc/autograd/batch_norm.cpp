// Autograd for fusednorm::batch_norm_act, in C++ so LibTorch programs get
// gradients too. Calls only the ops (via include/fusednorm/ops.h).
#include <torch/autograd.h>
#include <torch/library.h>

#include "function_utils.h"
#include "fusednorm/ops.h"

namespace fusednorm {
namespace {

using autograd_detail::as_optional;
using autograd_detail::tracked_positions;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class BatchNormActFunction : public torch::autograd::Function<BatchNormActFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                               const std::optional<at::Tensor>& running_var, const std::optional<at::Tensor>& residual,
                               bool training, double momentum, double eps, std::string activation,
                               std::vector<double> activation_params, const std::optional<at::Tensor>& activation_weight,
                               const std::optional<at::Tensor>& activation_seed) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, save_mean, save_invstd] =
        batch_norm_act(input, weight, bias, running_mean, running_var, residual, training, momentum, eps, activation,
                       activation_params, activation_weight, activation_seed);
    ctx->save_for_backward({input, weight.value_or(at::Tensor()), bias.value_or(at::Tensor()),
                            residual.value_or(at::Tensor()), save_mean, save_invstd,
                            activation_weight.value_or(at::Tensor()), activation_seed.value_or(at::Tensor())});
    ctx->saved_data["training"] = training;
    ctx->saved_data["activation"] = activation;
    ctx->saved_data["activation_params"] = activation_params;
    ctx->saved_data["tracked"] = tracked_positions<7>(
        {&weight, &bias, &running_mean, &running_var, &residual, &activation_weight, &activation_seed});
    ctx->mark_non_differentiable({save_mean, save_invstd});
    return {out, save_mean, save_invstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    at::Tensor grad_out = grad_outputs[0];
    if (!grad_out.defined()) {
      grad_out = at::zeros_like(input);
    }
    const auto tracked = ctx->saved_data["tracked"].toIntVector();
    auto needs = [&](int64_t position) { return position >= 0 && ctx->needs_input_grad(position); };
    const std::array<bool, 5> mask{ctx->needs_input_grad(0), needs(tracked[0]), needs(tracked[1]), needs(tracked[4]),
                                   needs(tracked[5])};
    const auto activation_params = ctx->saved_data["activation_params"].toDoubleVector();
    auto [grad_input, grad_weight, grad_bias, grad_residual, grad_activation_weight] = batch_norm_act_backward(
        grad_out, input, as_optional(saved[1]), as_optional(saved[2]), as_optional(saved[3]), saved[4], saved[5],
        ctx->saved_data["training"].toBool(), ctx->saved_data["activation"].toStringRef(), activation_params,
        as_optional(saved[6]), as_optional(saved[7]), mask);
    // One entry per forward argument; non-tensor and untracked positions are ignored.
    return {grad_input.value_or(at::Tensor()),
            grad_weight.value_or(at::Tensor()),
            grad_bias.value_or(at::Tensor()),
            at::Tensor(),
            at::Tensor(),
            grad_residual.value_or(at::Tensor()),
            at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            grad_activation_weight.value_or(at::Tensor()),
            at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_autograd(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& residual, bool training, double momentum, double eps,
    c10::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  auto outputs = BatchNormActFunction::apply(input, weight, bias, running_mean, running_var, residual, training,
                                             momentum, eps, std::string(activation.data(), activation.size()),
                                             activation_params.vec(), activation_weight, activation_seed);
  // The running statistics were updated in place below autograd: tell autograd.
  for (const auto& stat : {running_mean, running_var}) {
    if (training && stat.has_value() && stat->defined()) {
      torch::autograd::impl::bump_version(*stat);
    }
  }
  return {outputs[0], outputs[1], outputs[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusednorm, Autograd, m) {
  m.impl("batch_norm_act", &batch_norm_act_autograd);
}

}  // namespace fusednorm
