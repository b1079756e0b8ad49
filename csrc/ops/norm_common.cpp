#include "norm_common.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "activation_spec.h"
#include "kernel_registry.h"

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

void update_running_stat(const at::Tensor& running, const at::Tensor& value, double momentum, double value_scale) {
  if (host_combine_enabled() && running.is_cpu() && value.is_cpu() && running.is_contiguous() &&
      value.is_contiguous() && running.numel() == value.numel() &&
      (value.scalar_type() == at::kFloat || value.scalar_type() == at::kDouble)) {
    // A loop instead of five small ATen ops, in double.
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, running.scalar_type(), "update_running_stat", [&] {
      scalar_t* r = running.data_ptr<scalar_t>();
      const bool is_double = value.scalar_type() == at::kDouble;
      const double* vd = is_double ? value.const_data_ptr<double>() : nullptr;
      const float* vf = is_double ? nullptr : value.const_data_ptr<float>();
      for (int64_t i = 0; i < running.numel(); ++i) {
        const double v = (is_double ? vd[i] : static_cast<double>(vf[i])) * value_scale;
        r[i] = static_cast<scalar_t>(static_cast<double>(r[i]) * (1 - momentum) + v * momentum);
      }
    });
    return;
  }
  const at::Tensor scaled = value_scale == 1.0 ? value : value * value_scale;
  running.copy_(running.to(value.scalar_type()) * (1 - momentum) + scaled * momentum);
}

at::Tensor invstd_from_var(const at::Tensor& var, double eps) {
  if (host_combine_enabled() && var.is_cpu() && var.is_contiguous() &&
      (var.scalar_type() == at::kFloat || var.scalar_type() == at::kDouble)) {
    at::Tensor invstd = at::empty_like(var);
    AT_DISPATCH_FLOATING_TYPES(var.scalar_type(), "invstd_from_var", [&] {
      const scalar_t* v = var.const_data_ptr<scalar_t>();
      scalar_t* out = invstd.data_ptr<scalar_t>();
      for (int64_t i = 0; i < var.numel(); ++i) {
        out[i] = static_cast<scalar_t>(1.0 / std::sqrt(static_cast<double>(v[i]) + eps));
      }
    });
    return invstd;
  }
  return (var + eps).rsqrt_();
}

std::vector<int64_t> StatLayout::shape() const { return {over_batch ? 1 : N, groups, 1}; }

at::Tensor StatLayout::reduce(const at::Tensor& per_plane) const {
  const at::Tensor grouped = per_plane.expand({N, C}).reshape({N, groups, C / groups});
  return over_batch ? grouped.sum(at::IntArrayRef{0, 2}, /*keepdim=*/true)
                    : grouped.sum(at::IntArrayRef{2}, /*keepdim=*/true);
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
  // Where the statistics are a 3-d reduction of [N, C, K] (possibly reshaped in
  // place), combine_moments takes its host path on CPU.
  const int64_t per_group = layout.groups > 0 ? layout.C / layout.groups : 0;
  if (partial_mean.dim() == 3 && per_group > 0 && (layout.over_batch ? per_group == 1 : true)) {
    // over_batch with a channel per group: dims {0, 2} of [N, C, K]; otherwise
    // dims {1, 2} of [N * groups, C / groups, K].
    const std::vector<int64_t> shape{layout.over_batch ? layout.N : layout.N * layout.groups, per_group, K};
    const std::vector<int64_t> as_3d = layout.over_batch ? partial_mean.sizes().vec() : shape;
    const std::vector<int64_t> dims = layout.over_batch ? std::vector<int64_t>{0, 2} : std::vector<int64_t>{1, 2};
    auto [mean, var, n] =
        combine_moments(partial_mean.reshape(as_3d), partial_m2.reshape(as_3d), count, spatial_size, dims);
    return {mean.reshape(layout.shape()), var.reshape(layout.shape())};
  }
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

// ---- The combine on the host (CPU tensors) ----
//
// The combine's tensors are small ([N, C] at most), and on a CPU each ATen op of
// the general path costs a dispatch, an allocation and often a parallel region:
// the few dozen of them in a backward took longer than the kernels themselves at
// the sizes of a small network. For CPU tensors the same formulas run as loops,
// accumulated in double; the general path serves every other device.

// A term's statistics as raw pointers, with the index of the statistic of (n, c).
template <typename acc_t>
struct HostTerm {
  const acc_t* mean = nullptr;
  const acc_t* invstd = nullptr;
  const acc_t* own_mean = nullptr;  // the mean a variance from the input is taken about
  bool mean_is_center = false;      // mean (own_mean) is terms[0].mean: no offset from the center
  bool own_is_center = false;
  int64_t groups = 1;
  int64_t channels_per_group = 1;
  bool over_batch = false;
  double weight = 1.0;
  bool mean_from_input = true;
  bool var_from_input = true;
  double count = 0.0;

  int64_t num_stats(int64_t N) const { return (over_batch ? 1 : N) * groups; }

  // Calls f(n, c, i) for the planes of rows n < num_rows, i the index of the
  // statistic of (n, c); in memory order, without a division per plane.
  template <typename F>
  void for_each_plane(int64_t num_rows, const F& f) const {
    for (int64_t n = 0; n < num_rows; ++n) {
      const int64_t base = over_batch ? 0 : n * groups;
      for (int64_t g = 0, c = 0; g < groups; ++g) {
        for (int64_t end = c + channels_per_group; c < end; ++c) {
          f(n, c, base + g);
        }
      }
    }
  }
};

bool host_stat_ok(const at::Tensor& t, const StatLayout& layout, at::ScalarType acc) {
  return t.defined() && t.is_cpu() && t.scalar_type() == acc && t.is_contiguous() &&
         t.numel() == (layout.over_batch ? 1 : layout.N) * layout.groups;
}

// Whether the host loops can take these terms: CPU statistics in the
// accumulation dtype, dense.
bool host_combine_applies(const ChannelView& view, const std::vector<NormTerm>& terms) {
  if (!host_combine_enabled() || !view.data.is_cpu() || terms.empty()) {
    return false;
  }
  const auto acc = accumulation_dtype(view.data.scalar_type());
  return std::all_of(terms.begin(), terms.end(), [&](const NormTerm& t) {
    return host_stat_ok(t.mean, t.layout, acc) && host_stat_ok(t.invstd, t.layout, acc) &&
           (!t.var_center.defined() || host_stat_ok(t.var_center, t.layout, acc));
  });
}

template <typename acc_t>
std::vector<HostTerm<acc_t>> host_terms(const std::vector<NormTerm>& terms, int64_t spatial_size) {
  std::vector<HostTerm<acc_t>> out;
  out.reserve(terms.size());
  for (const NormTerm& t : terms) {
    HostTerm<acc_t> h;
    h.mean = t.mean.const_data_ptr<acc_t>();
    h.invstd = t.invstd.const_data_ptr<acc_t>();
    const at::Tensor& own = t.var_center.defined() ? t.var_center : t.mean;
    h.own_mean = own.const_data_ptr<acc_t>();
    h.mean_is_center = t.mean.is_same(terms[0].mean);
    h.own_is_center = own.is_same(terms[0].mean);
    h.groups = t.layout.groups;
    h.channels_per_group = t.layout.groups > 0 ? std::max<int64_t>(1, t.layout.C / t.layout.groups) : 1;
    h.over_batch = t.layout.over_batch;
    h.weight = t.weight;
    h.mean_from_input = t.mean_from_input;
    h.var_from_input = t.var_from_input;
    h.count = t.layout.count(spatial_size);
    out.push_back(h);
  }
  return out;
}

// Rows of the coefficients: 1 (indexed by channel) when every statistic is shared
// by the whole batch, N otherwise; as the broadcast of the general path.
int64_t coefficient_rows(const std::vector<NormTerm>& terms, int64_t N) {
  const bool all_over_batch =
      std::all_of(terms.begin(), terms.end(), [](const NormTerm& t) { return t.layout.over_batch; });
  return all_over_batch ? 1 : N;
}

// A per-channel parameter in the accumulation dtype, dense (undefined if absent).
at::Tensor host_param(const std::optional<at::Tensor>& t, at::ScalarType acc) {
  if (!defined(t)) {
    return at::Tensor();
  }
  return t->scalar_type() == acc && t->is_contiguous() ? *t : t->to(acc).contiguous();
}

template <typename acc_t>
at::Tensor host_tensor(const std::vector<double>& values, at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
  acc_t* p = out.data_ptr<acc_t>();
  for (size_t i = 0; i < values.size(); ++i) {
    p[i] = static_cast<acc_t>(values[i]);
  }
  return out;
}

// affine_coefficients on the host: scale and shift of shape [rows, C].
template <typename acc_t>
std::pair<at::Tensor, at::Tensor> host_affine_coefficients(const std::vector<HostTerm<acc_t>>& terms, int64_t rows,
                                                           int64_t C, const acc_t* w, const acc_t* b,
                                                           const at::TensorOptions& options) {
  at::Tensor scale = at::empty({rows, C}, options);
  at::Tensor shift = at::empty({rows, C}, options);
  acc_t* scale_ptr = scale.data_ptr<acc_t>();
  acc_t* shift_ptr = shift.data_ptr<acc_t>();
  std::vector<double> s(rows * C, 0.0), sh(rows * C, 0.0);
  for (const auto& t : terms) {
    t.for_each_plane(rows, [&](int64_t r, int64_t c, int64_t i) {
      const double term_scale = static_cast<double>(t.invstd[i]) * t.weight;
      s[r * C + c] += term_scale;
      sh[r * C + c] -= static_cast<double>(t.mean[i]) * term_scale;
    });
  }
  for (int64_t r = 0, q = 0; r < rows; ++r) {
    for (int64_t c = 0; c < C; ++c, ++q) {
      const double wc = w != nullptr ? static_cast<double>(w[c]) : 1.0;
      scale_ptr[q] = static_cast<acc_t>(s[q] * wc);
      shift_ptr[q] = static_cast<acc_t>(sh[q] * wc + (b != nullptr ? static_cast<double>(b[c]) : 0.0));
    }
  }
  return {scale, shift};
}

template <typename acc_t>
std::pair<at::Tensor, at::Tensor> host_affine_coefficients(const ChannelView& view, const std::vector<NormTerm>& terms,
                                                           const std::optional<at::Tensor>& weight,
                                                           const std::optional<at::Tensor>& bias) {
  const auto acc = c10::CppTypeToScalarType<acc_t>::value;
  const at::Tensor w = host_param(weight, acc), b = host_param(bias, acc);
  return host_affine_coefficients<acc_t>(host_terms<acc_t>(terms, view.S), coefficient_rows(terms, view.N), view.C,
                                         w.defined() ? w.const_data_ptr<acc_t>() : nullptr,
                                         b.defined() ? b.const_data_ptr<acc_t>() : nullptr,
                                         view.data.options().dtype(acc));
}

// backward_from_terms with the combine on the host; the same steps, in the same order.
template <typename acc_t>
NormActGrads host_backward_from_terms(const at::Tensor& grad_out, const ChannelView& view,
                                      const std::optional<at::Tensor>& residual,
                                      const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                      const std::optional<at::Tensor>& activation_weight,
                                      const std::vector<NormTerm>& terms, const ActivationArgs& act,
                                      std::array<bool, 5> output_mask) {
  const auto acc = c10::CppTypeToScalarType<acc_t>::value;
  const auto options = view.data.options().dtype(acc);
  const int64_t N = view.N, C = view.C, rows = coefficient_rows(terms, N);
  const ChannelNormKernels& kernels = channel_norm_kernels(view.data.device().type());
  const ChannelView grad_view{match_layout(grad_out, view), view.N, view.C, view.S, view.layout};
  const at::Tensor res = residual_for(view, residual);
  const std::vector<HostTerm<acc_t>> ht = host_terms<acc_t>(terms, view.S);
  const at::Tensor w_acc = host_param(weight, acc), b_acc = host_param(bias, acc);
  const acc_t* w = w_acc.defined() ? w_acc.const_data_ptr<acc_t>() : nullptr;
  const auto [scale, shift] = host_affine_coefficients<acc_t>(
      ht, rows, C, w, b_acc.defined() ? b_acc.const_data_ptr<acc_t>() : nullptr, options);
  const CoefIndexing indexing = indexing_of(scale);
  // The center of the kernels' sums: term 0's mean per (row, c).
  at::Tensor center = at::empty({rows, C}, options);
  acc_t* center_ptr = center.data_ptr<acc_t>();
  ht[0].for_each_plane(rows, [&](int64_t r, int64_t c, int64_t i) { center_ptr[r * C + c] = ht[0].mean[i]; });
  const auto center_at = [&](int64_t n, int64_t c) {
    return static_cast<double>(center_ptr[(rows == 1 ? 0 : n) * C + c]);
  };
  const auto weight_at = [&](int64_t c) { return w != nullptr ? static_cast<double>(w[c]) : 1.0; };

  const bool any_from_input =
      std::any_of(terms.begin(), terms.end(), [](const NormTerm& t) { return t.mean_from_input || t.var_from_input; });
  const bool want_prelu = output_mask[4] && act.params.kind == math::ActivationKind::kPReLU;
  const bool need_sums = (output_mask[0] && any_from_input) || output_mask[1] || output_mask[2] || want_prelu;
  const bool empty = view.data.numel() == 0;
  // Sums of g and of g * (x - center) per (n, c).
  // When every statistic is over the batch (rows == 1), everything below is
  // linear in these sums with coefficients per channel: they are summed over
  // the batch here, and the loops below run over one row instead of N.
  const int64_t sum_rows = rows == 1 ? 1 : N;
  std::vector<double> sum_g, sum_g_xc;
  at::Tensor grad_weight, grad_bias, grad_act_weight;
  if (need_sums) {
    sum_g.assign(sum_rows * C, 0.0);
    sum_g_xc.assign(sum_rows * C, 0.0);
    at::Tensor partial_prelu;
    if (!empty) {
      auto [partial_g, partial_g_xc, prelu] =
          kernels.backward_partial_sums(grad_view, view, res, scale, shift, center, indexing, act, want_prelu);
      partial_prelu = prelu;
      const at::Tensor pg = partial_g.contiguous(), pgx = partial_g_xc.contiguous();
      const acc_t* pg_ptr = pg.const_data_ptr<acc_t>();
      const acc_t* pgx_ptr = pgx.const_data_ptr<acc_t>();
      const int64_t K = pg.size(2);
      for (int64_t n = 0; n < N; ++n) {
        double* sg = sum_g.data() + (sum_rows == 1 ? 0 : n * C);
        double* sgx = sum_g_xc.data() + (sum_rows == 1 ? 0 : n * C);
        const acc_t* pg_row = pg_ptr + n * C * K;
        const acc_t* pgx_row = pgx_ptr + n * C * K;
        if (K == 1) {
          for (int64_t c = 0; c < C; ++c) {
            sg[c] += static_cast<double>(pg_row[c]);
            sgx[c] += static_cast<double>(pgx_row[c]);
          }
        } else {
          for (int64_t c = 0; c < C; ++c) {
            for (int64_t k = 0; k < K; ++k) {
              sg[c] += static_cast<double>(pg_row[c * K + k]);
              sgx[c] += static_cast<double>(pgx_row[c * K + k]);
            }
          }
        }
      }
    }
    if (want_prelu) {
      const at::Tensor per_channel =
          (partial_prelu.defined() ? partial_prelu : at::zeros({N, C, 1}, options)).sum(at::IntArrayRef{0, 2});
      const at::Tensor& aw = *activation_weight;
      grad_act_weight = (aw.numel() == 1 ? per_channel.sum().reshape(aw.sizes()) : per_channel.reshape(aw.sizes()))
                            .to(aw.scalar_type());
    }
  }
  // sum over plane (n, c) of g * (x - mean_t)
  // (i: the index of the plane's statistic in t)
  const auto sum_g_xmu = [&](const HostTerm<acc_t>& t, int64_t n, int64_t c, int64_t i) {
    const int64_t plane = n * C + c;
    return t.mean_is_center ? sum_g_xc[plane]
                            : sum_g_xc[plane] + (center_at(n, c) - static_cast<double>(t.mean[i])) * sum_g[plane];
  };
  if (output_mask[1] && defined(weight)) {
    std::vector<double> gw(C, 0.0);
    for (const auto& t : ht) {
      t.for_each_plane(sum_rows, [&](int64_t n, int64_t c, int64_t i) {
        gw[c] += sum_g_xmu(t, n, c, i) * static_cast<double>(t.invstd[i]) * t.weight;
      });
    }
    grad_weight = host_tensor<acc_t>(gw, {C}, options).to(weight->scalar_type());
  }
  if (output_mask[2] && defined(bias)) {
    std::vector<double> gb(C, 0.0);
    for (int64_t n = 0; n < sum_rows; ++n) {
      for (int64_t c = 0; c < C; ++c) {
        gb[c] += sum_g[n * C + c];
      }
    }
    grad_bias = host_tensor<acc_t>(gb, {C}, options).to(bias->scalar_type());
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
  std::vector<double> k1(rows * C, 0.0), k2(rows * C, 0.0), k3(rows * C, 0.0);
  std::vector<double> per_stat;
  for (const auto& t : ht) {
    t.for_each_plane(rows, [&](int64_t r, int64_t c, int64_t i) {
      k1[r * C + c] += static_cast<double>(t.invstd[i]) * weight_at(c) * t.weight;
    });
    if (!grad_input.defined() || !need_sums) {
      continue;
    }
    if (t.var_from_input) {
      // k2_term = invstd^3 * sum(u * (x - mean)) * (-w_t / count), which multiplies
      // (x - own mean) = (x - center) + (center - own mean).
      per_stat.assign(t.num_stats(N), 0.0);
      t.for_each_plane(sum_rows,
                       [&](int64_t n, int64_t c, int64_t i) { per_stat[i] += weight_at(c) * sum_g_xmu(t, n, c, i); });
      t.for_each_plane(rows, [&](int64_t r, int64_t c, int64_t i) {
        const double invstd = static_cast<double>(t.invstd[i]);
        const double k2_term = invstd * invstd * invstd * per_stat[i] * (-t.weight / t.count);
        k2[r * C + c] += k2_term;
        if (!t.own_is_center) {
          k3[r * C + c] += k2_term * (center_at(r, c) - static_cast<double>(t.own_mean[i]));
        }
      });
    }
    if (t.mean_from_input) {
      per_stat.assign(t.num_stats(N), 0.0);
      t.for_each_plane(sum_rows,
                       [&](int64_t n, int64_t c, int64_t i) { per_stat[i] += weight_at(c) * sum_g[n * C + c]; });
      t.for_each_plane(rows, [&](int64_t r, int64_t c, int64_t i) {
        k3[r * C + c] -= static_cast<double>(t.invstd[i]) * per_stat[i] * (t.weight / t.count);
      });
    }
  }
  if (!empty) {
    kernels.backward_apply(grad_view, view, res, scale, shift, center, host_tensor<acc_t>(k1, {rows, C}, options),
                           host_tensor<acc_t>(k2, {rows, C}, options), host_tensor<acc_t>(k3, {rows, C}, options),
                           indexing, act, grad_input, grad_residual);
  }
  return {optional_of(grad_input), optional_of(grad_weight), optional_of(grad_bias), optional_of(grad_residual),
          optional_of(grad_act_weight)};
}

}  // namespace

at::Tensor forward_from_terms(const ChannelView& view, const std::optional<at::Tensor>& residual,
                              const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                              const std::vector<NormTerm>& terms, const ActivationArgs& act) {
  at::Tensor scale, shift;
  if (host_combine_applies(view, terms)) {
    AT_DISPATCH_FLOATING_TYPES(accumulation_dtype(view.data.scalar_type()), "host_affine_coefficients", [&] {
      std::tie(scale, shift) = host_affine_coefficients<scalar_t>(view, terms, weight, bias);
    });
  } else {
    std::tie(scale, shift) = affine_coefficients(terms, weight, bias);
  }
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
  if (host_combine_applies(view, terms)) {
    return AT_DISPATCH_FLOATING_TYPES(accumulation_dtype(view.data.scalar_type()), "host_backward_from_terms", [&] {
      return host_backward_from_terms<scalar_t>(grad_out, view, residual, weight, bias, activation_weight, terms, act,
                                                output_mask);
    });
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
      const at::Tensor per_channel = partial_prelu.sum(at::IntArrayRef{0, 2});
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
