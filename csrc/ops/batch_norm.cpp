// fusednorm::batch_norm_act and its backward: schemas, input checks, the
// batch-norm specific combine on top of the channel-norm engine, meta kernels,
// and the C++ entry points of include/fusednorm/ops.h.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string>

#include "activation_spec.h"
#include "channel_norm.h"
#include "fusednorm/ops.h"
#include "op_utils.h"

namespace fusednorm {
namespace detail {
namespace {

constexpr std::string_view kOp = "batch_norm_act";

void check_per_channel(const std::optional<at::Tensor>& t, const char* name, const at::Tensor& input) {
  if (!t.has_value() || !t->defined()) {
    return;
  }
  const c10::SymInt C = input.sym_size(1);
  TORCH_CHECK(t->dim() == 1 && t->sym_size(0) == C, kOp, ": ", name, " must be a 1-d tensor of ", C,
              " elements (one per channel of input), got shape ", t->sym_sizes());
  TORCH_CHECK(t->device() == input.device(), kOp, ": ", name, " is on ", t->device(), " but input is on ",
              input.device());
  TORCH_CHECK(at::isFloatingType(t->scalar_type()), kOp, ": ", name, " must be floating point, got ",
              t->scalar_type());
}

void check_input(const at::Tensor& input) {
  TORCH_CHECK(input.dim() >= 2 && input.dim() <= 5, kOp,
              ": input must be (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W); got a ", input.dim(),
              "-d tensor of shape ", input.sizes());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), kOp,
              ": input must be float64, float32, float16 or bfloat16, got ", input.scalar_type());
}

at::Tensor to_acc_or(const std::optional<at::Tensor>& t, at::ScalarType acc, const at::Tensor& fallback) {
  return defined(t) ? t->to(acc).contiguous() : fallback;
}

// y = x * scale + shift equals (x - mean) * invstd * weight + bias.
std::pair<at::Tensor, at::Tensor> affine_coefficients(const at::Tensor& mean, const at::Tensor& invstd,
                                                      const std::optional<at::Tensor>& weight,
                                                      const std::optional<at::Tensor>& bias) {
  const auto acc = mean.scalar_type();
  at::Tensor scale = defined(weight) ? invstd * weight->to(acc) : invstd.clone();
  at::Tensor shift = -mean * scale;
  if (defined(bias)) {
    shift.add_(bias->to(acc));
  }
  return {scale.contiguous(), shift.contiguous()};
}

// The checks shared by the real and the meta kernels (symbolic-shape safe).
void check_forward_args(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                        const std::optional<at::Tensor>& running_var, const std::optional<at::Tensor>& residual,
                        bool training, double eps, c10::string_view activation) {
  check_input(input);
  check_per_channel(weight, "weight", input);
  check_per_channel(bias, "bias", input);
  check_per_channel(running_mean, "running_mean", input);
  check_per_channel(running_var, "running_var", input);
  check_residual(kOp, residual, input);
  TORCH_CHECK(defined(running_mean) == defined(running_var), kOp,
              ": running_mean and running_var must be given together");
  TORCH_CHECK(training || defined(running_mean), kOp,
              ": running_mean and running_var are required when training=False");
  TORCH_CHECK(eps >= 0, kOp, ": eps must be non-negative, got ", eps);
  parse_activation_kind(kOp, std::string_view(activation.data(), activation.size()));
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
    invstd = (batch_var + eps).rsqrt_();
    if (defined(running_mean)) {
      const double unbias = n > 1 ? n / (n - 1) : 1.0;
      running_mean->copy_(running_mean->to(acc) * (1 - momentum) + batch_mean * momentum);
      running_var->copy_(running_var->to(acc) * (1 - momentum) + batch_var * (unbias * momentum));
    }
  } else {
    // Copies, never views: outputs of a custom op must not alias its inputs.
    mean = running_mean->to(acc, /*non_blocking=*/false, /*copy=*/true).contiguous();
    invstd = (running_var->to(acc) + eps).rsqrt_().contiguous();
  }
  auto [scale, shift] = affine_coefficients(mean, invstd, weight, bias);
  at::Tensor out = empty_like_view(view);
  const at::Tensor res = defined(residual) ? match_layout(*residual, view) : at::Tensor();
  kernels.normalize_activate(view, res, scale, shift, CoefIndexing{0}, act, out);
  return {out, mean, invstd};
}

NormActGrads batch_norm_act_backward_impl(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, const at::Tensor& save_mean,
    const at::Tensor& save_invstd, bool training, c10::string_view activation,
    c10::ArrayRef<double> activation_params, const std::optional<at::Tensor>& activation_weight,
    const std::optional<at::Tensor>& activation_seed, std::array<bool, 5> output_mask) {
  constexpr std::string_view op = "_batch_norm_act_backward";
  check_input(input);
  TORCH_CHECK(grad_out.sizes() == input.sizes() && grad_out.scalar_type() == input.scalar_type(), op,
              ": grad_out must match input's shape and dtype");
  check_residual(op, residual, input);
  ChannelView view = canonicalize(input);
  const ActivationArgs act = make_activation_args(op, std::string_view(activation.data(), activation.size()),
                                                  activation_params, activation_weight, activation_seed, view.C, input);
  const auto acc = accumulation_dtype(input.scalar_type());
  const at::Tensor mean = save_mean.to(acc).contiguous();
  const at::Tensor invstd = save_invstd.to(acc).contiguous();
  const ChannelNormKernels& kernels = channel_norm_kernels(input.device().type());
  const ChannelView grad_view{match_layout(grad_out, view), view.N, view.C, view.S, view.layout};
  const at::Tensor res = defined(residual) ? match_layout(*residual, view) : at::Tensor();
  auto [scale, shift] = affine_coefficients(mean, invstd, weight, bias);

  const bool want_prelu = output_mask[4] && act.params.kind == math::ActivationKind::kPReLU;
  const bool need_sums = (training && output_mask[0]) || output_mask[1] || output_mask[2] || want_prelu;
  at::Tensor sum_g, sum_g_xmu, grad_weight, grad_bias, grad_act_weight;
  if (need_sums) {
    auto [partial_g, partial_g_xmu, partial_prelu] =
        kernels.backward_partial_sums(grad_view, view, res, scale, shift, mean, CoefIndexing{0}, act, want_prelu);
    sum_g = partial_g.sum({0, 2});
    sum_g_xmu = partial_g_xmu.sum({0, 2});
    if (want_prelu) {
      const at::Tensor per_channel = partial_prelu.sum({0, 2});
      const at::Tensor& w = *activation_weight;
      grad_act_weight = (w.numel() == 1 ? per_channel.sum().reshape(w.sizes()) : per_channel.reshape(w.sizes()))
                            .to(w.scalar_type());
    }
  }
  if (output_mask[1] && defined(weight)) {
    grad_weight = (sum_g_xmu * invstd).to(weight->scalar_type());
  }
  if (output_mask[2] && defined(bias)) {
    grad_bias = sum_g.to(bias->scalar_type());
  }

  at::Tensor grad_input, grad_residual;
  if (output_mask[0]) {
    grad_input = empty_like_view(view);
  }
  if (output_mask[3] && defined(residual)) {
    grad_residual = empty_like_view(view);
  }
  if (grad_input.defined() || grad_residual.defined()) {
    const at::Tensor k1 = defined(weight) ? invstd * weight->to(acc) : invstd;
    at::Tensor k2, k3;
    if (training && grad_input.defined()) {
      const double n = static_cast<double>(view.N * view.S);
      k2 = -k1 * invstd * invstd * sum_g_xmu / n;
      k3 = -k1 * sum_g / n;
    } else {
      k2 = at::zeros_like(k1);
      k3 = at::zeros_like(k1);
    }
    kernels.backward_apply(grad_view, view, res, scale, shift, mean, k1.contiguous(), k2.contiguous(), k3.contiguous(),
                           CoefIndexing{0}, act, grad_input, grad_residual);
  }
  return {optional_of(grad_input), optional_of(grad_weight), optional_of(grad_bias), optional_of(grad_residual),
          optional_of(grad_act_weight)};
}

// Meta kernels: shapes, dtypes and strides of the outputs, for torch.compile,
// torch.export and FakeTensor. They mirror canonicalize()'s layout choice.
at::Tensor dense_like(const at::Tensor& input) {
  if (input.is_contiguous() || (input.dim() == 4 && input.is_contiguous(at::MemoryFormat::ChannelsLast)) ||
      (input.dim() == 5 && input.is_contiguous(at::MemoryFormat::ChannelsLast3d))) {
    return at::empty_like(input);
  }
  return at::empty_like(input, input.suggest_memory_format());
}

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

NormActGrads batch_norm_act_backward_meta(
    const at::Tensor&, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, const at::Tensor&,
    const at::Tensor&, bool, c10::string_view, c10::ArrayRef<double>, const std::optional<at::Tensor>& activation_weight,
    const std::optional<at::Tensor>&, std::array<bool, 5> output_mask) {
  auto like_if = [](bool wanted, const std::optional<at::Tensor>& t) -> std::optional<at::Tensor> {
    return wanted && defined(t) ? std::optional<at::Tensor>(at::empty_like(*t)) : std::nullopt;
  };
  return {output_mask[0] ? std::optional<at::Tensor>(dense_like(input)) : std::nullopt,
          like_if(output_mask[1], weight), like_if(output_mask[2], bias),
          output_mask[3] && defined(residual) ? std::optional<at::Tensor>(dense_like(input)) : std::nullopt,
          like_if(output_mask[4], activation_weight)};
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
  m.impl("_batch_norm_act_backward", &detail::batch_norm_act_backward_meta);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& residual, bool training, double momentum, double eps,
    std::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fusednorm::batch_norm_act", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                           const std::optional<at::Tensor>&, bool, double, double, c10::string_view,
                           c10::ArrayRef<double>, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&)>();
  return op.call(input, weight, bias, running_mean, running_var, residual, training, momentum, eps,
                 c10::string_view(activation.data(), activation.size()), activation_params, activation_weight,
                 activation_seed);
}

NormActGrads batch_norm_act_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, const at::Tensor& save_mean,
    const at::Tensor& save_invstd, bool training, std::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed,
    std::array<bool, 5> output_mask) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusednorm::_batch_norm_act_backward", "")
          .typed<NormActGrads(
              const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
              const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&, bool, c10::string_view,
              c10::ArrayRef<double>, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
              std::array<bool, 5>)>();
  return op.call(grad_out, input, weight, bias, residual, save_mean, save_invstd, training,
                 c10::string_view(activation.data(), activation.size()), activation_params, activation_weight,
                 activation_seed, output_mask);
}

at::Tensor draw_activation_seed() {
  return at::randint(std::numeric_limits<int64_t>::max(), {1}, at::TensorOptions().dtype(at::kLong));
}

}  // namespace fusednorm
