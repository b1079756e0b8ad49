// LibTorch modules of the fused ops, mirroring torch::nn's norm modules (same
// options, same parameter and buffer names, so state moves between a torch::nn
// module and its fused counterpart, and between C++ and Python, by name) plus an
// activation option and an optional residual:
//
//   fusednorm::BatchNorm2d bn(fusednorm::BatchNormOptions(64).activation("relu"));
//   y = bn(x);                    // == relu(torch::nn::BatchNorm2d(64)(x))
//   y = bn(x, /*residual=*/skip); // == relu(batch_norm(x) + skip)
//
// The same for LayerNorm, RMSNorm, GroupNorm and InstanceNorm1d/2d/3d. The modules
// work inside torch::nn::Sequential (residual defaults to none). A PReLU activation
// is the child module "activation" (state key "activation.weight"); Activation::prelu()
// gets one slope per channel in the channel norms and one shared slope in LayerNorm and
// RMSNorm (as Python's modules; prelu(C) there slopes per channel of input dim 1).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/common.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string_view>
#include <utility>
#include <vector>

#include "activation.h"

namespace fusednorm {

namespace detail {

// The activation part every fused module shares: registers PReLU's weight as the
// child "activation" and turns the option into the fused op's arguments.
class ActivationSlot {
 public:
  // What one forward call passes to the op.
  struct Call {
    std::string_view name;
    c10::ArrayRef<double> params;
    std::optional<at::Tensor> weight;  // PReLU's slopes
    std::optional<at::Tensor> seed;    // RReLU in training mode
  };

  // Checks the activation and (re-)registers owner's "activation" child when it has a
  // weight; call from the owner's reset(). `num_channels` sizes a per-channel PReLU.
  void reset(torch::nn::Module& owner, const Activation& activation, int64_t num_channels, std::string_view where);
  Call call(const Activation& activation, bool training) const;
  // ", activation=<name>(<params>)", nothing for identity.
  static void pretty_print(std::ostream& stream, const Activation& activation);

 private:
  torch::nn::PReLU prelu_{nullptr};
};

}  // namespace detail

// ----------------------------------------------------------------------------- batch norm

// torch::nn::BatchNormOptions plus the activation.
struct BatchNormOptions {
  /* implicit */ BatchNormOptions(int64_t num_features) : num_features_(num_features) {}

  TORCH_ARG(int64_t, num_features);
  TORCH_ARG(double, eps) = 1e-5;
  // None: cumulative moving average, as in torch::nn.
  TORCH_ARG(std::optional<double>, momentum) = 0.1;
  TORCH_ARG(bool, affine) = true;
  TORCH_ARG(bool, track_running_stats) = true;
  TORCH_ARG(Activation, activation);
};

// fusednorm::BatchNorm1d/2d/3d: torch::nn::BatchNorm<D>d + activation (+ residual), fused.
template <size_t D, typename Derived>
class BatchNormImplBase : public torch::nn::Cloneable<Derived> {
 public:
  explicit BatchNormImplBase(const BatchNormOptions& options_) : options(options_) { BatchNormImplBase::reset(); }

  void reset() override;
  void reset_running_stats();
  void reset_parameters();

  // activation(batch_norm(input) + residual); residual is optional (undefined: none).
  at::Tensor forward(const at::Tensor& input, const at::Tensor& residual = {});

  void pretty_print(std::ostream& stream) const override;

  BatchNormOptions options;
  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())})

 private:
  detail::ActivationSlot activation_;
};

class BatchNorm1dImpl : public BatchNormImplBase<1, BatchNorm1dImpl> {
 public:
  using BatchNormImplBase::BatchNormImplBase;
};
class BatchNorm2dImpl : public BatchNormImplBase<2, BatchNorm2dImpl> {
 public:
  using BatchNormImplBase::BatchNormImplBase;
};
class BatchNorm3dImpl : public BatchNormImplBase<3, BatchNorm3dImpl> {
 public:
  using BatchNormImplBase::BatchNormImplBase;
};

TORCH_MODULE(BatchNorm1d);
TORCH_MODULE(BatchNorm2d);
TORCH_MODULE(BatchNorm3d);

extern template class BatchNormImplBase<1, BatchNorm1dImpl>;
extern template class BatchNormImplBase<2, BatchNorm2dImpl>;
extern template class BatchNormImplBase<3, BatchNorm3dImpl>;

// ----------------------------------------------------------------------------- batch-layer norm

// Python's fusednorm.nn.BatchLayerNorm1d/2d options (torch has no such layer).
struct BatchLayerNormOptions {
  BatchLayerNormOptions(int64_t num_features, int64_t batch_size)
      : num_features_(num_features), batch_size_(batch_size) {}

  TORCH_ARG(int64_t, num_features);
  // The m of the mixing weights 1/m: the training batch size, kept at inference.
  TORCH_ARG(int64_t, batch_size);
  TORCH_ARG(double, eps) = 1e-3;
  // None (the default, the authors' estimate): the average over every training batch
  // since reset_running_stats().
  TORCH_ARG(std::optional<double>, momentum) = std::nullopt;
  TORCH_ARG(bool, affine) = true;
  TORCH_ARG(bool, track_running_stats) = true;
  // At inference, running (true) or mini-batch (false) statistics for the batch mean,
  // batch variance, feature mean and feature variance.
  using RunningStatsChoice = std::array<bool, 4>;
  TORCH_ARG(RunningStatsChoice, use_running_stats) = {true, true, false, false};
  TORCH_ARG(Activation, activation);
};

// fusednorm::BatchLayerNorm1d/2d: Batch-Layer Normalization (Ziaee & Cano 2022) +
// activation (+ residual), fused, with Python's module's state: weight, bias,
// running_mean, running_var, num_batches_tracked, running_feature_mean,
// running_feature_var (one element each).
template <size_t D, typename Derived>
class BatchLayerNormImplBase : public torch::nn::Cloneable<Derived> {
 public:
  explicit BatchLayerNormImplBase(const BatchLayerNormOptions& options_) : options(options_) {
    BatchLayerNormImplBase::reset();
  }

  void reset() override;
  void reset_running_stats();
  void reset_parameters();

  at::Tensor forward(const at::Tensor& input, const at::Tensor& residual = {});

  void pretty_print(std::ostream& stream) const override;

  BatchLayerNormOptions options;
  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked, running_feature_mean, running_feature_var;

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())})

 private:
  detail::ActivationSlot activation_;
};

// (N, C) or (N, C, L) input.
class BatchLayerNorm1dImpl : public BatchLayerNormImplBase<1, BatchLayerNorm1dImpl> {
 public:
  using BatchLayerNormImplBase::BatchLayerNormImplBase;
};
// (N, C, H, W) input.
class BatchLayerNorm2dImpl : public BatchLayerNormImplBase<2, BatchLayerNorm2dImpl> {
 public:
  using BatchLayerNormImplBase::BatchLayerNormImplBase;
};

TORCH_MODULE(BatchLayerNorm1d);
TORCH_MODULE(BatchLayerNorm2d);

extern template class BatchLayerNormImplBase<1, BatchLayerNorm1dImpl>;
extern template class BatchLayerNormImplBase<2, BatchLayerNorm2dImpl>;

// ----------------------------------------------------------------------------- instance norm

// torch::nn::InstanceNormOptions plus the activation.
struct InstanceNormOptions {
  /* implicit */ InstanceNormOptions(int64_t num_features) : num_features_(num_features) {}

  TORCH_ARG(int64_t, num_features);
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(double, momentum) = 0.1;
  TORCH_ARG(bool, affine) = false;
  TORCH_ARG(bool, track_running_stats) = false;
  TORCH_ARG(Activation, activation);
};

// fusednorm::InstanceNorm1d/2d/3d: torch::nn::InstanceNorm<D>d + activation (+ residual),
// fused. Takes unbatched input (one dim less) as torch::nn does.
template <size_t D, typename Derived>
class InstanceNormImplBase : public torch::nn::Cloneable<Derived> {
 public:
  explicit InstanceNormImplBase(const InstanceNormOptions& options_) : options(options_) {
    InstanceNormImplBase::reset();
  }

  void reset() override;
  void reset_running_stats();
  void reset_parameters();

  // activation(instance_norm(input) + residual); residual is optional (undefined: none).
  at::Tensor forward(const at::Tensor& input, const at::Tensor& residual = {});

  void pretty_print(std::ostream& stream) const override;

  InstanceNormOptions options;
  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())})

 private:
  detail::ActivationSlot activation_;
};

class InstanceNorm1dImpl : public InstanceNormImplBase<1, InstanceNorm1dImpl> {
 public:
  using InstanceNormImplBase::InstanceNormImplBase;
};
class InstanceNorm2dImpl : public InstanceNormImplBase<2, InstanceNorm2dImpl> {
 public:
  using InstanceNormImplBase::InstanceNormImplBase;
};
class InstanceNorm3dImpl : public InstanceNormImplBase<3, InstanceNorm3dImpl> {
 public:
  using InstanceNormImplBase::InstanceNormImplBase;
};

TORCH_MODULE(InstanceNorm1d);
TORCH_MODULE(InstanceNorm2d);
TORCH_MODULE(InstanceNorm3d);

extern template class InstanceNormImplBase<1, InstanceNorm1dImpl>;
extern template class InstanceNormImplBase<2, InstanceNorm2dImpl>;
extern template class InstanceNormImplBase<3, InstanceNorm3dImpl>;

// ----------------------------------------------------------------------------- group norm

// torch::nn::GroupNormOptions plus the activation.
struct GroupNormOptions {
  GroupNormOptions(int64_t num_groups, int64_t num_channels) : num_groups_(num_groups), num_channels_(num_channels) {}

  TORCH_ARG(int64_t, num_groups);
  TORCH_ARG(int64_t, num_channels);
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(bool, affine) = true;
  TORCH_ARG(Activation, activation);
};

// fusednorm::GroupNorm: torch::nn::GroupNorm + activation (+ residual), fused. The
// output keeps input's memory format.
class GroupNormImpl : public torch::nn::Cloneable<GroupNormImpl> {
 public:
  GroupNormImpl(int64_t num_groups, int64_t num_channels) : GroupNormImpl(GroupNormOptions(num_groups, num_channels)) {}
  explicit GroupNormImpl(const GroupNormOptions& options_);

  void reset() override;
  void reset_parameters();

  at::Tensor forward(const at::Tensor& input, const at::Tensor& residual = {});

  void pretty_print(std::ostream& stream) const override;

  GroupNormOptions options;
  at::Tensor weight, bias;

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())})

 private:
  detail::ActivationSlot activation_;
};
TORCH_MODULE(GroupNorm);

// ----------------------------------------------------------------------------- row norms

// torch::nn::LayerNormOptions plus Python's `bias` switch and the activation.
struct LayerNormOptions {
  /* implicit */ LayerNormOptions(std::vector<int64_t> normalized_shape)
      : normalized_shape_(std::move(normalized_shape)) {}

  TORCH_ARG(std::vector<int64_t>, normalized_shape);
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(bool, elementwise_affine) = true;
  // Without it (and with elementwise_affine) the module has a weight and no bias.
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(Activation, activation);
};

// fusednorm::LayerNorm: torch::nn::LayerNorm + activation (+ residual), fused.
class LayerNormImpl : public torch::nn::Cloneable<LayerNormImpl> {
 public:
  LayerNormImpl(std::vector<int64_t> normalized_shape) : LayerNormImpl(LayerNormOptions(std::move(normalized_shape))) {}
  explicit LayerNormImpl(const LayerNormOptions& options_);

  void reset() override;
  void reset_parameters();

  at::Tensor forward(const at::Tensor& input, const at::Tensor& residual = {});

  void pretty_print(std::ostream& stream) const override;

  LayerNormOptions options;
  at::Tensor weight, bias;

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())})

 private:
  detail::ActivationSlot activation_;
};
TORCH_MODULE(LayerNorm);

// Python's torch.nn.RMSNorm options (LibTorch has no RMSNorm) plus the activation.
struct RMSNormOptions {
  /* implicit */ RMSNormOptions(std::vector<int64_t> normalized_shape)
      : normalized_shape_(std::move(normalized_shape)) {}

  TORCH_ARG(std::vector<int64_t>, normalized_shape);
  // None: the accumulation dtype's machine epsilon, as torch.rms_norm.
  TORCH_ARG(std::optional<double>, eps) = std::nullopt;
  TORCH_ARG(bool, elementwise_affine) = true;
  TORCH_ARG(Activation, activation);
};

// fusednorm::RMSNorm: torch.nn.RMSNorm + activation (+ residual), fused.
class RMSNormImpl : public torch::nn::Cloneable<RMSNormImpl> {
 public:
  RMSNormImpl(std::vector<int64_t> normalized_shape) : RMSNormImpl(RMSNormOptions(std::move(normalized_shape))) {}
  explicit RMSNormImpl(const RMSNormOptions& options_);

  void reset() override;
  void reset_parameters();

  at::Tensor forward(const at::Tensor& input, const at::Tensor& residual = {});

  void pretty_print(std::ostream& stream) const override;

  RMSNormOptions options;
  at::Tensor weight;

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())})

 private:
  detail::ActivationSlot activation_;
};
TORCH_MODULE(RMSNorm);

}  // namespace fusednorm
