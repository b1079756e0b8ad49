// fusednorm's ops as C++ functions. Each one calls the PyTorch dispatcher, so it
// gets the same CPU/CUDA kernels, autograd, autocast and tracing support as
// torch.ops.fusednorm.* from Python.
//
// Activations are named as in Python: "identity", "relu", "leaky_relu", "prelu",
// "rrelu", "elu", "selu", "celu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh".
// activation_params holds the torch.nn module's scalars in constructor order
// (leaky_relu: negative_slope; elu/celu: alpha; rrelu: lower, upper).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/ArrayRef.h>

#include <array>
#include <optional>
#include <string_view>
#include <tuple>

namespace fusednorm {

// act(batch_norm(input) + residual), with PyTorch's batch-norm semantics: batch
// statistics when `training` (updating running_mean/running_var in place with
// `momentum` when given), running statistics otherwise. Returns (output,
// save_mean, save_invstd); the last two feed batch_norm_act_backward.
// activation_weight is PReLU's weight. RReLU draws random slopes (its training
// mode) exactly when activation_seed is given: pass draw_activation_seed(); without
// a seed it uses the mean slope (lower + upper) / 2, its eval mode.
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& residual, bool training, double momentum, double eps,
    std::string_view activation = "identity", c10::ArrayRef<double> activation_params = {},
    const std::optional<at::Tensor>& activation_weight = std::nullopt,
    const std::optional<at::Tensor>& activation_seed = std::nullopt);

// (grad_input, grad_weight, grad_bias, grad_residual, grad_activation_weight):
// an entry is empty when its output_mask entry is false or the matching input
// was not given.
using NormActGrads = std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>,
                                std::optional<at::Tensor>, std::optional<at::Tensor>>;

// Gradients of batch_norm_act.
NormActGrads batch_norm_act_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, const at::Tensor& save_mean,
    const at::Tensor& save_invstd, bool training, std::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed,
    std::array<bool, 5> output_mask);

// A fresh RReLU seed from PyTorch's default CPU generator (torch::manual_seed
// reproduces it).
at::Tensor draw_activation_seed();

// act(group_norm(input, num_groups) + residual), as torch::group_norm: statistics
// per (sample, group of C / num_groups channels), weight and bias per channel.
// Returns (output, save_mean, save_invstd), the last two of shape (N, num_groups).
std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_act(
    const at::Tensor& input, int64_t num_groups, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    std::string_view activation = "identity", c10::ArrayRef<double> activation_params = {},
    const std::optional<at::Tensor>& activation_weight = std::nullopt,
    const std::optional<at::Tensor>& activation_seed = std::nullopt);

// Gradients of group_norm_act.
NormActGrads group_norm_act_backward(const at::Tensor& grad_out, const at::Tensor& input, int64_t num_groups,
                                     const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                     const std::optional<at::Tensor>& residual, const at::Tensor& save_mean,
                                     const at::Tensor& save_invstd, std::string_view activation,
                                     c10::ArrayRef<double> activation_params,
                                     const std::optional<at::Tensor>& activation_weight,
                                     const std::optional<at::Tensor>& activation_seed,
                                     std::array<bool, 5> output_mask);

// act(instance_norm(input) + residual), with torch::instance_norm's semantics:
// statistics per (sample, channel) when use_input_stats (updating
// running_mean/running_var in place with their batch average when given),
// running statistics otherwise. Returns (output, save_mean, save_invstd), the last
// two of shape (N, C).
std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_act(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& residual, bool use_input_stats, double momentum, double eps,
    std::string_view activation = "identity", c10::ArrayRef<double> activation_params = {},
    const std::optional<at::Tensor>& activation_weight = std::nullopt,
    const std::optional<at::Tensor>& activation_seed = std::nullopt);

// Gradients of instance_norm_act.
NormActGrads instance_norm_act_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, const at::Tensor& save_mean,
    const at::Tensor& save_invstd, bool use_input_stats, std::string_view activation,
    c10::ArrayRef<double> activation_params, const std::optional<at::Tensor>& activation_weight,
    const std::optional<at::Tensor>& activation_seed, std::array<bool, 5> output_mask);

// act(batch_layer_norm(input) + residual): Batch-Layer Normalization (Ziaee &
// Cano 2022), y = weight * ((1/m - 1e-4) * x_layer + (1 - 1/m - 1e-4) * x_batch) / sqrt(C) + bias,
// where x_batch is input normalised per channel over the batch (and positions),
// x_layer per sample over the channels (and positions), and m = batch_size (pass
// the training batch size at inference too). With `training`, mini-batch
// statistics are used and the running ones updated in place (when given): per
// channel running_mean/running_var and the one-element running_feature_mean/
// running_feature_var. Otherwise use_running_stats picks, for the batch mean,
// batch variance, feature mean and feature variance in that order, the running
// estimate (true) or the mini-batch's own statistic (false). Returns (output,
// batch_mean, batch_invstd, feature_mean, feature_invstd): the statistics used,
// per channel (C) and per sample (N).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_layer_norm_act(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    const std::optional<at::Tensor>& running_feature_mean, const std::optional<at::Tensor>& running_feature_var,
    const std::optional<at::Tensor>& residual, bool training, int64_t batch_size, double momentum, double eps,
    std::array<bool, 4> use_running_stats = {true, true, false, false}, std::string_view activation = "identity",
    c10::ArrayRef<double> activation_params = {}, const std::optional<at::Tensor>& activation_weight = std::nullopt,
    const std::optional<at::Tensor>& activation_seed = std::nullopt);

// Gradients of batch_layer_norm_act.
NormActGrads batch_layer_norm_act_backward(
    const at::Tensor& grad_out, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, const at::Tensor& batch_mean,
    const at::Tensor& batch_invstd, const at::Tensor& feature_mean, const at::Tensor& feature_invstd, bool training,
    int64_t batch_size, std::array<bool, 4> use_running_stats, std::string_view activation,
    c10::ArrayRef<double> activation_params, const std::optional<at::Tensor>& activation_weight,
    const std::optional<at::Tensor>& activation_seed, std::array<bool, 5> output_mask);

}  // namespace fusednorm

namespace fusednorm {

// act(layer_norm(input) + residual) over the trailing dims `normalized_shape`,
// with PyTorch's layer-norm semantics (weight and bias of shape
// normalized_shape; output contiguous). Returns (output, mean, rstd); the
// statistics are in the accumulation dtype (float, double for double input), of
// shape input's leading dims followed by a 1 per normalized dim, and feed
// layer_norm_act_backward. Activation arguments as for batch_norm_act; PReLU's
// channel is input dim 1, as torch.nn.PReLU's.
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act(
    const at::Tensor& input, at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual = std::nullopt, double eps = 1e-5,
    std::string_view activation = "identity", c10::ArrayRef<double> activation_params = {},
    const std::optional<at::Tensor>& activation_weight = std::nullopt,
    const std::optional<at::Tensor>& activation_seed = std::nullopt);

// The same with symbolic sizes (what autograd and tracing call).
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_act_symint(
    const at::Tensor& input, c10::SymIntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    std::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed);

// Gradients of layer_norm_act, as NormActGrads.
NormActGrads layer_norm_act_backward(const at::Tensor& grad_out, const at::Tensor& input,
                                     at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
                                     const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                     const at::Tensor& mean, const at::Tensor& rstd, std::string_view activation,
                                     c10::ArrayRef<double> activation_params,
                                     const std::optional<at::Tensor>& activation_weight,
                                     const std::optional<at::Tensor>& activation_seed, std::array<bool, 5> output_mask);

NormActGrads layer_norm_act_backward_symint(
    const at::Tensor& grad_out, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& residual, const at::Tensor& mean, const at::Tensor& rstd,
    std::string_view activation, c10::ArrayRef<double> activation_params,
    const std::optional<at::Tensor>& activation_weight, const std::optional<at::Tensor>& activation_seed,
    std::array<bool, 5> output_mask);

// act(rms_norm(input) + residual), with PyTorch's RMS-norm semantics: no mean
// subtraction, no bias, eps = the accumulation dtype's machine epsilon when not
// given (as torch.rms_norm). Returns (output, rstd), rstd as layer_norm_act's.
std::tuple<at::Tensor, at::Tensor> rms_norm_act(const at::Tensor& input, at::IntArrayRef normalized_shape,
                                                const std::optional<at::Tensor>& weight,
                                                const std::optional<at::Tensor>& residual = std::nullopt,
                                                std::optional<double> eps = std::nullopt,
                                                std::string_view activation = "identity",
                                                c10::ArrayRef<double> activation_params = {},
                                                const std::optional<at::Tensor>& activation_weight = std::nullopt,
                                                const std::optional<at::Tensor>& activation_seed = std::nullopt);

std::tuple<at::Tensor, at::Tensor> rms_norm_act_symint(const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                                                       const std::optional<at::Tensor>& weight,
                                                       const std::optional<at::Tensor>& residual,
                                                       std::optional<double> eps, std::string_view activation,
                                                       c10::ArrayRef<double> activation_params,
                                                       const std::optional<at::Tensor>& activation_weight,
                                                       const std::optional<at::Tensor>& activation_seed);

// (grad_input, grad_weight, grad_residual, grad_activation_weight), entries empty
// as in NormActGrads.
using RmsNormActGrads = std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>,
                                   std::optional<at::Tensor>>;

// Gradients of rms_norm_act; output_mask in RmsNormActGrads' order.
RmsNormActGrads rms_norm_act_backward(const at::Tensor& grad_out, const at::Tensor& input,
                                      at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
                                      const std::optional<at::Tensor>& residual, const at::Tensor& rstd,
                                      std::string_view activation, c10::ArrayRef<double> activation_params,
                                      const std::optional<at::Tensor>& activation_weight,
                                      const std::optional<at::Tensor>& activation_seed,
                                      std::array<bool, 4> output_mask);

RmsNormActGrads rms_norm_act_backward_symint(const at::Tensor& grad_out, const at::Tensor& input,
                                             c10::SymIntArrayRef normalized_shape,
                                             const std::optional<at::Tensor>& weight,
                                             const std::optional<at::Tensor>& residual, const at::Tensor& rstd,
                                             std::string_view activation, c10::ArrayRef<double> activation_params,
                                             const std::optional<at::Tensor>& activation_weight,
                                             const std::optional<at::Tensor>& activation_seed,
                                             std::array<bool, 4> output_mask);

}  // namespace fusednorm
