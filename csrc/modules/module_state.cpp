#include "module_state.h"

#include <torch/types.h>

namespace fusednorm::detail {

void register_affine(torch::nn::Module& owner, at::IntArrayRef shape, bool with_weight, bool with_bias,
                     at::Tensor& weight, at::Tensor& bias) {
  weight = with_weight ? owner.register_parameter("weight", torch::ones(shape))
                       : owner.register_parameter("weight", at::Tensor(), /*requires_grad=*/false);
  bias = with_bias ? owner.register_parameter("bias", torch::zeros(shape))
                   : owner.register_parameter("bias", at::Tensor(), /*requires_grad=*/false);
}

void reset_affine(const at::Tensor& weight, const at::Tensor& bias) {
  torch::NoGradGuard no_grad;
  if (weight.defined()) {
    weight.fill_(1);
  }
  if (bias.defined()) {
    bias.zero_();
  }
}

void register_running_stats(torch::nn::Module& owner, int64_t channels, bool track_running_stats,
                            at::Tensor& running_mean, at::Tensor& running_var, at::Tensor& num_batches_tracked) {
  if (track_running_stats) {
    running_mean = owner.register_buffer("running_mean", torch::zeros({channels}));
    running_var = owner.register_buffer("running_var", torch::ones({channels}));
    num_batches_tracked = owner.register_buffer("num_batches_tracked", torch::tensor(0, torch::dtype(torch::kLong)));
  } else {
    running_mean = owner.register_buffer("running_mean", at::Tensor());
    running_var = owner.register_buffer("running_var", at::Tensor());
    num_batches_tracked = owner.register_buffer("num_batches_tracked", at::Tensor());
  }
}

void reset_running_stats(const at::Tensor& running_mean, const at::Tensor& running_var,
                         const at::Tensor& num_batches_tracked) {
  torch::NoGradGuard no_grad;
  if (running_mean.defined()) {
    running_mean.zero_();
    running_var.fill_(1);
    num_batches_tracked.zero_();
  }
}

double count_step_and_momentum(bool training, std::optional<double> momentum, const at::Tensor& num_batches_tracked) {
  if (!training || !num_batches_tracked.defined()) {
    return momentum.value_or(0.0);
  }
  torch::NoGradGuard no_grad;
  num_batches_tracked.add_(1);
  return momentum.has_value() ? *momentum : 1.0 / num_batches_tracked.item<double>();
}

}  // namespace fusednorm::detail
