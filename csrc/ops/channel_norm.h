// The channel-norm engine shared by batch, group, instance and batch-layer norm.
//
// Every one of those norms is: per-(sample, channel) partial moments, a small
// device-agnostic combine in ATen (over samples for batch norm, over the channels
// of a group for group norm, ...), then one elementwise pass that applies a
// per-(sample, channel) affine map, the residual and the activation. Backward is
// per-(sample, channel) partial sums, a small combine, and one elementwise pass.
// So each device provides four kernels (ChannelNormKernels) and the norms differ
// only in the combine, which lives in ops/<norm>.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <tuple>

#include "../math/activation.h"

namespace fusednorm::detail {

enum class Layout {
  kChannelsFirst,  // memory order (N, C, S): NCHW and friends
  kChannelsLast,   // memory order (N, S, C): channels_last, channels_last_3d, (N, C)
};

// A dense view of an (N, C, *spatial) tensor in one of the two layouts.
struct ChannelView {
  at::Tensor data;  // dense, non-overlapping, strides of `layout`
  int64_t N = 0;
  int64_t C = 0;
  int64_t S = 0;  // product of the spatial sizes (1 for 2-d input)
  Layout layout = Layout::kChannelsFirst;
};

// Picks the layout of `input` and returns a dense view, copying only when the
// input is neither channels-first nor channels-last dense.
ChannelView canonicalize(const at::Tensor& input);

// `t` (same shape as view.data) with view.data's strides; copies only if needed.
at::Tensor match_layout(const at::Tensor& t, const ChannelView& view);

// An uninitialised tensor with view.data's shape, strides and options.
at::Tensor empty_like_view(const ChannelView& view);

// Activation as the kernels get it: scalar params plus the PReLU weight,
// converted to the accumulation dtype (numel 1 or C; undefined otherwise).
struct ActivationArgs {
  math::ActivationParams params;
  at::Tensor prelu_weight;
};

// Coefficients of the elementwise passes are indexed by q = n * coef_n_stride + c:
// coef_n_stride = 0 for per-channel maps (batch norm), C for per-(n, c) maps.
struct CoefIndexing {
  int64_t coef_n_stride = 0;
};

struct ChannelNormKernels {
  // Welford partials of x per (n, c, k) over K disjoint slices of the spatial
  // extent: mean[N, C, K], m2[N, C, K] (accumulation dtype) and count[K].
  std::tuple<at::Tensor, at::Tensor, at::Tensor> (*partial_moments)(const ChannelView& x);

  // out = act(x * scale[q] + shift[q] (+ residual)). `out` has x's layout.
  void (*normalize_activate)(const ChannelView& x, const at::Tensor& residual, const at::Tensor& scale,
                             const at::Tensor& shift, CoefIndexing indexing, const ActivationArgs& act,
                             const at::Tensor& out);

  // With z = x * scale[q] + shift[q] (+ residual) and g = grad_out * act'(z), partial
  // sums per (n, c, k): sum g, sum g * (x - mean[q]), and (when want_prelu) sum of
  // grad_out * z over z <= 0. Shapes [N, C, K].
  std::tuple<at::Tensor, at::Tensor, at::Tensor> (*backward_partial_sums)(
      const ChannelView& grad_out, const ChannelView& x, const at::Tensor& residual, const at::Tensor& scale,
      const at::Tensor& shift, const at::Tensor& mean, CoefIndexing indexing, const ActivationArgs& act,
      bool want_prelu);

  // grad_input = k1[q] * g + k2[q] * (x - mean[q]) + k3[q] and grad_residual = g;
  // either output may be undefined (not wanted).
  void (*backward_apply)(const ChannelView& grad_out, const ChannelView& x, const at::Tensor& residual,
                         const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& mean,
                         const at::Tensor& k1, const at::Tensor& k2, const at::Tensor& k3, CoefIndexing indexing,
                         const ActivationArgs& act, const at::Tensor& grad_input, const at::Tensor& grad_residual);
};

// Kernels for a device type; a clear error when fusednorm was built without it.
const ChannelNormKernels& channel_norm_kernels(c10::DeviceType device);

// Called once per device backend from a static initialiser.
bool register_channel_norm_kernels(c10::DeviceType device, const ChannelNormKernels* kernels);

// Accumulation dtype for statistics and coefficients: double for double input,
// float otherwise.
at::ScalarType accumulation_dtype(at::ScalarType input_dtype);

// Combines the Welford partials of partial_moments over `dims` of [N, C, K] (the
// slice dim K = 2 must be among them). Returns (mean, biased variance, number of
// elements combined into each output) with `dims` removed.
std::tuple<at::Tensor, at::Tensor, double> combine_moments(const at::Tensor& mean, const at::Tensor& m2,
                                                           const at::Tensor& count, int64_t spatial_size,
                                                           at::IntArrayRef dims);

}  // namespace fusednorm::detail
