#include "norm_common.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "activation_spec.h"

namespace fusednorm::detail {

bool defined(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

std::optional<at::Tensor> optional_of(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

void check_input(std::string_view op, const at::Tensor& input, bool any_rank) {
  if (any_rank) {
    TORCH_CHECK(input.dim() >= 2, op, ": input must be (N, C, *) with at least 2 dimensions; got a ", input.dim(),
                "-d tensor of shape ", input.sizes());
  } else {
    TORCH_CHECK(input.dim() >= 2 && input.dim() <= 5, op,
                ": input must be (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W); got a ", input.dim(),
                "-d tensor of shape ", input.sizes());
  }
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), op,
              ": input must be float64, float32, float16 or bfloat16, got ", input.scalar_type());
}

void check_per_channel(std::string_view op, const std::optional<at::Tensor>& t, const char* name,
                       const at::Tensor& input) {
  if (!defined(t)) {
    return;
  }
  const c10::SymInt C = input.sym_size(1);
  TORCH_CHECK(t->dim() == 1 && t->sym_size(0) == C, op, ": ", name, " must be a 1-d tensor of ", C,
              " elements (one per channel of input), got shape ", t->sym_sizes());
  TORCH_CHECK(t->device() == input.device(), op, ": ", name, " is on ", t->device(), " but input is on ",
              input.device());
  TORCH_CHECK(at::isFloatingType(t->scalar_type()), op, ": ", name, " must be floating point, got ", t->scalar_type());
}

void check_residual(std::string_view op, const std::optional<at::Tensor>& residual, const at::Tensor& input) {
  if (!defined(residual)) {
    return;
  }
  TORCH_CHECK(residual->sym_sizes() == input.sym_sizes(), op, ": residual must have the shape of input ",
              input.sym_sizes(), ", got ", residual->sym_sizes());
  TORCH_CHECK(residual->device() == input.device(), op, ": residual is on ", residual->device(), " but input is on ",
              input.device());
  TORCH_CHECK(residual->scalar_type() == input.scalar_type(), op, ": residual must have input's dtype ",
              input.scalar_type(), ", got ", residual->scalar_type());
}

void check_grad_out(std::string_view op, const at::Tensor& grad_out, const at::Tensor& input) {
  TORCH_CHECK(grad_out.sym_sizes() == input.sym_sizes() && grad_out.scalar_type() == input.scalar_type(), op,
              ": grad_out must match input's shape and dtype");
}

void check_eps(std::string_view op, double eps) { TORCH_CHECK(eps >= 0, op, ": eps must be non-negative, got ", eps); }

void check_common_forward_args(std::string_view op, const at::Tensor& input, const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                               double eps, c10::string_view activation) {
  check_per_channel(op, weight, "weight", input);
  check_per_channel(op, bias, "bias", input);
  check_residual(op, residual, input);
  check_eps(op, eps);
  parse_activation_kind(op, std::string_view(activation.data(), activation.size()));
}

void check_running_stats(std::string_view op, const std::optional<at::Tensor>& running_mean,
                         const std::optional<at::Tensor>& running_var, const at::Tensor& input) {
  check_per_channel(op, running_mean, "running_mean", input);
  check_per_channel(op, running_var, "running_var", input);
  TORCH_CHECK(defined(running_mean) == defined(running_var), op,
              ": running_mean and running_var must be given together");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> partial_moments(const ChannelView& view) {
  if (view.data.numel() == 0) {
    const auto options = view.data.options().dtype(accumulation_dtype(view.data.scalar_type()));
    return {at::zeros({view.N, view.C, 1}, options), at::zeros({view.N, view.C, 1}, options), at::zeros({1}, options)};
  }
  return channel_norm_kernels(view.data.device().type()).partial_moments(view);
}

void update_running_stat(const at::Tensor& running, const at::Tensor& value, double momentum) {
  running.copy_(running.to(value.scalar_type()) * (1 - momentum) + value * momentum);
}

std::vector<int64_t> StatLayout::shape() const { return {over_batch ? 1 : N, groups, 1}; }

at::Tensor StatLayout::reduce(const at::Tensor& per_plane) const {
  const at::Tensor grouped = per_plane.expand({N, C}).reshape({N, groups, C / groups});
  return over_batch ? grouped.sum({0, 2}, /*keepdim=*/true) : grouped.sum({2}, /*keepdim=*/true);
}

at::Tensor StatLayout::expand(const at::Tensor& stat) const {
  const int64_t rows = over_batch ? 1 : N;
  return stat.reshape({rows, groups, 1}).expand({rows, groups, C / groups}).reshape({rows, C});
}

double StatLayout::count(int64_t spatial_size) const {
  return static_cast<double>(spatial_size) * static_cast<double>(C / groups) * static_cast<double>(over_batch ? N : 1);
}

std::pair<at::Tensor, at::Tensor> layout_moments(const StatLayout& layout, const at::Tensor& partial_mean,
                                                 const at::Tensor& partial_m2, const at::Tensor& count,
                                                 int64_t spatial_size) {
  const int64_t K = partial_mean.size(2);
  const std::vector<int64_t> grouped{layout.N, layout.groups, layout.C / layout.groups, K};
  const std::vector<int64_t> dims = layout.over_batch ? std::vector<int64_t>{0, 2, 3} : std::vector<int64_t>{2, 3};
  auto [mean, var, n] =
      combine_moments(partial_mean.reshape(grouped), partial_m2.reshape(grouped), count, spatial_size, dims);
  return {mean.reshape(layout.shape()), var.reshape(layout.shape())};
}

namespace {

at::Tensor residual_for(const ChannelView& view, const std::optional<at::Tensor>& residual) {
  return defined(residual) ? match_layout(*residual, view) : at::Tensor();
}

at::Tensor weight_or_one(const std::optional<at::Tensor>& weight, const at::TensorOptions& acc_options) {
  return defined(weight) ? weight->to(acc_options.dtype()) : at::ones({}, acc_options);
}

// Coefficients are [1, C] (indexed by channel) when every statistic is shared by
// the whole batch, [N, C] otherwise.
CoefIndexing indexing_of(const at::Tensor& coefficient) {
  return CoefIndexing{coefficient.size(0) == 1 ? 0 : coefficient.size(1)};
}

// x * scale + shift == weight * sum_t w_t * (x - mean_t) * invstd_t + bias.
std::pair<at::Tensor, at::Tensor> affine_coefficients(const std::vector<NormTerm>& terms,
                                                      const std::optional<at::Tensor>& weight,
                                                      const std::optional<at::Tensor>& bias) {
  at::Tensor scale, shift;
  for (const NormTerm& t : terms) {
    const at::Tensor term_scale = t.layout.expand(t.invstd) * t.weight;
    const at::Tensor term_shift = -t.layout.expand(t.mean * t.invstd) * t.weight;
    scale = scale.defined() ? scale + term_scale : term_scale;
    shift = shift.defined() ? shift + term_shift : term_shift;
  }
  const auto acc = scale.scalar_type();
  if (defined(weight)) {
    const at::Tensor w = weight->to(acc);
    scale = scale * w;
    shift = shift * w;
  }
  if (defined(bias)) {
    shift = shift + bias->to(acc);
  }
  return {scale.contiguous(), shift.contiguous()};
}

}  // namespace

at::Tensor forward_from_terms(const ChannelView& view, const std::optional<at::Tensor>& residual,
                              const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                              const std::vector<NormTerm>& terms, const ActivationArgs& act) {
  const auto [scale, shift] = affine_coefficients(terms, weight, bias);
  at::Tensor out = empty_like_view(view);
  if (out.numel() > 0) {
    channel_norm_kernels(view.data.device().type())
        .normalize_activate(view, residual_for(view, residual), scale, shift, indexing_of(scale), act, out);
  }
  return out;
}

// With g = dL/dz (z before the activation), u = weight * g and, per term t,
// x_hat_t = (x - mean_t) * invstd_t over the M_t elements of each statistic:
//   dL/dx = sum_t w_t * [invstd_t * u - [mean from input] invstd_t * sum(u) / M_t
//                        - [var from input] invstd_t^3 * (x - own mean_t) * sum(u * (x - mean_t)) / M_t]
// The engine sums g and g * (x - center) per (n, c) about one center (term 0's mean);
// the other terms' sums follow from sum g * (x - mean_t) = that + (center - mean_t) * sum g.
NormActGrads backward_from_terms(const at::Tensor& grad_out, const ChannelView& view,
                                 const std::optional<at::Tensor>& residual, const std::optional<at::Tensor>& weight,
                                 const std::optional<at::Tensor>& bias,
                                 const std::optional<at::Tensor>& activation_weight, const std::vector<NormTerm>& terms,
                                 const ActivationArgs& act, std::array<bool, 5> output_mask) {
  TORCH_INTERNAL_ASSERT(!terms.empty());
  for (const NormTerm& t : terms) {
    TORCH_INTERNAL_ASSERT(t.mean.sizes() == t.layout.shape() && t.invstd.sizes() == t.layout.shape());
  }
  const ChannelNormKernels& kernels = channel_norm_kernels(view.data.device().type());
  const ChannelView grad_view{match_layout(grad_out, view), view.N, view.C, view.S, view.layout};
  const at::Tensor res = residual_for(view, residual);
  const auto [scale, shift] = affine_coefficients(terms, weight, bias);
  const CoefIndexing indexing = indexing_of(scale);
  const auto coef_shape = scale.sizes();
  const at::Tensor center = terms[0].layout.expand(terms[0].mean).expand(coef_shape).contiguous();
  const at::Tensor w = weight_or_one(weight, scale.options());
  // center - mean per (n, c) for a statistic of `layout`; undefined (zero) for the center itself.
  auto offset_from_center = [&](const StatLayout& layout, const at::Tensor& mean) -> at::Tensor {
    return mean.is_same(terms[0].mean) ? at::Tensor() : center - layout.expand(mean);
  };

  const bool any_from_input =
      std::any_of(terms.begin(), terms.end(), [](const NormTerm& t) { return t.mean_from_input || t.var_from_input; });
  const bool want_prelu = output_mask[4] && act.params.kind == math::ActivationKind::kPReLU;
  const bool need_sums = (output_mask[0] && any_from_input) || output_mask[1] || output_mask[2] || want_prelu;
  at::Tensor sum_g, sum_g_xc, grad_weight, grad_bias, grad_act_weight;
  const bool empty = view.data.numel() == 0;  // sums of nothing, and no kernel launches
  if (need_sums) {
    const at::Tensor no_sums = at::zeros({view.N, view.C, 1}, scale.options());
    auto [partial_g, partial_g_xc, partial_prelu] =
        empty ? std::make_tuple(no_sums, no_sums, no_sums)
              : kernels.backward_partial_sums(grad_view, view, res, scale, shift, center, indexing, act, want_prelu);
    sum_g = partial_g.sum(2);
    sum_g_xc = partial_g_xc.sum(2);
    if (want_prelu) {
      const at::Tensor per_channel = partial_prelu.sum({0, 2});
      const at::Tensor& aw = *activation_weight;
      grad_act_weight = (aw.numel() == 1 ? per_channel.sum().reshape(aw.sizes()) : per_channel.reshape(aw.sizes()))
                            .to(aw.scalar_type());
    }
  }
  // sum over each plane of g * (x - mean_t)
  auto sum_g_xmu = [&](size_t t) {
    const at::Tensor offset = offset_from_center(terms[t].layout, terms[t].mean);
    return offset.defined() ? sum_g_xc + offset * sum_g : sum_g_xc;
  };
  if (output_mask[1] && defined(weight)) {
    at::Tensor per_plane;
    for (size_t t = 0; t < terms.size(); ++t) {
      const at::Tensor term = sum_g_xmu(t) * terms[t].layout.expand(terms[t].invstd) * terms[t].weight;
      per_plane = per_plane.defined() ? per_plane + term : term;
    }
    grad_weight = per_plane.sum(0).to(weight->scalar_type());
  }
  if (output_mask[2] && defined(bias)) {
    grad_bias = sum_g.sum(0).to(bias->scalar_type());
  }

  at::Tensor grad_input, grad_residual;
  if (output_mask[0]) {
    grad_input = empty_like_view(view);
  }
  if (output_mask[3] && defined(residual)) {
    grad_residual = empty_like_view(view);
  }
  if (!grad_input.defined() && !grad_residual.defined()) {
    return {std::nullopt, optional_of(grad_weight), optional_of(grad_bias), std::nullopt, optional_of(grad_act_weight)};
  }
  at::Tensor k1 = at::zeros(coef_shape, scale.options());
  at::Tensor k2 = at::zeros_like(k1);
  at::Tensor k3 = at::zeros_like(k1);
  for (size_t t = 0; t < terms.size(); ++t) {
    const NormTerm& term = terms[t];
    const at::Tensor& invstd = term.invstd;
    k1.add_(term.layout.expand(invstd) * w * term.weight);
    if (!grad_input.defined() || !sum_g.defined()) {
      continue;
    }
    const double count = term.layout.count(view.S);
    if (term.var_from_input) {
      const at::Tensor sum_u_xmu = term.layout.reduce(w * sum_g_xmu(t));
      const at::Tensor k2_term = term.layout.expand(invstd.pow(3) * sum_u_xmu) * (-term.weight / count);
      k2.add_(k2_term);
      // k2_term multiplies (x - own mean) = (x - center) + (center - own mean).
      const at::Tensor& own_mean = term.var_center.defined() ? term.var_center : term.mean;
      const at::Tensor offset = offset_from_center(term.layout, own_mean);
      if (offset.defined()) {
        k3.add_(k2_term * offset);
      }
    }
    if (term.mean_from_input) {
      const at::Tensor sum_u = term.layout.reduce(w * sum_g);
      k3.sub_(term.layout.expand(invstd * sum_u) * (term.weight / count));
    }
  }
  if (!empty) {
    kernels.backward_apply(grad_view, view, res, scale, shift, center, k1, k2, k3, indexing, act, grad_input,
                           grad_residual);
  }
  return {optional_of(grad_input), optional_of(grad_weight), optional_of(grad_bias), optional_of(grad_residual),
          optional_of(grad_act_weight)};
}

NormActGrads backward_op(std::string_view op, const at::Tensor& grad_out, const at::Tensor& input,
                         const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& residual, c10::string_view activation,
                         c10::ArrayRef<double> activation_params, const std::optional<at::Tensor>& activation_weight,
                         const std::optional<at::Tensor>& activation_seed, std::array<bool, 5> output_mask,
                         bool any_rank,
                         const std::function<std::vector<NormTerm>(const ChannelView&, at::ScalarType)>& make_terms) {
  check_input(op, input, any_rank);
  check_grad_out(op, grad_out, input);
  check_residual(op, residual, input);
  const ChannelView view = canonicalize(input);
  const ActivationArgs act =
      make_activation_args(op, activation, activation_params, activation_weight, activation_seed, view.C, input);
  const std::vector<NormTerm> terms = make_terms(view, accumulation_dtype(input.scalar_type()));
  return backward_from_terms(grad_out, view, residual, weight, bias, activation_weight, terms, act, output_mask);
}

at::Tensor dense_like(const at::Tensor& input) {
  if (input.is_contiguous() || (input.dim() == 4 && input.is_contiguous(at::MemoryFormat::ChannelsLast)) ||
      (input.dim() == 5 && input.is_contiguous(at::MemoryFormat::ChannelsLast3d))) {
    return at::empty_like(input);
  }
  return at::empty_like(input, input.suggest_memory_format());
}

NormActGrads backward_meta_outputs(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                                   const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                   const std::optional<at::Tensor>& activation_weight,
                                   std::array<bool, 5> output_mask) {
  auto like_if = [](bool wanted, const std::optional<at::Tensor>& t) -> std::optional<at::Tensor> {
    return wanted && defined(t) ? std::optional<at::Tensor>(at::empty_like(*t)) : std::nullopt;
  };
  return {output_mask[0] ? std::optional<at::Tensor>(dense_like(input)) : std::nullopt, like_if(output_mask[1], weight),
          like_if(output_mask[2], bias),
          output_mask[3] && defined(residual) ? std::optional<at::Tensor>(dense_like(input)) : std::nullopt,
          like_if(output_mask[4], activation_weight)};
}

NormActGrads running_stats_norm_backward_meta(const at::Tensor&, const at::Tensor& input,
                                              const std::optional<at::Tensor>& weight,
                                              const std::optional<at::Tensor>& bias,
                                              const std::optional<at::Tensor>& residual, const at::Tensor&,
                                              const at::Tensor&, bool, c10::string_view, c10::ArrayRef<double>,
                                              const std::optional<at::Tensor>& activation_weight,
                                              const std::optional<at::Tensor>&, std::array<bool, 5> output_mask) {
  return backward_meta_outputs(input, weight, bias, residual, activation_weight, output_mask);
}

}  // namespace fusednorm::detail
