// What the per-norm op files (batch_norm.cpp, group_norm.cpp, ...) share on top of
// the channel-norm engine: argument checks used by the real and the meta kernels,
// the grouping of per-(n, c) planes into statistics, the forward affine
// coefficients, the backward's k1/k2/k3 assembly, and the meta kernels' outputs.
//
// Every norm here normalises with one or more "terms": x_hat = sum_t w_t * (x - mean_t) * invstd_t,
// where each statistic is shared by a set of (n, c) planes (StatLayout). Batch norm
// is one term per channel over the batch, group norm one term per (sample, group),
// instance norm group norm with groups = C, and batch-layer norm two terms (one per
// channel over the batch, one per sample over the channels).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <array>
#include <functional>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "channel_norm.h"
#include "fusednorm/ops.h"

namespace fusednorm::detail {

bool defined(const std::optional<at::Tensor>& t);
std::optional<at::Tensor> optional_of(const at::Tensor& t);

// ---- Checks (symbolic-shape safe, so the meta kernels run them too) ----

// A floating-point (N, C, *) input: 2 to 5 dimensions, or any number from 2 on
// when any_rank (group norm takes whatever torch.group_norm takes).
void check_input(std::string_view op, const at::Tensor& input, bool any_rank = false);
// Absent, or a 1-d floating-point tensor with one element per channel of input, on input's device.
void check_per_channel(std::string_view op, const std::optional<at::Tensor>& t, const char* name,
                       const at::Tensor& input);
void check_residual(std::string_view op, const std::optional<at::Tensor>& residual, const at::Tensor& input);
void check_grad_out(std::string_view op, const at::Tensor& grad_out, const at::Tensor& input);
void check_eps(std::string_view op, double eps);
// weight, bias, residual and the activation name: what every forward op checks.
void check_common_forward_args(std::string_view op, const at::Tensor& input, const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                               double eps, c10::string_view activation);
// running_mean / running_var: per channel, given together.
void check_running_stats(std::string_view op, const std::optional<at::Tensor>& running_mean,
                         const std::optional<at::Tensor>& running_var, const at::Tensor& input);

// ---- Statistics over sets of (n, c) planes ----

// Which (n, c) planes share a statistic: the channels of one of `groups` groups of
// one sample, or of all samples when over_batch. Statistics are kept in the
// shape [over_batch ? 1 : N, groups, 1].
struct StatLayout {
  int64_t N = 0;
  int64_t C = 0;
  int64_t groups = 1;
  bool over_batch = false;

  std::vector<int64_t> shape() const;
  // Sums per-(n, c) values [N, C] over the planes of each statistic.
  at::Tensor reduce(const at::Tensor& per_plane) const;
  // A statistic broadcast to its planes: [over_batch ? 1 : N, C].
  at::Tensor expand(const at::Tensor& stat) const;
  // Number of input elements behind each statistic.
  double count(int64_t spatial_size) const;
};

// The engine's partial moments of the view; an empty view gets one empty slice
// and no kernel launch (its combined statistics are empty, or NaN over nothing).
std::tuple<at::Tensor, at::Tensor, at::Tensor> partial_moments(const ChannelView& view);

// running = (1 - momentum) * running + momentum * value_scale * value, written in
// place in running's dtype.
void update_running_stat(const at::Tensor& running, const at::Tensor& value, double momentum, double value_scale = 1.0);

// (var + eps)^(-1/2), a new tensor of var's dtype.
at::Tensor invstd_from_var(const at::Tensor& var, double eps);

// Mean and biased variance per statistic of `layout` from the engine's partial moments.
std::pair<at::Tensor, at::Tensor> layout_moments(const StatLayout& layout, const at::Tensor& partial_mean,
                                                 const at::Tensor& partial_m2, const at::Tensor& count,
                                                 int64_t spatial_size);

// One normalisation term: weight * (x - mean) * invstd, mean and invstd (and
// var_center) of shape layout.shape().
struct NormTerm {
  StatLayout layout;
  at::Tensor mean;
  at::Tensor invstd;
  double weight = 1.0;
  // Whether the statistics were computed from this input (gradients flow through them).
  bool mean_from_input = true;
  bool var_from_input = true;
  // The input's own mean, which a variance from the input is taken about; needed
  // only when var_from_input and !mean_from_input (mean then is a running mean).
  at::Tensor var_center;
};

// out = act(weight * x_hat + bias + residual) through the engine; out has the view's layout.
at::Tensor forward_from_terms(const ChannelView& view, const std::optional<at::Tensor>& residual,
                              const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                              const std::vector<NormTerm>& terms, const ActivationArgs& act);

// The whole backward of a norm made of `terms`: partial sums, parameter gradients
// and the elementwise pass, computing only what output_mask asks for.
NormActGrads backward_from_terms(const at::Tensor& grad_out, const ChannelView& view,
                                 const std::optional<at::Tensor>& residual, const std::optional<at::Tensor>& weight,
                                 const std::optional<at::Tensor>& bias,
                                 const std::optional<at::Tensor>& activation_weight, const std::vector<NormTerm>& terms,
                                 const ActivationArgs& act, std::array<bool, 5> output_mask);

// The frame of every _<norm>_act_backward kernel: checks, the canonical view, the
// activation arguments, then backward_from_terms with the terms make_terms builds
// for the view (statistics in the accumulation dtype).
NormActGrads backward_op(std::string_view op, const at::Tensor& grad_out, const at::Tensor& input,
                         const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& residual, c10::string_view activation,
                         c10::ArrayRef<double> activation_params, const std::optional<at::Tensor>& activation_weight,
                         const std::optional<at::Tensor>& activation_seed, std::array<bool, 5> output_mask,
                         bool any_rank,
                         const std::function<std::vector<NormTerm>(const ChannelView&, at::ScalarType)>& make_terms);

// ---- Meta kernels ----

// An empty tensor with the shape and the memory format canonicalize() gives input.
at::Tensor dense_like(const at::Tensor& input);
// The outputs of a _<norm>_act_backward op, for its meta kernel.
NormActGrads backward_meta_outputs(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                                   const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                   const std::optional<at::Tensor>& activation_weight, std::array<bool, 5> output_mask);

// The dispatcher handle of fusednorm::<name>, for the C++ entry points of ops.h.
template <typename Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// The meta kernel of _batch_norm_act_backward and _instance_norm_act_backward.
NormActGrads running_stats_norm_backward_meta(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, const at::Tensor& save_mean,
    const at::Tensor& save_invstd, bool use_batch_stats, c10::string_view activation,
    c10::ArrayRef<double> activation_params, const std::optional<at::Tensor>& activation_weight,
    const std::optional<at::Tensor>& activation_seed, std::array<bool, 5> output_mask);

// The C++ signature of the ops with per-channel running statistics (batch_norm_act,
// instance_norm_act) and of their backward ops.
using RunningStatsNormSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool, double,
    double, c10::string_view, c10::ArrayRef<double>, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&);
using RunningStatsNormBackwardSignature = NormActGrads(
    const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&, bool, c10::string_view,
    c10::ArrayRef<double>, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, std::array<bool, 5>);

}  // namespace fusednorm::detail
