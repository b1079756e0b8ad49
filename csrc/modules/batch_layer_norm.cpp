// fusednorm::BatchLayerNorm1d/2d: Python's fusednorm.nn.BatchLayerNorm bookkeeping
// around fusednorm::batch_layer_norm_act.
#include <fusednorm/modules.h>
#include <fusednorm/ops.h>
#include <torch/types.h>

#include <string>

#include "module_state.h"

namespace fusednorm {

template <size_t D, typename Derived>
void BatchLayerNormImplBase<D, Derived>::reset() {
  const std::string where = "fusednorm::BatchLayerNorm" + std::to_string(D) + "d";
  TORCH_CHECK(options.batch_size() >= 1, where, ": batch_size must be positive, got ", options.batch_size());
  const int64_t channels = options.num_features();
  detail::register_affine(*this, {channels}, options.affine(), options.affine(), weight, bias);
  detail::register_running_stats(*this, channels, options.track_running_stats(), running_mean, running_var,
                                 num_batches_tracked);
  if (options.track_running_stats()) {
    running_feature_mean = this->register_buffer("running_feature_mean", torch::zeros({1}));
    running_feature_var = this->register_buffer("running_feature_var", torch::ones({1}));
  } else {
    running_feature_mean = this->register_buffer("running_feature_mean", at::Tensor());
    running_feature_var = this->register_buffer("running_feature_var", at::Tensor());
  }
  activation_.reset(*this, options.activation(), channels, where);
  reset_parameters();
}

template <size_t D, typename Derived>
void BatchLayerNormImplBase<D, Derived>::reset_running_stats() {
  detail::reset_running_stats(running_mean, running_var, num_batches_tracked);
  if (running_feature_mean.defined()) {
    torch::NoGradGuard no_grad;
    running_feature_mean.zero_();
    running_feature_var.fill_(1);
  }
}

template <size_t D, typename Derived>
void BatchLayerNormImplBase<D, Derived>::reset_parameters() {
  reset_running_stats();
  detail::reset_affine(weight, bias);
}

template <size_t D, typename Derived>
at::Tensor BatchLayerNormImplBase<D, Derived>::forward(const at::Tensor& input, const at::Tensor& residual) {
  if constexpr (D == 1) {
    TORCH_CHECK(input.dim() == 2 || input.dim() == 3, "fusednorm::BatchLayerNorm1d: expected 2D or 3D input (got ",
                input.dim(), "D input)");
  } else {
    TORCH_CHECK(input.dim() == 4, "fusednorm::BatchLayerNorm2d: expected 4D input (got ", input.dim(), "D input)");
  }
  const bool training = this->is_training();
  const double momentum = detail::count_step_and_momentum(training && options.track_running_stats(), options.momentum(),
                                                          num_batches_tracked);
  const std::array<bool, 4> use_running_stats =
      options.track_running_stats() ? options.use_running_stats() : std::array<bool, 4>{false, false, false, false};
  const auto activation = activation_.call(options.activation(), training);
  using detail::if_defined;
  return std::get<0>(batch_layer_norm_act(input, if_defined(weight), if_defined(bias), if_defined(running_mean),
                                          if_defined(running_var), if_defined(running_feature_mean),
                                          if_defined(running_feature_var), if_defined(residual), training,
                                          options.batch_size(), momentum, options.eps(), use_running_stats,
                                          activation.name, activation.params, activation.weight, activation.seed));
}

template <size_t D, typename Derived>
void BatchLayerNormImplBase<D, Derived>::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "fusednorm::BatchLayerNorm" << D << "d(" << options.num_features()
         << ", batch_size=" << options.batch_size() << ", eps=" << options.eps() << ", momentum=";
  if (options.momentum().has_value()) {
    stream << *options.momentum();
  } else {
    stream << "None";
  }
  stream << ", affine=" << options.affine() << ", track_running_stats=" << options.track_running_stats()
         << ", use_running_stats=(";
  const auto& flags = options.use_running_stats();
  for (size_t i = 0; i < flags.size(); ++i) {
    stream << (i ? ", " : "") << flags[i];
  }
  stream << ')';
  detail::ActivationSlot::pretty_print(stream, options.activation());
  stream << ')';
}

template class BatchLayerNormImplBase<1, BatchLayerNorm1dImpl>;
template class BatchLayerNormImplBase<2, BatchLayerNorm2dImpl>;

}  // namespace fusednorm
