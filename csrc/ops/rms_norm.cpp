// fusednorm::rms_norm_act and its backward: schemas, the thin RMS-norm layer over
// the row-norm engine (ops/row_norm.h), meta kernels, and the C++ entry points of
// include/fusednorm/ops.h.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "fusednorm/ops.h"
#include "op_utils.h"
#include "row_norm.h"

namespace fusednorm {
namespace detail {
namespace {

constexpr std::string_view kOp = "rms_norm_act";
constexpr std::string_view kBackwardOp = "_rms_norm_act_backward";

std::tuple<at::Tensor, at::Tensor> rms_norm_act_forward(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                                                        const std::optional<at::Tensor>& weight,
                                                        const std::optional<at::Tensor>& residual,
                                                        std::optional<double> eps, c10::string_view activation,
                                                        c10::ArrayRef<double> activation_params,
                                                        const std::optional<at::Tensor>& activation_weight,
                                                        const std::optional<at::Tensor>& activation_seed) {
  auto [out, mean, rstd] = row_norm_forward(kOp, RowNormMode::kRMSNorm, input, normalized_shape, weight, std::nullopt,
                                            residual, eps.value_or(default_rms_norm_eps(input.scalar_type())),
                                            {activation, activation_params, activation_weight, activation_seed});
  return {out, rstd};
}

std::tuple<at::Tensor, at::Tensor> rms_norm_act_meta(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                                                     const std::optional<at::Tensor>& weight,
                                                     const std::optional<at::Tensor>& residual,
                                                     std::optional<double> eps, c10::string_view activation,
                                                     c10::ArrayRef<double>, const std::optional<at::Tensor>&,
                                                     const std::optional<at::Tensor>&) {
  auto [out, mean, rstd] = row_norm_forward_meta(kOp, RowNormMode::kRMSNorm, input, normalized_shape, weight,
                                                 std::nullopt, residual, eps, activation);
  return {out, rstd};
}

// The row-norm gradients without the bias entry RMS norm does not have.
RowNormGradMask row_norm_mask(std::array<bool, 4> output_mask) {
  return {output_mask[0], output_mask[1], false, output_mask[2], output_mask[3]};
}

RmsNormActGrads to_rms_norm_act_grads(const RowNormGrads& g) {
  return {optional_of(g[kGradInput]), optional_of(g[kGradWeight]), optional_of(g[kGradResidual]),
          optional_of(g[kGradActivationWeight])};
}

RmsNormActGrads rms_norm_act_backward_impl(const at::Tensor& grad_out, const at::Tensor& input,
                                           c10::SymIntArrayRef normalized_shape,
                                           const std::optional<at::Tensor>& weight,
                                           const std::optional<at::Tensor>& residual, const at::Tensor& rstd,
                                           c10::string_view activation, c10::ArrayRef<double> activation_params,
                                           const std::optional<at::Tensor>& activation_weight,
                                           const std::optional<at::Tensor>& activation_seed,
                                           std::array<bool, 4> output_mask) {
  return to_rms_norm_act_grads(row_norm_backward(kBackwardOp, RowNormMode::kRMSNorm, grad_out, input, normalized_shape,
                                                 weight, std::nullopt, residual, at::Tensor(), rstd,
                                                 {activation, activation_params, activation_weight, activation_seed},
                                                 row_norm_mask(output_mask)));
}

RmsNormActGrads rms_norm_act_backward_meta(const at::Tensor& grad_out, const at::Tensor& input,
                                           c10::SymIntArrayRef normalized_shape,
                                           const std::optional<at::Tensor>& weight,
                                           const std::optional<at::Tensor>& residual, const at::Tensor&,
                                           c10::string_view activation, c10::ArrayRef<double> activation_params,
                                           const std::optional<at::Tensor>& activation_weight,
                                           const std::optional<at::Tensor>& activation_seed,
                                           std::array<bool, 4> output_mask) {
  return to_rms_norm_act_grads(row_norm_backward_meta(
      kBackwardOp, grad_out, input, normalized_shape, weight, std::nullopt, residual,
      {activation, activation_params, activation_weight, activation_seed}, row_norm_mask(output_mask)));
}

}  // namespace
}  // namespace detail

TORCH_LIBRARY_FRAGMENT(fusednorm, m) {
  m.def(
      "rms_norm_act(Tensor input, SymInt[] normalized_shape, Tensor? weight, Tensor? residual, float? eps, "
      "str activation=\"identity\", float[] activation_params=[], Tensor? activation_weight=None, "
      "Tensor? activation_seed=None) -> (Tensor, Tensor)");
  m.def(
      "_rms_norm_act_backward(Tensor grad_out, Tensor input, SymInt[] normalized_shape, Tensor? weight, "
      "Tensor? residual, Tensor rstd, str activation, float[] activation_params, Tensor? activation_weight, "
      "Tensor? activation_seed, bool[4] output_mask) -> (Tensor?, Tensor?, Tensor?, Tensor?)");
}

TORCH_LIBRARY_IMPL(fusednorm, CPU, m) {
  m.impl("rms_norm_act", &detail::rms_norm_act_forward);
  m.impl("_rms_norm_act_backward", &detail::rms_norm_act_backward_impl);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(fusednorm, CUDA, m) {
  m.impl("rms_norm_act", &detail::rms_norm_act_forward);
  m.impl("_rms_norm_act_backward", &detail::rms_norm_act_backward_impl);
}
#endif

TORCH_LIBRARY_IMPL(fusednorm, Meta, m) {
  m.impl("rms_norm_act", &detail::rms_norm_act_meta);
  m.impl("_rms_norm_act_backward", &detail::rms_norm_act_backward_meta);
}

std::tuple<at::Tensor, at::Tensor> rms_norm_act_symint(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                                                       const std::optional<at::Tensor>& weight,
                                                       const std::optional<at::Tensor>& residual,
                                                       std::optional<double> eps, std::string_view activation,
                                                       c10::ArrayRef<double> activation_params,
                                                       const std::optional<at::Tensor>& activation_weight,
                                                       const std::optional<at::Tensor>& activation_seed) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusednorm::rms_norm_act", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(
              const at::Tensor&, c10::SymIntArrayRef, const std::optional<at::Tensor>&,
              const std::optional<at::Tensor>&, std::optional<double>, c10::string_view, c10::ArrayRef<double>,
              const std::optional<at::Tensor>&, const std::optional<at::Tensor>&)>();
  return op.call(input, normalized_shape, weight, residual, eps, c10::string_view(activation.data(), activation.size()),
                 activation_params, activation_weight, activation_seed);
}

std::tuple<at::Tensor, at::Tensor> rms_norm_act(const at::Tensor& input, at::IntArrayRef normalized_shape,
                                                const std::optional<at::Tensor>& weight,
                                                const std::optional<at::Tensor>& residual, std::optional<double> eps,
                                                std::string_view activation, c10::ArrayRef<double> activation_params,
                                                const std::optional<at::Tensor>& activation_weight,
                                                const std::optional<at::Tensor>& activation_seed) {
  return rms_norm_act_symint(input, c10::fromIntArrayRefSlow(normalized_shape), weight, residual, eps, activation,
                             activation_params, activation_weight, activation_seed);
}

RmsNormActGrads rms_norm_act_backward_symint(const at::Tensor& grad_out, const at::Tensor& input,
                                             c10::SymIntArrayRef normalized_shape,
                                             const std::optional<at::Tensor>& weight,
                                             const std::optional<at::Tensor>& residual, const at::Tensor& rstd,
                                             std::string_view activation, c10::ArrayRef<double> activation_params,
                                             const std::optional<at::Tensor>& activation_weight,
                                             const std::optional<at::Tensor>& activation_seed,
                                             std::array<bool, 4> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fusednorm::_rms_norm_act_backward", "")
                       .typed<RmsNormActGrads(
                           const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef, const std::optional<at::Tensor>&,
                           const std::optional<at::Tensor>&, const at::Tensor&, c10::string_view, c10::ArrayRef<double>,
                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, std::array<bool, 4>)>();
  return op.call(grad_out, input, normalized_shape, weight, residual, rstd,
                 c10::string_view(activation.data(), activation.size()), activation_params, activation_weight,
                 activation_seed, output_mask);
}

RmsNormActGrads rms_norm_act_backward(const at::Tensor& grad_out, const at::Tensor& input,
                                      at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
                                      const std::optional<at::Tensor>& residual, const at::Tensor& rstd,
                                      std::string_view activation, c10::ArrayRef<double> activation_params,
                                      const std::optional<at::Tensor>& activation_weight,
                                      const std::optional<at::Tensor>& activation_seed,
                                      std::array<bool, 4> output_mask) {
  return rms_norm_act_backward_symint(grad_out, input, c10::fromIntArrayRefSlow(normalized_shape), weight, residual,
                                      rstd, activation, activation_params, activation_weight, activation_seed,
                                      output_mask);
}

}  // namespace fusednorm
