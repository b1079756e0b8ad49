// fusednorm::group_norm_act and its backward: schemas, checks shared by the real
// and meta kernels, the group-norm combine on top of the channel-norm engine
// (statistics per (sample, group), coefficients per (sample, channel)), meta
// kernels and the C++ entry points of include/fusednorm/ops.h.
#include "group_norm.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "activation_spec.h"
#include "channel_norm.h"
#include "fusednorm/ops.h"
#include "norm_common.h"

namespace fusednorm {
namespace detail {

std::pair<at::Tensor, at::Tensor> group_moments(const ChannelView& view, int64_t groups) {
  const StatLayout layout{view.N, view.C, groups, /*over_batch=*/false};
  auto [partial_mean, partial_m2, count] = partial_moments(view);
  auto [mean, var] = layout_moments(layout, partial_mean, partial_m2, count, view.S);
  return {mean.reshape({view.N, groups}), var.reshape({view.N, groups})};
}

NormTerm group_term(const ChannelView& view, int64_t groups, const at::Tensor& mean, const at::Tensor& invstd,
                    bool stats_from_input) {
  NormTerm term;
  term.layout = StatLayout{view.N, view.C, groups, /*over_batch=*/false};
  term.mean = mean.reshape(term.layout.shape());
  term.invstd = invstd.reshape(term.layout.shape());
  term.mean_from_input = term.var_from_input = stats_from_input;
  return term;
}

namespace {

constexpr std::string_view kOp = "group_norm_act";

void check_groups(std::string_view op, const at::Tensor& input, int64_t num_groups) {
  TORCH_CHECK(num_groups > 0, op, ": num_groups must be positive, got ", num_groups);
  TORCH_CHECK(input.sym_size(1) % num_groups == 0, op, ": the number of channels of input (", input.sym_size(1),
              ") must be divisible by num_groups (", num_groups, "), got input of shape ", input.sym_sizes());
}

void check_forward_args(const at::Tensor& input, int64_t num_groups, const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
                        c10::string_view activation) {
  check_input(kOp, input, /*any_rank=*/true);
  check_groups(kOp, input, num_groups);
  check_common_forward_args(kOp, input, weight, bias, residual, eps, activation);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_act_forward(
    const at::Tensor& input, int64_t num_groups, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    c10::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  check_forward_args(input, num_groups, weight, bias, residual, eps, activation);
  const ChannelView view = canonicalize(input);
  const ActivationArgs act =
      make_activation_args(kOp, activation, activation_params, activation_weight, activation_seed, view.C, input);
  auto [mean, var] = group_moments(view, num_groups);
  const at::Tensor invstd = invstd_from_var(var, eps);
  at::Tensor out =
      forward_from_terms(view, residual, weight, bias, {group_term(view, num_groups, mean, invstd, true)}, act);
  return {out, mean, invstd};
}

NormActGrads group_norm_act_backward_impl(
    const at::Tensor& grad_out, const at::Tensor& input, int64_t num_groups, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, const at::Tensor& save_mean,
    const at::Tensor& save_invstd, c10::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed,
    std::array<bool, 5> output_mask) {
  constexpr std::string_view op = "_group_norm_act_backward";
  return backward_op(op, grad_out, input, weight, bias, residual, activation, activation_params, activation_weight,
                     activation_seed, output_mask, /*any_rank=*/true, [&](const ChannelView& view, at::ScalarType acc) {
                       check_groups(op, input, num_groups);
                       return std::vector<NormTerm>{group_term(view, num_groups, save_mean.to(acc).contiguous(),
                                                               save_invstd.to(acc).contiguous(), true)};
                     });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_act_meta(
    const at::Tensor& input, int64_t num_groups, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    c10::string_view activation, c10::ArrayRef<double>, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&) {
  check_forward_args(input, num_groups, weight, bias, residual, eps, activation);
  const auto stats_options = input.options().dtype(accumulation_dtype(input.scalar_type()));
  return {dense_like(input), at::empty_symint({input.sym_size(0), num_groups}, stats_options),
          at::empty_symint({input.sym_size(0), num_groups}, stats_options)};
}

NormActGrads group_norm_act_backward_meta(const at::Tensor&, const at::Tensor& input, int64_t num_groups,
                                          const std::optional<at::Tensor>& weight,
                                          const std::optional<at::Tensor>& bias,
                                          const std::optional<at::Tensor>& residual, const at::Tensor&,
                                          const at::Tensor&, c10::string_view, c10::ArrayRef<double>,
                                          const std::optional<at::Tensor>& activation_weight,
                                          const std::optional<at::Tensor>&, std::array<bool, 5> output_mask) {
  check_input("_group_norm_act_backward", input, /*any_rank=*/true);
  check_groups("_group_norm_act_backward", input, num_groups);
  return backward_meta_outputs(input, weight, bias, residual, activation_weight, output_mask);
}

using GroupNormSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, int64_t, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, double, c10::string_view, c10::ArrayRef<double>, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&);
using GroupNormBackwardSignature = NormActGrads(const at::Tensor&, const at::Tensor&, int64_t,
                                                const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                                const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
                                                c10::string_view, c10::ArrayRef<double>,
                                                const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                                std::array<bool, 5>);

}  // namespace
}  // namespace detail

TORCH_LIBRARY_FRAGMENT(fusednorm, m) {
  m.def(
      "group_norm_act(Tensor input, int num_groups, Tensor? weight, Tensor? bias, Tensor? residual, float eps, "
      "str activation=\"identity\", float[] activation_params=[], Tensor? activation_weight=None, "
      "Tensor? activation_seed=None) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_group_norm_act_backward(Tensor grad_out, Tensor input, int num_groups, Tensor? weight, Tensor? bias, "
      "Tensor? residual, Tensor save_mean, Tensor save_invstd, str activation, float[] activation_params, "
      "Tensor? activation_weight, Tensor? activation_seed, bool[5] output_mask) "
      "-> (Tensor?, Tensor?, Tensor?, Tensor?, Tensor?)");
}

TORCH_LIBRARY_IMPL(fusednorm, CPU, m) {
  m.impl("group_norm_act", &detail::group_norm_act_forward);
  m.impl("_group_norm_act_backward", &detail::group_norm_act_backward_impl);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(fusednorm, CUDA, m) {
  m.impl("group_norm_act", &detail::group_norm_act_forward);
  m.impl("_group_norm_act_backward", &detail::group_norm_act_backward_impl);
}
#endif

TORCH_LIBRARY_IMPL(fusednorm, Meta, m) {
  m.impl("group_norm_act", &detail::group_norm_act_meta);
  m.impl("_group_norm_act_backward", &detail::group_norm_act_backward_meta);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_act(
    const at::Tensor& input, int64_t num_groups, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    std::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  static auto op = detail::typed_op<detail::GroupNormSignature>("fusednorm::group_norm_act");
  return op.call(input, num_groups, weight, bias, residual, eps, activation, activation_params, activation_weight,
                 activation_seed);
}

NormActGrads group_norm_act_backward(const at::Tensor& grad_out, const at::Tensor& input, int64_t num_groups,
                                     const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                     const std::optional<at::Tensor>& residual, const at::Tensor& save_mean,
                                     const at::Tensor& save_invstd, std::string_view activation,
                                     c10::ArrayRef<double> activation_params,
                                     const std::optional<at::Tensor>& activation_weight,
                                     const std::optional<at::Tensor>& activation_seed,
                                     std::array<bool, 5> output_mask) {
  static auto op = detail::typed_op<detail::GroupNormBackwardSignature>("fusednorm::_group_norm_act_backward");
  return op.call(grad_out, input, num_groups, weight, bias, residual, save_mean, save_invstd, activation,
                 activation_params, activation_weight, activation_seed, output_mask);
}

}  // namespace fusednorm
