// fusednorm::batch_layer_norm_act and its backward: Batch-Layer Normalization
// (Ziaee & Cano 2022, arXiv 2209.08898) on the channel-norm engine.
//
// BLN mixes a batch-normalised and a layer-normalised copy of the input with
// weights set by the mini-batch size m, as the authors' code does:
//   x_hat = ((1/m - zeta) * x_hat_layer + (1 - 1/m - zeta) * x_hat_batch) / sqrt(d),  zeta = 1e-4,
//   y = weight * x_hat + bias,
// with d the number of features (channels). Both copies are per-(sample, channel)
// affine maps of x, so BLN is two terms of norm_common.h: a statistic per channel
// over the batch (and positions), and one per sample over the channels (and positions).
// For (N, C) input that is exactly the authors' per-feature / per-sample split.
//
// Training uses the mini-batch's statistics and updates the running ones
// (population statistics as in batch norm: unbiased variances, averaged with
// `momentum`). At inference each of the four statistics (batch mean, batch
// variance, feature mean, feature variance) comes from its running estimate or
// from the mini-batch, as use_running_stats says; that choice is the authors'
// inference-time hyper-parameter. The feature statistics' running estimates are
// averaged over the samples of a batch (one value, shape [1]).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "activation_spec.h"
#include "channel_norm.h"
#include "fusednorm/ops.h"
#include "norm_common.h"

namespace fusednorm {
namespace detail {
namespace {

constexpr std::string_view kOp = "batch_layer_norm_act";
// The paper's small constant that keeps both mixing weights away from 0 and 1.
constexpr double kZeta = 1e-4;

enum RunningStat : size_t { kBatchMean = 0, kBatchVar = 1, kFeatureMean = 2, kFeatureVar = 3 };

void check_feature_stat(const std::optional<at::Tensor>& t, const char* name, const at::Tensor& input) {
  if (!defined(t)) {
    return;
  }
  TORCH_CHECK(t->dim() == 1 && t->sym_numel() == 1, kOp, ": ", name, " must be a 1-d tensor of 1 element, got shape ",
              t->sym_sizes());
  TORCH_CHECK(t->device() == input.device(), kOp, ": ", name, " is on ", t->device(), " but input is on ",
              input.device());
  TORCH_CHECK(at::isFloatingType(t->scalar_type()), kOp, ": ", name, " must be floating point, got ", t->scalar_type());
}

void check_forward_args(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
                        const std::optional<at::Tensor>& running_var,
                        const std::optional<at::Tensor>& running_feature_mean,
                        const std::optional<at::Tensor>& running_feature_var, const std::optional<at::Tensor>& residual,
                        bool training, int64_t batch_size, double eps, std::array<bool, 4> use_running_stats,
                        c10::string_view activation) {
  check_input(kOp, input);
  check_common_forward_args(kOp, input, weight, bias, residual, eps, activation);
  check_running_stats(kOp, running_mean, running_var, input);
  check_feature_stat(running_feature_mean, "running_feature_mean", input);
  check_feature_stat(running_feature_var, "running_feature_var", input);
  TORCH_CHECK(defined(running_feature_mean) == defined(running_feature_var), kOp,
              ": running_feature_mean and running_feature_var must be given together");
  TORCH_CHECK(batch_size >= 1, kOp, ": batch_size (the m of the mixing weights 1/m) must be positive, got ",
              batch_size);
  const std::array<const std::optional<at::Tensor>*, 4> running{&running_mean, &running_var, &running_feature_mean,
                                                                &running_feature_var};
  constexpr std::array<const char*, 4> names{"running_mean", "running_var", "running_feature_mean",
                                             "running_feature_var"};
  for (size_t i = 0; i < running.size(); ++i) {
    TORCH_CHECK(training || !use_running_stats[i] || defined(*running[i]), kOp, ": use_running_stats[", i,
                "] asks for ", names[i], " when training=False, but it was not given");
  }
}

// The statistics of both terms: what normalises (mean, invstd) and, when a
// variance comes from the input but its mean does not, the input's own mean.
struct BlnStats {
  at::Tensor batch_mean, batch_invstd, batch_own_mean;        // [1, C, 1]
  at::Tensor feature_mean, feature_invstd, feature_own_mean;  // [N, 1, 1]
};

StatLayout batch_layout(const ChannelView& view) { return StatLayout{view.N, view.C, view.C, /*over_batch=*/true}; }

StatLayout feature_layout(const ChannelView& view) { return StatLayout{view.N, view.C, 1, /*over_batch=*/false}; }

std::array<bool, 4> stats_from_running(bool training, std::array<bool, 4> use_running_stats) {
  return training ? std::array<bool, 4>{} : use_running_stats;
}

std::vector<NormTerm> bln_terms(const ChannelView& view, int64_t batch_size, std::array<bool, 4> from_running,
                                const BlnStats& stats) {
  const double inv_m = 1.0 / static_cast<double>(batch_size);
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(view.C));
  NormTerm batch{
      batch_layout(view),        stats.batch_mean,         stats.batch_invstd,  (1.0 - inv_m - kZeta) * inv_sqrt_d,
      !from_running[kBatchMean], !from_running[kBatchVar], stats.batch_own_mean};
  NormTerm feature{feature_layout(view),         stats.feature_mean,          stats.feature_invstd,
                   (inv_m - kZeta) * inv_sqrt_d, !from_running[kFeatureMean], !from_running[kFeatureVar],
                   stats.feature_own_mean};
  return {batch, feature};
}

// The input's own means when a term takes its variance from the input and its
// mean from a running estimate (else undefined).
std::pair<at::Tensor, at::Tensor> own_means_if_needed(const ChannelView& view, std::array<bool, 4> from_running) {
  const bool batch = !from_running[kBatchVar] && from_running[kBatchMean];
  const bool feature = !from_running[kFeatureVar] && from_running[kFeatureMean];
  if (!batch && !feature) {
    return {};
  }
  auto [partial_mean, partial_m2, count] = partial_moments(view);
  at::Tensor batch_mean = layout_moments(batch_layout(view), partial_mean, partial_m2, count, view.S).first;
  at::Tensor feature_mean = layout_moments(feature_layout(view), partial_mean, partial_m2, count, view.S).first;
  return {batch ? batch_mean : at::Tensor(), feature ? feature_mean : at::Tensor()};
}

using BlnOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

BlnOutputs batch_layer_norm_act_forward(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& running_feature_mean, const std::optional<at::Tensor>& running_feature_var,
    const std::optional<at::Tensor>& residual, bool training, int64_t batch_size, double momentum, double eps,
    std::array<bool, 4> use_running_stats, c10::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  // Every check runs before anything is written, so a rejected call leaves the
  // running statistics untouched.
  check_forward_args(input, weight, bias, running_mean, running_var, running_feature_mean, running_feature_var,
                     residual, training, batch_size, eps, use_running_stats, activation);
  const ChannelView view = canonicalize(input);
  const ActivationArgs act =
      make_activation_args(kOp, activation, activation_params, activation_weight, activation_seed, view.C, input);
  const auto acc = accumulation_dtype(input.scalar_type());
  const std::array<bool, 4> from_running = stats_from_running(training, use_running_stats);
  const StatLayout batch = batch_layout(view), feature = feature_layout(view);

  at::Tensor batch_mean, batch_var, feature_mean, feature_var;  // the input's own
  if (!(from_running[0] && from_running[1] && from_running[2] && from_running[3])) {
    auto [partial_mean, partial_m2, count] = partial_moments(view);
    std::tie(batch_mean, batch_var) = layout_moments(batch, partial_mean, partial_m2, count, view.S);
    std::tie(feature_mean, feature_var) = layout_moments(feature, partial_mean, partial_m2, count, view.S);
  }
  // As torch's batch norm, an empty batch leaves the running statistics alone.
  const bool update_running = training && input.numel() > 0;
  if (update_running && defined(running_mean)) {
    const double n = batch.count(view.S);
    update_running_stat(*running_mean, batch_mean.reshape({view.C}), momentum);
    update_running_stat(*running_var, batch_var.reshape({view.C}), momentum, n > 1 ? n / (n - 1) : 1.0);
  }
  if (update_running && defined(running_feature_mean)) {
    const double d = feature.count(view.S);
    update_running_stat(*running_feature_mean, feature_mean.mean().reshape({1}), momentum);
    update_running_stat(*running_feature_var, feature_var.mean().reshape({1}), momentum, d > 1 ? d / (d - 1) : 1.0);
  }
  // A running statistic broadcast to its layout; copies, as outputs must not alias inputs.
  auto running_stat = [&](const std::optional<at::Tensor>& t, const StatLayout& layout) {
    return t->to(acc, /*non_blocking=*/false, /*copy=*/true).reshape({1, -1, 1}).expand(layout.shape()).contiguous();
  };
  BlnStats stats;
  stats.batch_mean = from_running[kBatchMean] ? running_stat(running_mean, batch) : batch_mean;
  stats.batch_invstd = invstd_from_var(from_running[kBatchVar] ? running_stat(running_var, batch) : batch_var, eps);
  stats.feature_mean = from_running[kFeatureMean] ? running_stat(running_feature_mean, feature) : feature_mean;
  stats.feature_invstd =
      invstd_from_var(from_running[kFeatureVar] ? running_stat(running_feature_var, feature) : feature_var, eps);
  if (from_running[kBatchMean] && !from_running[kBatchVar]) {
    stats.batch_own_mean = batch_mean;
  }
  if (from_running[kFeatureMean] && !from_running[kFeatureVar]) {
    stats.feature_own_mean = feature_mean;
  }
  at::Tensor out =
      forward_from_terms(view, residual, weight, bias, bln_terms(view, batch_size, from_running, stats), act);
  return {out, stats.batch_mean.reshape({view.C}), stats.batch_invstd.reshape({view.C}),
          stats.feature_mean.reshape({view.N}), stats.feature_invstd.reshape({view.N})};
}

NormActGrads batch_layer_norm_act_backward_impl(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, const at::Tensor& batch_mean,
    const at::Tensor& batch_invstd, const at::Tensor& feature_mean, const at::Tensor& feature_invstd, bool training,
    int64_t batch_size, std::array<bool, 4> use_running_stats, c10::string_view activation,
    c10::ArrayRef<double> activation_params, const std::optional<at::Tensor>& activation_weight,
    const std::optional<at::Tensor>& activation_seed, std::array<bool, 5> output_mask) {
  return backward_op("_batch_layer_norm_act_backward", grad_out, input, weight, bias, residual, activation,
                     activation_params, activation_weight, activation_seed, output_mask, /*any_rank=*/false,
                     [&](const ChannelView& view, at::ScalarType acc) {
                       const std::array<bool, 4> from_running = stats_from_running(training, use_running_stats);
                       auto saved = [&](const at::Tensor& t, const StatLayout& layout) {
                         return t.to(acc).reshape(layout.shape()).contiguous();
                       };
                       BlnStats stats;
                       stats.batch_mean = saved(batch_mean, batch_layout(view));
                       stats.batch_invstd = saved(batch_invstd, batch_layout(view));
                       stats.feature_mean = saved(feature_mean, feature_layout(view));
                       stats.feature_invstd = saved(feature_invstd, feature_layout(view));
                       std::tie(stats.batch_own_mean, stats.feature_own_mean) = own_means_if_needed(view, from_running);
                       return bln_terms(view, batch_size, from_running, stats);
                     });
}

BlnOutputs batch_layer_norm_act_meta(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& running_feature_mean, const std::optional<at::Tensor>& running_feature_var,
    const std::optional<at::Tensor>& residual, bool training, int64_t batch_size, double, double eps,
    std::array<bool, 4> use_running_stats, c10::string_view activation, c10::ArrayRef<double>,
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&) {
  check_forward_args(input, weight, bias, running_mean, running_var, running_feature_mean, running_feature_var,
                     residual, training, batch_size, eps, use_running_stats, activation);
  const auto stats_options = input.options().dtype(accumulation_dtype(input.scalar_type()));
  auto per_channel = [&] { return at::empty_symint({input.sym_size(1)}, stats_options); };
  auto per_sample = [&] { return at::empty_symint({input.sym_size(0)}, stats_options); };
  return {dense_like(input), per_channel(), per_channel(), per_sample(), per_sample()};
}

NormActGrads batch_layer_norm_act_backward_meta(const at::Tensor&, const at::Tensor& input,
                                                const std::optional<at::Tensor>& weight,
                                                const std::optional<at::Tensor>& bias,
                                                const std::optional<at::Tensor>& residual, const at::Tensor&,
                                                const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, int64_t,
                                                std::array<bool, 4>, c10::string_view, c10::ArrayRef<double>,
                                                const std::optional<at::Tensor>& activation_weight,
                                                const std::optional<at::Tensor>&, std::array<bool, 5> output_mask) {
  return backward_meta_outputs(input, weight, bias, residual, activation_weight, output_mask);
}

using BatchLayerNormSignature = BlnOutputs(const at::Tensor&, const std::optional<at::Tensor>&,
                                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool,
                                           int64_t, double, double, std::array<bool, 4>, c10::string_view,
                                           c10::ArrayRef<double>, const std::optional<at::Tensor>&,
                                           const std::optional<at::Tensor>&);
using BatchLayerNormBackwardSignature = NormActGrads(const at::Tensor&, const at::Tensor&,
                                                     const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                                     const std::optional<at::Tensor>&, const at::Tensor&,
                                                     const at::Tensor&, const at::Tensor&, const at::Tensor&, bool,
                                                     int64_t, std::array<bool, 4>, c10::string_view,
                                                     c10::ArrayRef<double>, const std::optional<at::Tensor>&,
                                                     const std::optional<at::Tensor>&, std::array<bool, 5>);

}  // namespace
}  // namespace detail

TORCH_LIBRARY_FRAGMENT(fusednorm, m) {
  m.def(
      "batch_layer_norm_act(Tensor input, Tensor? weight, Tensor? bias, Tensor(a!)? running_mean, "
      "Tensor(b!)? running_var, Tensor(c!)? running_feature_mean, Tensor(d!)? running_feature_var, "
      "Tensor? residual, bool training, int batch_size, float momentum, float eps, bool[4] use_running_stats, "
      "str activation=\"identity\", float[] activation_params=[], Tensor? activation_weight=None, "
      "Tensor? activation_seed=None) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "_batch_layer_norm_act_backward(Tensor grad_out, Tensor input, Tensor? weight, Tensor? bias, "
      "Tensor? residual, Tensor batch_mean, Tensor batch_invstd, Tensor feature_mean, Tensor feature_invstd, "
      "bool training, int batch_size, bool[4] use_running_stats, str activation, float[] activation_params, "
      "Tensor? activation_weight, Tensor? activation_seed, bool[5] output_mask) "
      "-> (Tensor?, Tensor?, Tensor?, Tensor?, Tensor?)");
}

TORCH_LIBRARY_IMPL(fusednorm, CPU, m) {
  m.impl("batch_layer_norm_act", &detail::batch_layer_norm_act_forward);
  m.impl("_batch_layer_norm_act_backward", &detail::batch_layer_norm_act_backward_impl);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(fusednorm, CUDA, m) {
  m.impl("batch_layer_norm_act", &detail::batch_layer_norm_act_forward);
  m.impl("_batch_layer_norm_act_backward", &detail::batch_layer_norm_act_backward_impl);
}
#endif

TORCH_LIBRARY_IMPL(fusednorm, Meta, m) {
  m.impl("batch_layer_norm_act", &detail::batch_layer_norm_act_meta);
  m.impl("_batch_layer_norm_act_backward", &detail::batch_layer_norm_act_backward_meta);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_layer_norm_act(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& running_feature_mean, const std::optional<at::Tensor>& running_feature_var,
    const std::optional<at::Tensor>& residual, bool training, int64_t batch_size, double momentum, double eps,
    std::array<bool, 4> use_running_stats, std::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed) {
  static auto op = detail::typed_op<detail::BatchLayerNormSignature>("fusednorm::batch_layer_norm_act");
  return op.call(input, weight, bias, running_mean, running_var, running_feature_mean, running_feature_var, residual,
                 training, batch_size, momentum, eps, use_running_stats, activation, activation_params,
                 activation_weight, activation_seed);
}

NormActGrads batch_layer_norm_act_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, const at::Tensor& batch_mean,
    const at::Tensor& batch_invstd, const at::Tensor& feature_mean, const at::Tensor& feature_invstd, bool training,
    int64_t batch_size, std::array<bool, 4> use_running_stats, std::string_view activation,
    c10::ArrayRef<double> activation_params, const std::optional<at::Tensor>& activation_weight,
    const std::optional<at::Tensor>& activation_seed, std::array<bool, 5> output_mask) {
  static auto op =
      detail::typed_op<detail::BatchLayerNormBackwardSignature>("fusednorm::_batch_layer_norm_act_backward");
  return op.call(grad_out, input, weight, bias, residual, batch_mean, batch_invstd, feature_mean, feature_invstd,
                 training, batch_size, use_running_stats, activation, activation_params, activation_weight,
                 activation_seed, output_mask);
}

}  // namespace fusednorm
