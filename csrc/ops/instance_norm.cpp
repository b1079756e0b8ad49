// fusednorm::instance_norm_act and its backward: instance norm is the group-norm
// path with one group per channel (group_norm.h), plus PyTorch's running
// statistics (averaged over the batch) and their use when use_input_stats=False.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "activation_spec.h"
#include "channel_norm.h"
#include "fusednorm/ops.h"
#include "group_norm.h"
#include "norm_common.h"

namespace fusednorm {
namespace detail {
namespace {

constexpr std::string_view kOp = "instance_norm_act";

c10::SymInt spatial_size(const at::Tensor& input) {
  c10::SymInt size = 1;
  for (int64_t d = 2; d < input.dim(); ++d) {
    size *= input.sym_size(d);
  }
  return size;
}

void check_forward_args(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                        const std::optional<at::Tensor>& running_var, const std::optional<at::Tensor>& residual,
                        bool use_input_stats, double eps, c10::string_view activation) {
  check_input(kOp, input);
  check_common_forward_args(kOp, input, weight, bias, residual, eps, activation);
  check_running_stats(kOp, running_mean, running_var, input);
  TORCH_CHECK(use_input_stats || defined(running_mean), kOp,
              ": running_mean and running_var are required when use_input_stats=False");
  TORCH_CHECK(!use_input_stats || spatial_size(input) > 1, kOp,
              ": expected more than 1 spatial element when use_input_stats=True, got input of shape ",
              input.sym_sizes());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_act_forward(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& residual, bool use_input_stats, double momentum, double eps,
    c10::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  // Every check runs before anything is written, so a rejected call leaves the
  // running statistics untouched.
  check_forward_args(input, weight, bias, running_mean, running_var, residual, use_input_stats, eps, activation);
  const ChannelView view = canonicalize(input);
  const ActivationArgs act =
      make_activation_args(kOp, activation, activation_params, activation_weight, activation_seed, view.C, input);
  at::Tensor mean, invstd;
  if (use_input_stats) {
    auto [instance_mean, instance_var] = group_moments(view, view.C);
    if (defined(running_mean) && input.numel() > 0) {
      // As torch.instance_norm: each instance updates the running statistics like
      // batch norm would, and the updated values are averaged over the batch.
      const double spatial = static_cast<double>(view.S);
      update_running_stat(*running_mean, instance_mean.mean(0), momentum);
      update_running_stat(*running_var, instance_var.mean(0), momentum, spatial / (spatial - 1));
    }
    mean = instance_mean;
    invstd = invstd_from_var(instance_var, eps);
  } else {
    // Copies, never views: outputs of a custom op must not alias its inputs.
    const auto acc = accumulation_dtype(input.scalar_type());
    mean = running_mean->to(acc, /*non_blocking=*/false, /*copy=*/true).expand({view.N, view.C}).contiguous();
    invstd = (running_var->to(acc) + eps).rsqrt_().expand({view.N, view.C}).contiguous();
  }
  at::Tensor out =
      forward_from_terms(view, residual, weight, bias, {group_term(view, view.C, mean, invstd, use_input_stats)}, act);
  return {out, mean, invstd};
}

NormActGrads instance_norm_act_backward_impl(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, const at::Tensor& save_mean,
    const at::Tensor& save_invstd, bool use_input_stats, c10::string_view activation,
    c10::ArrayRef<double> activation_params, const std::optional<at::Tensor>& activation_weight,
    const std::optional<at::Tensor>& activation_seed, std::array<bool, 5> output_mask) {
  return backward_op("_instance_norm_act_backward", grad_out, input, weight, bias, residual, activation,
                     activation_params, activation_weight, activation_seed, output_mask, /*any_rank=*/false,
                     [&](const ChannelView& view, at::ScalarType acc) {
                       return std::vector<NormTerm>{group_term(view, view.C, save_mean.to(acc).contiguous(),
                                                               save_invstd.to(acc).contiguous(), use_input_stats)};
                     });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_act_meta(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& residual, bool use_input_stats, double, double eps, c10::string_view activation,
    c10::ArrayRef<double>, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&) {
  check_forward_args(input, weight, bias, running_mean, running_var, residual, use_input_stats, eps, activation);
  const auto stats_options = input.options().dtype(accumulation_dtype(input.scalar_type()));
  return {dense_like(input), at::empty_symint({input.sym_size(0), input.sym_size(1)}, stats_options),
          at::empty_symint({input.sym_size(0), input.sym_size(1)}, stats_options)};
}

}  // namespace
}  // namespace detail

TORCH_LIBRARY_FRAGMENT(fusednorm, m) {
  m.def(
      "instance_norm_act(Tensor input, Tensor? weight, Tensor? bias, Tensor(a!)? running_mean, "
      "Tensor(b!)? running_var, Tensor? residual, bool use_input_stats, float momentum, float eps, "
      "str activation=\"identity\", float[] activation_params=[], Tensor? activation_weight=None, "
      "Tensor? activation_seed=None) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_instance_norm_act_backward(Tensor grad_out, Tensor input, Tensor? weight, Tensor? bias, Tensor? residual, "
      "Tensor save_mean, Tensor save_invstd, bool use_input_stats, str activation, float[] activation_params, "
      "Tensor? activation_weight, Tensor? activation_seed, bool[5] output_mask) "
      "-> (Tensor?, Tensor?, Tensor?, Tensor?, Tensor?)");
}

TORCH_LIBRARY_IMPL(fusednorm, CPU, m) {
  m.impl("instance_norm_act", &detail::instance_norm_act_forward);
  m.impl("_instance_norm_act_backward", &detail::instance_norm_act_backward_impl);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(fusednorm, CUDA, m) {
  m.impl("instance_norm_act", &detail::instance_norm_act_forward);
  m.impl("_instance_norm_act_backward", &detail::instance_norm_act_backward_impl);
}
#endif

TORCH_LIBRARY_IMPL(fusednorm, Meta, m) {
  m.impl("instance_norm_act", &detail::instance_norm_act_meta);
  m.impl("_instance_norm_act_backward", &detail::running_stats_norm_backward_meta);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_act(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& residual, bool use_input_stats, double momentum, double eps,
    std::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  static auto op = detail::typed_op<detail::RunningStatsNormSignature>("fusednorm::instance_norm_act");
  return op.call(input, weight, bias, running_mean, running_var, residual, use_input_stats, momentum, eps, activation,
                 activation_params, activation_weight, activation_seed);
}

NormActGrads instance_norm_act_backward(const at::Tensor& grad_out, const at::Tensor& input,
                                        const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                        const std::optional<at::Tensor>& residual, const at::Tensor& save_mean,
                                        const at::Tensor& save_invstd, bool use_input_stats,
                                        std::string_view activation, c10::ArrayRef<double> activation_params,
                                        const std::optional<at::Tensor>& activation_weight,
                                        const std::optional<at::Tensor>& activation_seed,
                                        std::array<bool, 5> output_mask) {
  static auto op =
      detail::typed_op<detail::RunningStatsNormBackwardSignature>("fusednorm::_instance_norm_act_backward");
  return op.call(grad_out, input, weight, bias, residual, save_mean, save_invstd, use_input_stats, activation,
                 activation_params, activation_weight, activation_seed, output_mask);
}

}  // namespace fusednorm
