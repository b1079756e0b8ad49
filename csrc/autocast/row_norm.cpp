// Autocast policy of layer_norm_act and rms_norm_act, as batch_norm_act's: run in
// the input's dtype (the kernels accumulate statistics in fp32 anyway) and bring
// a residual of another dtype to the input's.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "fusednorm/ops.h"

namespace fusednorm {
namespace {

std::optional<at::Tensor> residual_in_dtype_of(const std::optional<at::Tensor>& residual, const at::Tensor& input) {
  if (residual.has_value() && residual->defined() && residual->scalar_type() != input.scalar_type()) {
    return residual->to(input.scalar_type());
  }
  return residual;
}

template <c10::DispatchKey AutocastKey>
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_autocast(
    const at::Tensor& input, c10::SymIntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    c10::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(AutocastKey);
  return layer_norm_act_symint(input, normalized_shape, weight, bias, residual_in_dtype_of(residual, input), eps,
                               activation, activation_params, activation_weight, activation_seed);
}

template <c10::DispatchKey AutocastKey>
std::tuple<at::Tensor, at::Tensor> rms_norm_act_autocast(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                                                         const std::optional<at::Tensor>& weight,
                                                         const std::optional<at::Tensor>& residual,
                                                         std::optional<double> eps, c10::string_view activation,
                                                         c10::ArrayRef<double> activation_params,
                                                         const std::optional<at::Tensor>& activation_weight,
                                                         const std::optional<at::Tensor>& activation_seed) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(AutocastKey);
  return rms_norm_act_symint(input, normalized_shape, weight, residual_in_dtype_of(residual, input), eps, activation,
                             activation_params, activation_weight, activation_seed);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusednorm, AutocastCPU, m) {
  m.impl("layer_norm_act", &layer_norm_act_autocast<c10::DispatchKey::AutocastCPU>);
  m.impl("rms_norm_act", &rms_norm_act_autocast<c10::DispatchKey::AutocastCPU>);
}

TORCH_LIBRARY_IMPL(fusednorm, AutocastCUDA, m) {
  m.impl("layer_norm_act", &layer_norm_act_autocast<c10::DispatchKey::AutocastCUDA>);
  m.impl("rms_norm_act", &rms_norm_act_autocast<c10::DispatchKey::AutocastCUDA>);
}

}  // namespace fusednorm
