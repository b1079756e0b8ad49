// Parameter and buffer bookkeeping the fused LibTorch modules share with each
// other and with torch::nn: the same names, and undefined tensors registered where
// torch::nn registers them, so state moves between the two by name.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <optional>

namespace fusednorm::detail {

// "weight" and "bias" of `shape`, initialised to ones and zeros; undefined
// (non-trainable) ones for the switches that are off.
void register_affine(torch::nn::Module& owner, at::IntArrayRef shape, bool with_weight, bool with_bias,
                     at::Tensor& weight, at::Tensor& bias);
// Back to ones and zeros (the undefined ones stay undefined).
void reset_affine(const at::Tensor& weight, const at::Tensor& bias);

// Batch/instance norm's "running_mean", "running_var" and "num_batches_tracked"
// (undefined without track_running_stats), reset to their initial values.
void register_running_stats(torch::nn::Module& owner, int64_t channels, bool track_running_stats,
                            at::Tensor& running_mean, at::Tensor& running_var, at::Tensor& num_batches_tracked);
// Back to zeros, ones and 0 (nothing when they are undefined).
void reset_running_stats(const at::Tensor& running_mean, const at::Tensor& running_var,
                         const at::Tensor& num_batches_tracked);

// torch::nn's batch-norm bookkeeping for one forward: counts a training step in
// num_batches_tracked (when defined) and returns the momentum to use, 1 / steps
// when `momentum` is none (a cumulative average).
double count_step_and_momentum(bool training, std::optional<double> momentum, const at::Tensor& num_batches_tracked);

// What the modules pass for an optional tensor argument that may be undefined.
inline std::optional<at::Tensor> if_defined(const at::Tensor& tensor) {
  return tensor.defined() ? std::optional<at::Tensor>(tensor) : std::nullopt;
}

}  // namespace fusednorm::detail
