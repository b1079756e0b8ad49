// fusednorm::layer_norm_act and its backward: schemas, the thin layer-norm layer
// over the row-norm engine (ops/row_norm.h), meta kernels, and the C++ entry
// points of include/fusednorm/ops.h.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "fusednorm/ops.h"
#include "op_utils.h"
#include "row_norm.h"

namespace fusednorm {
namespace detail {
namespace {

constexpr std::string_view kOp = "layer_norm_act";
constexpr std::string_view kBackwardOp = "_layer_norm_act_backward";

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_forward(
    const at::Tensor& input, c10::SymIntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    c10::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  return row_norm_forward(kOp, RowNormMode::kLayerNorm, input, normalized_shape, weight, bias, residual, eps,
                          {activation, activation_params, activation_weight, activation_seed});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_meta(
    const at::Tensor& input, c10::SymIntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    c10::string_view activation, c10::ArrayRef<double>, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&) {
  return row_norm_forward_meta(kOp, RowNormMode::kLayerNorm, input, normalized_shape, weight, bias, residual, eps,
                               activation);
}

NormActGrads to_norm_act_grads(const RowNormGrads& g) {
  return {optional_of(g[kGradInput]), optional_of(g[kGradWeight]), optional_of(g[kGradBias]),
          optional_of(g[kGradResidual]), optional_of(g[kGradActivationWeight])};
}

NormActGrads layer_norm_act_backward_impl(const at::Tensor& grad_out, const at::Tensor& input,
                                          c10::SymIntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
                                          const std::optional<at::Tensor>& bias,
                                          const std::optional<at::Tensor>& residual, const at::Tensor& mean,
                                          const at::Tensor& rstd, c10::string_view activation,
                                          c10::ArrayRef<double> activation_params,
                                          const std::optional<at::Tensor>& activation_weight,
                                          const std::optional<at::Tensor>& activation_seed,
                                          std::array<bool, 5> output_mask) {
  return to_norm_act_grads(
      row_norm_backward(kBackwardOp, RowNormMode::kLayerNorm, grad_out, input, normalized_shape, weight, bias, residual,
                        mean, rstd, {activation, activation_params, activation_weight, activation_seed}, output_mask));
}

NormActGrads layer_norm_act_backward_meta(
    const at::Tensor& grad_out, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& residual, const at::Tensor&, const at::Tensor&, c10::string_view activation,
    c10::ArrayRef<double> activation_params, const std::optional<at::Tensor>& activation_weight,
    const std::optional<at::Tensor>& activation_seed, std::array<bool, 5> output_mask) {
  return to_norm_act_grads(
      row_norm_backward_meta(kBackwardOp, grad_out, input, normalized_shape, weight, bias, residual,
                             {activation, activation_params, activation_weight, activation_seed}, output_mask));
}

}  // namespace
}  // namespace detail

TORCH_LIBRARY_FRAGMENT(fusednorm, m) {
  m.def(
      "layer_norm_act(Tensor input, SymInt[] normalized_shape, Tensor? weight, Tensor? bias, Tensor? residual, "
      "float eps, str activation=\"identity\", float[] activation_params=[], Tensor? activation_weight=None, "
      "Tensor? activation_seed=None) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_layer_norm_act_backward(Tensor grad_out, Tensor input, SymInt[] normalized_shape, Tensor? weight, "
      "Tensor? bias, Tensor? residual, Tensor mean, Tensor rstd, str activation, float[] activation_params, "
      "Tensor? activation_weight, Tensor? activation_seed, bool[5] output_mask) "
      "-> (Tensor?, Tensor?, Tensor?, Tensor?, Tensor?)");
}

TORCH_LIBRARY_IMPL(fusednorm, CPU, m) {
  m.impl("layer_norm_act", &detail::layer_norm_act_forward);
  m.impl("_layer_norm_act_backward", &detail::layer_norm_act_backward_impl);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(fusednorm, CUDA, m) {
  m.impl("layer_norm_act", &detail::layer_norm_act_forward);
  m.impl("_layer_norm_act_backward", &detail::layer_norm_act_backward_impl);
}
#endif

TORCH_LIBRARY_IMPL(fusednorm, Meta, m) {
  m.impl("layer_norm_act", &detail::layer_norm_act_meta);
  m.impl("_layer_norm_act_backward", &detail::layer_norm_act_backward_meta);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_symint(
    const at::Tensor& input, c10::SymIntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    std::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusednorm::layer_norm_act", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, c10::SymIntArrayRef, const std::optional<at::Tensor>&,
              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, double, c10::string_view,
              c10::ArrayRef<double>, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&)>();
  return op.call(input, normalized_shape, weight, bias, residual, eps,
                 c10::string_view(activation.data(), activation.size()), activation_params, activation_weight,
                 activation_seed);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act(
    const at::Tensor& input, at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    std::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  return layer_norm_act_symint(input, c10::fromIntArrayRefSlow(normalized_shape), weight, bias, residual, eps,
                               activation, activation_params, activation_weight, activation_seed);
}

NormActGrads layer_norm_act_backward_symint(
    const at::Tensor& grad_out, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& residual, const at::Tensor& mean, const at::Tensor& rstd,
    std::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed,
    std::array<bool, 5> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fusednorm::_layer_norm_act_backward", "")
                       .typed<NormActGrads(const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef,
                                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                           const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
                                           c10::string_view, c10::ArrayRef<double>, const std::optional<at::Tensor>&,
                                           const std::optional<at::Tensor>&, std::array<bool, 5>)>();
  return op.call(grad_out, input, normalized_shape, weight, bias, residual, mean, rstd,
                 c10::string_view(activation.data(), activation.size()), activation_params, activation_weight,
                 activation_seed, output_mask);
}

NormActGrads layer_norm_act_backward(const at::Tensor& grad_out, const at::Tensor& input,
                                     at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
                                     const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                     const at::Tensor& mean, const at::Tensor& rstd, std::string_view activation,
                                     c10::ArrayRef<double> activation_params,
                                     const std::optional<at::Tensor>& activation_weight,
                                     const std::optional<at::Tensor>& activation_seed,
                                     std::array<bool, 5> output_mask) {
  return layer_norm_act_backward_symint(grad_out, input, c10::fromIntArrayRefSlow(normalized_shape), weight, bias,
                                        residual, mean, rstd, activation, activation_params, activation_weight,
                                        activation_seed, output_mask);
}

}  // namespace fusednorm
