#include "row_norm.h"

#include <ATen/ATen.h>
#include <c10/core/SymInt.h>
#include <c10/util/Exception.h>

#include <limits>

#include "activation_spec.h"
#include "kernel_registry.h"
#include "op_utils.h"

namespace fusednorm::detail {
namespace {

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kDouble || t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

void check_per_column(std::string_view op, const std::optional<at::Tensor>& t, const char* name,
                      const at::Tensor& input, c10::SymIntArrayRef normalized_shape) {
  if (!defined(t)) {
    return;
  }
  TORCH_CHECK(t->sym_sizes() == normalized_shape, op, ": ", name, " must have shape normalized_shape ",
              normalized_shape, ", got ", t->sym_sizes());
  TORCH_CHECK(t->device() == input.device(), op, ": ", name, " is on ", t->device(), " but input is on ",
              input.device());
  TORCH_CHECK(is_supported_dtype(t->scalar_type()), op, ": ", name,
              " must be float64, float32, float16 or bfloat16, got ", t->scalar_type());
}

int64_t product(at::IntArrayRef sizes) {
  int64_t p = 1;
  for (int64_t s : sizes) {
    p *= s;
  }
  return p;
}

// Where PReLU's channel (input dim 1) runs in the (M, N) view; one shared slope
// needs no map.
math::PReluChannelMap prelu_channel_map(const at::Tensor& input, int64_t normalized_ndim, const ActivationArgs& act) {
  math::PReluChannelMap map;
  if (!act.prelu_weight.defined() || act.prelu_weight.numel() == 1 || input.dim() < 2) {
    return map;
  }
  const int64_t axis = input.dim() - normalized_ndim;
  map.along_rows = axis >= 2;
  map.channels = input.size(1);
  // The dims after dim 1 up to the end of the row index or of the column index.
  map.inner = std::max<int64_t>(1, product(input.sizes().slice(2, (map.along_rows ? axis : input.dim()) - 2)));
  return map;
}

RowNormInputs make_inputs(std::string_view op, RowNormMode mode, const at::Tensor& input, int64_t normalized_ndim,
                          const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                          const std::optional<at::Tensor>& residual, const ActivationCall& activation) {
  const auto acc = accumulation_dtype(input.scalar_type());
  RowNormInputs in;
  // Strided views: one dense copy; the output is contiguous, as aten::layer_norm's.
  in.x = input.contiguous();
  const int64_t axis = input.dim() - normalized_ndim;
  in.M = product(input.sizes().slice(0, axis));
  in.N = product(input.sizes().slice(axis));
  in.residual = defined(residual) ? residual->contiguous() : at::Tensor();
  in.weight = defined(weight) ? weight->to(acc).contiguous() : at::Tensor();
  in.bias = defined(bias) ? bias->to(acc).contiguous() : at::Tensor();
  in.mode = mode;
  in.act = make_activation_args(op, activation.name, activation.params, activation.weight, activation.seed,
                                input.dim() >= 2 ? input.size(1) : 1, input);
  in.prelu = prelu_channel_map(input, normalized_ndim, in.act);
  return in;
}

c10::SymDimVector stats_shape(const at::Tensor& input, int64_t normalized_ndim) {
  c10::SymDimVector shape(input.sym_sizes().begin(), input.sym_sizes().end());
  for (size_t d = shape.size() - normalized_ndim; d < shape.size(); ++d) {
    shape[d] = 1;
  }
  return shape;
}

// Saved statistics as the kernels read them: [M], contiguous, accumulation dtype.
at::Tensor stats_rows(std::string_view op, const at::Tensor& t, const char* name, const RowNormInputs& in) {
  TORCH_CHECK(t.numel() == in.M, op, ": ", name, " must have ", in.M, " elements (one per normalized row), got shape ",
              t.sizes());
  TORCH_CHECK(t.device() == in.x.device(), op, ": ", name, " is on ", t.device(), " but input is on ", in.x.device());
  return t.to(accumulation_dtype(in.x.scalar_type())).contiguous().view({in.M});
}

// PReLU's weight gradient from the kernel's partials: summed over everything
// but the channel (input dim 1).
at::Tensor prelu_weight_grad(const RowNormInputs& in, const at::Tensor& partials, const at::Tensor& prelu_weight) {
  const at::Tensor per_position = in.prelu.along_rows ? partials : partials.sum(0);
  const at::Tensor total =
      prelu_weight.numel() == 1
          ? per_position.sum()
          : per_position.reshape({-1, in.prelu.channels, in.prelu.inner}).sum(at::IntArrayRef{0, 2});
  return total.reshape(prelu_weight.sizes()).to(prelu_weight.scalar_type());
}

}  // namespace

const RowNormKernels& row_norm_kernels(c10::DeviceType device) { return KernelRegistry<RowNormKernels>::get(device); }

bool register_row_norm_kernels(c10::DeviceType device, const RowNormKernels* kernels) {
  return KernelRegistry<RowNormKernels>::add(device, kernels);
}

void check_row_norm_args(std::string_view op, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                         const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& residual, std::optional<double> eps,
                         std::string_view activation) {
  TORCH_CHECK(is_supported_dtype(input.scalar_type()), op,
              ": input must be float64, float32, float16 or bfloat16, got ", input.scalar_type());
  const int64_t ndim = static_cast<int64_t>(normalized_shape.size());
  TORCH_CHECK(ndim >= 1, op, ": normalized_shape must have at least one dimension, got ", normalized_shape);
  TORCH_CHECK(input.dim() >= ndim && input.sym_sizes().slice(input.dim() - ndim) == normalized_shape, op,
              ": normalized_shape ", normalized_shape, " must match the trailing dimensions of input of shape ",
              input.sym_sizes());
  check_per_column(op, weight, "weight", input, normalized_shape);
  check_per_column(op, bias, "bias", input, normalized_shape);
  check_residual(op, residual, input);
  TORCH_CHECK(!eps.has_value() || *eps >= 0, op, ": eps must be non-negative, got ", eps.value_or(0));
  parse_activation_kind(op, activation);
}

double default_rms_norm_eps(at::ScalarType input_dtype) {
  return accumulation_dtype(input_dtype) == at::kDouble ? std::numeric_limits<double>::epsilon()
                                                        : std::numeric_limits<float>::epsilon();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_norm_forward(
    std::string_view op, RowNormMode mode, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& residual, double eps, const ActivationCall& activation) {
  check_row_norm_args(op, input, normalized_shape, weight, bias, residual, eps, activation.name);
  const int64_t ndim = static_cast<int64_t>(normalized_shape.size());
  const RowNormInputs in = make_inputs(op, mode, input, ndim, weight, bias, residual, activation);
  const auto stats_options = input.options().dtype(accumulation_dtype(input.scalar_type()));
  at::Tensor out = at::empty(input.sizes(), input.options());
  at::Tensor mean = mode == RowNormMode::kLayerNorm ? at::empty({in.M}, stats_options) : at::Tensor();
  at::Tensor rstd = at::empty({in.M}, stats_options);
  if (in.N == 0) {
    // Rows without values, as aten::native_layer_norm: mean 0, rstd NaN.
    if (mean.defined()) {
      mean.zero_();
    }
    rstd.fill_(std::numeric_limits<double>::quiet_NaN());
  } else {
    row_norm_kernels(input.device().type()).forward(in, eps, out, mean, rstd);
  }
  const c10::SymDimVector shape = stats_shape(input, ndim);
  return {out, mean.defined() ? mean.view_symint(shape) : mean, rstd.view_symint(shape)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> row_norm_forward_meta(
    std::string_view op, RowNormMode mode, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& residual, std::optional<double> eps, std::string_view activation) {
  check_row_norm_args(op, input, normalized_shape, weight, bias, residual, eps, activation);
  const auto stats_options = input.options().dtype(accumulation_dtype(input.scalar_type()));
  const c10::SymDimVector shape = stats_shape(input, static_cast<int64_t>(normalized_shape.size()));
  return {at::empty_symint(input.sym_sizes(), input.options()),
          mode == RowNormMode::kLayerNorm ? at::empty_symint(shape, stats_options) : at::Tensor(),
          at::empty_symint(shape, stats_options)};
}

RowNormGrads row_norm_backward(std::string_view op, RowNormMode mode, const at::Tensor& grad_out,
                               const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                               const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                               const std::optional<at::Tensor>& residual, const at::Tensor& mean,
                               const at::Tensor& rstd, const ActivationCall& activation, RowNormGradMask mask) {
  check_row_norm_args(op, input, normalized_shape, weight, bias, residual, std::nullopt, activation.name);
  TORCH_CHECK(grad_out.sizes() == input.sizes() && grad_out.scalar_type() == input.scalar_type() &&
                  grad_out.device() == input.device(),
              op, ": grad_out must match input's shape, dtype and device");
  const RowNormInputs in =
      make_inputs(op, mode, input, static_cast<int64_t>(normalized_shape.size()), weight, bias, residual, activation);
  const at::Tensor mean_rows = mode == RowNormMode::kLayerNorm ? stats_rows(op, mean, "mean", in) : at::Tensor();
  const at::Tensor rstd_rows = stats_rows(op, rstd, "rstd", in);

  RowNormGradRequest want;
  want.weight = mask[kGradWeight] && in.weight.defined();
  want.bias = mask[kGradBias] && in.bias.defined();
  want.prelu = mask[kGradActivationWeight] && in.act.params.kind == math::ActivationKind::kPReLU;
  RowNormGrads grads;
  if (mask[kGradInput]) {
    grads[kGradInput] = at::empty(input.sizes(), input.options());
  }
  if (mask[kGradResidual] && in.residual.defined()) {
    grads[kGradResidual] = at::empty(input.sizes(), input.options());
  }
  if (input.numel() == 0) {
    // Nothing to sum: the parameters' gradients are zero.
    auto zeros_if = [](bool wanted, const std::optional<at::Tensor>& t) {
      return wanted ? at::zeros(t->sizes(), t->options()) : at::Tensor();
    };
    grads[kGradWeight] = zeros_if(want.weight, weight);
    grads[kGradBias] = zeros_if(want.bias, bias);
    grads[kGradActivationWeight] = zeros_if(want.prelu, activation.weight);
    return grads;
  }
  const RowNormPartials partials =
      row_norm_kernels(input.device().type())
          .backward(in, grad_out.contiguous(), mean_rows, rstd_rows, want, grads[kGradInput], grads[kGradResidual]);
  if (want.weight) {
    grads[kGradWeight] = partials.weight.sum(0).view(weight->sizes()).to(weight->scalar_type());
  }
  if (want.bias) {
    grads[kGradBias] = partials.bias.sum(0).view(bias->sizes()).to(bias->scalar_type());
  }
  if (want.prelu) {
    grads[kGradActivationWeight] = prelu_weight_grad(in, partials.prelu, *activation.weight);
  }
  return grads;
}

RowNormGrads row_norm_backward_meta(std::string_view op, const at::Tensor& grad_out, const at::Tensor& input,
                                    c10::SymIntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
                                    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                    const ActivationCall& activation, RowNormGradMask mask) {
  check_row_norm_args(op, input, normalized_shape, weight, bias, residual, std::nullopt, activation.name);
  TORCH_CHECK(grad_out.sym_sizes() == input.sym_sizes() && grad_out.scalar_type() == input.scalar_type(), op,
              ": grad_out must match input's shape, dtype and device");
  auto contiguous_like = [](const at::Tensor& t) { return at::empty_symint(t.sym_sizes(), t.options()); };
  RowNormGrads grads;
  if (mask[kGradInput]) {
    grads[kGradInput] = contiguous_like(input);
  }
  if (mask[kGradWeight] && defined(weight)) {
    grads[kGradWeight] = contiguous_like(*weight);
  }
  if (mask[kGradBias] && defined(bias)) {
    grads[kGradBias] = contiguous_like(*bias);
  }
  if (mask[kGradResidual] && defined(residual)) {
    grads[kGradResidual] = contiguous_like(input);
  }
  if (mask[kGradActivationWeight] && defined(activation.weight) &&
      parse_activation_kind(op, activation.name) == math::ActivationKind::kPReLU) {
    grads[kGradActivationWeight] = contiguous_like(*activation.weight);
  }
  return grads;
}

}  // namespace fusednorm::detail
