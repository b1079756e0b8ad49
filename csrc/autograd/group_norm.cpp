// Autograd for fusednorm::group_norm_act, in C++ so LibTorch programs get
// gradients too. Calls only the ops (via include/fusednorm/ops.h).
#include <torch/library.h>

#include "fusednorm/ops.h"
#include "norm_act_function.h"

namespace fusednorm {
namespace {

using namespace autograd_detail;

class GroupNormActFunction : public torch::autograd::Function<GroupNormActFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, int64_t num_groups,
                               const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                               const std::optional<at::Tensor>& residual, double eps, std::string activation,
                               std::vector<double> activation_params,
                               const std::optional<at::Tensor>& activation_weight,
                               const std::optional<at::Tensor>& activation_seed) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, save_mean, save_invstd] = group_norm_act(input, num_groups, weight, bias, residual, eps, activation,
                                                        activation_params, activation_weight, activation_seed);
    const auto t = tracked_positions({&weight, &bias, &residual, &activation_weight, &activation_seed});
    save_norm_act(ctx,
                  {input, weight, bias, residual, activation, activation_params, activation_weight, activation_seed},
                  {save_mean, save_invstd}, {t[0], t[1], t[2], t[3]});
    ctx->saved_data["num_groups"] = num_groups;
    return {out, save_mean, save_invstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const SavedNormAct s(ctx, grad_outputs);
    const auto grads = group_norm_act_backward(
        s.grad_out, s.input, ctx->saved_data["num_groups"].toInt(), s.weight, s.bias, s.residual, s.stats[0],
        s.stats[1], s.activation, s.activation_params, s.activation_weight, s.activation_seed, s.output_mask);
    return s.gradients(grads, {.count = 10, .weight = 2, .bias = 3, .residual = 4, .activation_weight = 8});
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_act_autograd(
    const at::Tensor& input, int64_t num_groups, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    c10::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  auto outputs = GroupNormActFunction::apply(input, num_groups, weight, bias, residual, eps, std::string(activation),
                                             activation_params.vec(), activation_weight, activation_seed);
  return {outputs[0], outputs[1], outputs[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusednorm, Autograd, m) { m.impl("group_norm_act", &group_norm_act_autograd); }

}  // namespace fusednorm
