// Autograd for fusednorm::batch_layer_norm_act, in C++ so LibTorch programs get
// gradients too. Calls only the ops (via include/fusednorm/ops.h).
#include <torch/library.h>

#include "fusednorm/ops.h"
#include "norm_act_function.h"

namespace fusednorm {
namespace {

using namespace autograd_detail;

using BatchLayerNormOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

class BatchLayerNormActFunction : public torch::autograd::Function<BatchLayerNormActFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                               const std::optional<at::Tensor>& running_var,
                               const std::optional<at::Tensor>& running_feature_mean,
                               const std::optional<at::Tensor>& running_feature_var,
                               const std::optional<at::Tensor>& residual, bool training, int64_t batch_size,
                               double momentum, double eps, std::array<bool, 4> use_running_stats,
                               std::string activation, std::vector<double> activation_params,
                               const std::optional<at::Tensor>& activation_weight,
                               const std::optional<at::Tensor>& activation_seed) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, batch_mean, batch_invstd, feature_mean, feature_invstd] =
        batch_layer_norm_act(input, weight, bias, running_mean, running_var, running_feature_mean, running_feature_var,
                             residual, training, batch_size, momentum, eps, use_running_stats, activation,
                             activation_params, activation_weight, activation_seed);
    const auto t = tracked_positions({&weight, &bias, &running_mean, &running_var, &running_feature_mean,
                                      &running_feature_var, &residual, &activation_weight, &activation_seed});
    save_norm_act(ctx,
                  {input, weight, bias, residual, activation, activation_params, activation_weight, activation_seed},
                  {batch_mean, batch_invstd, feature_mean, feature_invstd}, {t[0], t[1], t[6], t[7]});
    ctx->saved_data["training"] = training;
    ctx->saved_data["batch_size"] = batch_size;
    ctx->saved_data["use_running_stats"] = std::vector<int64_t>(use_running_stats.begin(), use_running_stats.end());
    return {out, batch_mean, batch_invstd, feature_mean, feature_invstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const SavedNormAct s(ctx, grad_outputs);
    const auto use_running = ctx->saved_data["use_running_stats"].toIntVector();
    const auto grads = batch_layer_norm_act_backward(
        s.grad_out, s.input, s.weight, s.bias, s.residual, s.stats[0], s.stats[1], s.stats[2], s.stats[3],
        ctx->saved_data["training"].toBool(), ctx->saved_data["batch_size"].toInt(),
        {use_running[0] != 0, use_running[1] != 0, use_running[2] != 0, use_running[3] != 0}, s.activation,
        s.activation_params, s.activation_weight, s.activation_seed, s.output_mask);
    return s.gradients(grads, {.count = 17, .weight = 1, .bias = 2, .residual = 7, .activation_weight = 15});
  }
};

BatchLayerNormOutputs batch_layer_norm_act_autograd(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& running_feature_mean, const std::optional<at::Tensor>& running_feature_var,
    const std::optional<at::Tensor>& residual, bool training, int64_t batch_size, double momentum, double eps,
    std::array<bool, 4> use_running_stats, c10::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  auto outputs = BatchLayerNormActFunction::apply(input, weight, bias, running_mean, running_var, running_feature_mean,
                                                  running_feature_var, residual, training, batch_size, momentum, eps,
                                                  use_running_stats, std::string(activation), activation_params.vec(),
                                                  activation_weight, activation_seed);
  bump_versions_if(training, {&running_mean, &running_var, &running_feature_mean, &running_feature_var});
  return {outputs[0], outputs[1], outputs[2], outputs[3], outputs[4]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusednorm, Autograd, m) { m.impl("batch_layer_norm_act", &batch_layer_norm_act_autograd); }

}  // namespace fusednorm
