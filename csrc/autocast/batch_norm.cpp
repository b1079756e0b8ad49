// Autocast policy of batch_norm_act: run in the input's dtype (the kernels
// accumulate statistics in fp32 anyway, so there is nothing to gain from an fp32
// upcast), and bring a residual of another dtype to the input's.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "fusednorm/ops.h"

namespace fusednorm {
namespace {

template <c10::DispatchKey AutocastKey>
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_autocast(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& residual, bool training, double momentum, double eps,
    c10::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(AutocastKey);
  std::optional<at::Tensor> matched_residual = residual;
  if (residual.has_value() && residual->defined() && residual->scalar_type() != input.scalar_type()) {
    matched_residual = residual->to(input.scalar_type());
  }
  return batch_norm_act(input, weight, bias, running_mean, running_var, matched_residual, training, momentum, eps,
                        std::string_view(activation.data(), activation.size()), activation_params, activation_weight,
                        activation_seed);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusednorm, AutocastCPU, m) {
  m.impl("batch_norm_act", &batch_norm_act_autocast<c10::DispatchKey::AutocastCPU>);
}

TORCH_LIBRARY_IMPL(fusednorm, AutocastCUDA, m) {
  m.impl("batch_norm_act", &batch_norm_act_autocast<c10::DispatchKey::AutocastCUDA>);
}

}  // namespace fusednorm
