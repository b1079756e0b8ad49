// fusednorm::batch_norm_act and its backward: schemas, input checks, the
// batch-norm specific combine on top of the channel-norm engine, meta kernels,
// and the C++ entry points of include/fusednorm/ops.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

#include "activation_spec.h"
#include "channel_norm.h"
#include "fusednorm/ops.h"
#include "norm_common.h"

namespace fusednorm {
namespace detail {
namespace {

constexpr std::string_view kOp = "batch_norm_act";

// The checks shared by the real and the meta kernels (symbolic-shape safe).
void check_forward_args(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                        const std::optional<at::Tensor>& running_var, const std::optional<at::Tensor>& residual,
                        bool training, double eps, c10::string_view activation) {
  check_input(kOp, input);
  check_common_forward_args(kOp, input, weight, bias, residual, eps, activation);
  check_running_stats(kOp, running_mean, running_var, input);
  TORCH_CHECK(training || defined(running_mean), kOp,
              ": running_mean and running_var are required when training=False");
}

// Batch norm is one term: a statistic per channel over the batch.
NormTerm batch_term(const ChannelView& view, const at::Tensor& mean, const at::Tensor& invstd, bool training) {
  NormTerm term;
  term.layout = StatLayout{view.N, view.C, view.C, /*over_batch=*/true};
  term.mean = mean.reshape(term.layout.shape());
  term.invstd = invstd.reshape(term.layout.shape());
  term.mean_from_input = term.var_from_input = training;
  return term;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_forward(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& residual, bool training, double momentum, double eps,
    c10::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  // Every check runs before anything is written, so a rejected call leaves the
  // running statistics untouched.
  check_forward_args(input, weight, bias, running_mean, running_var, residual, training, eps, activation);
  ChannelView view = canonicalize(input);
  TORCH_CHECK(!training || view.N * view.S > 1, kOp,
              ": expected more than 1 value per channel when training, got input of shape ", input.sizes());
  const ActivationArgs act = make_activation_args(kOp, std::string_view(activation.data(), activation.size()),
                                                  activation_params, activation_weight, activation_seed, view.C, input);

  const auto acc = accumulation_dtype(input.scalar_type());
  const ChannelNormKernels& kernels = channel_norm_kernels(input.device().type());
  at::Tensor mean, invstd;
  if (training) {
    auto [partial_mean, partial_m2, count] = kernels.partial_moments(view);
    auto [batch_mean, batch_var, n] = combine_moments(partial_mean, partial_m2, count, view.S, {0, 2});
    mean = batch_mean;
    invstd = invstd_from_var(batch_var, eps);
    if (defined(running_mean)) {
      const double unbias = n > 1 ? n / (n - 1) : 1.0;
      update_running_stat(*running_mean, batch_mean, momentum);
      update_running_stat(*running_var, batch_var, momentum, unbias);
    }
  } else {
    // Copies, never views: outputs of a custom op must not alias its inputs.
    mean = running_mean->to(acc, /*non_blocking=*/false, /*copy=*/true).contiguous();
    invstd = invstd_from_var(running_var->to(acc).contiguous(), eps);
  }
  at::Tensor out = forward_from_terms(view, residual, weight, bias, {batch_term(view, mean, invstd, training)}, act);
  return {out, mean, invstd};
}

NormActGrads batch_norm_act_backward_impl(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, const at::Tensor& save_mean,
    const at::Tensor& save_invstd, bool training, c10::string_view activation,
    c10::ArrayRef<double> activation_params, const std::optional<at::Tensor>& activation_weight,
    const std::optional<at::Tensor>& activation_seed, std::array<bool, 5> output_mask) {
  return backward_op("_batch_norm_act_backward", grad_out, input, weight, bias, residual, activation,
                     activation_params, activation_weight, activation_seed, output_mask, /*any_rank=*/false,
                     [&](const ChannelView& view, at::ScalarType acc) {
                       return std::vector<NormTerm>{batch_term(view, save_mean.to(acc).contiguous(),
                                                               save_invstd.to(acc).contiguous(), training)};
                     });
}

// Meta kernels: shapes, dtypes and strides of the outputs, for torch.compile,
// torch.export and FakeTensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_meta(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& residual, bool training, double, double eps, c10::string_view activation,
    c10::ArrayRef<double>, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&) {
  check_forward_args(input, weight, bias, running_mean, running_var, residual, training, eps, activation);
  const auto stats_options = input.options().dtype(accumulation_dtype(input.scalar_type()));
  return {dense_like(input), at::empty_symint({input.sym_size(1)}, stats_options),
          at::empty_symint({input.sym_size(1)}, stats_options)};
}

}  // namespace
}  // namespace detail

TORCH_LIBRARY_FRAGMENT(fusednorm, m) {
  m.def(
      "batch_norm_act(Tensor input, Tensor? weight, Tensor? bias, Tensor(a!)? running_mean, "
      "Tensor(b!)? running_var, Tensor? residual, bool training, float momentum, float eps, "
      "str activation=\"identity\", float[] activation_params=[], Tensor? activation_weight=None, "
      "Tensor? activation_seed=None) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_batch_norm_act_backward(Tensor grad_out, Tensor input, Tensor? weight, Tensor? bias, Tensor? residual, "
      "Tensor save_mean, Tensor save_invstd, bool training, str activation, float[] activation_params, "
      "Tensor? activation_weight, Tensor? activation_seed, bool[5] output_mask) "
      "-> (Tensor?, Tensor?, Tensor?, Tensor?, Tensor?)");
}

TORCH_LIBRARY_IMPL(fusednorm, CPU, m) {
  m.impl("batch_norm_act", &detail::batch_norm_act_forward);
  m.impl("_batch_norm_act_backward", &detail::batch_norm_act_backward_impl);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(fusednorm, CUDA, m) {
  m.impl("batch_norm_act", &detail::batch_norm_act_forward);
  m.impl("_batch_norm_act_backward", &detail::batch_norm_act_backward_impl);
}
#endif

TORCH_LIBRARY_IMPL(fusednorm, Meta, m) {
  m.impl("batch_norm_act", &detail::batch_norm_act_meta);
  m.impl("_batch_norm_act_backward", &detail::running_stats_norm_backward_meta);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& residual, bool training, double momentum, double eps,
    std::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  static auto op = detail::typed_op<detail::RunningStatsNormSignature>("fusednorm::batch_norm_act");
  return op.call(input, weight, bias, running_mean, running_var, residual, training, momentum, eps, activation,
                 activation_params, activation_weight, activation_seed);
}

NormActGrads batch_norm_act_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, const at::Tensor& save_mean,
    const at::Tensor& save_invstd, bool training, std::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed,
    std::array<bool, 5> output_mask) {
  static auto op = detail::typed_op<detail::RunningStatsNormBackwardSignature>("fusednorm::_batch_norm_act_backward");
  return op.call(grad_out, input, weight, bias, residual, save_mean, save_invstd, training, activation,
                 activation_params, activation_weight, activation_seed, output_mask);
}

at::Tensor draw_activation_seed() {
  return at::randint(std::numeric_limits<int64_t>::max(), {1}, at::TensorOptions().dtype(at::kLong));
}

}  // namespace fusednorm
