// fusednorm::BatchNorm1d/2d/3d: torch::nn::BatchNorm's bookkeeping around fusednorm::batch_norm_act.
#include <fusednorm/modules.h>
#include <fusednorm/ops.h>

#include <string>

#include "module_state.h"

namespace fusednorm {
namespace {

template <size_t D>
void check_input_dim(const at::Tensor& input) {
  if constexpr (D == 1) {
    TORCH_CHECK(input.dim() == 2 || input.dim() == 3, "fusednorm::BatchNorm1d: expected 2D or 3D input (got ",
                input.dim(), "D input)");
  } else {
    TORCH_CHECK(input.dim() == D + 2, "fusednorm::BatchNorm", D, "d: expected ", D + 2, "D input (got ", input.dim(),
                "D input)");
  }
}

using detail::if_defined;

}  // namespace

template <size_t D, typename Derived>
void BatchNormImplBase<D, Derived>::reset() {
  const int64_t channels = options.num_features();
  detail::register_affine(*this, {channels}, options.affine(), options.affine(), weight, bias);
  detail::register_running_stats(*this, channels, options.track_running_stats(), running_mean, running_var,
                                 num_batches_tracked);
  activation_.reset(*this, options.activation(), channels, "fusednorm::BatchNorm" + std::to_string(D) + "d");
  reset_parameters();
}

template <size_t D, typename Derived>
void BatchNormImplBase<D, Derived>::reset_running_stats() {
  detail::reset_running_stats(running_mean, running_var, num_batches_tracked);
}

template <size_t D, typename Derived>
void BatchNormImplBase<D, Derived>::reset_parameters() {
  reset_running_stats();
  detail::reset_affine(weight, bias);
}

template <size_t D, typename Derived>
at::Tensor BatchNormImplBase<D, Derived>::forward(const at::Tensor& input, const at::Tensor& residual) {
  check_input_dim<D>(input);
  // The same bookkeeping as torch::nn::BatchNorm (and Python's fused modules).
  const bool training = this->is_training();
  const double momentum = detail::count_step_and_momentum(training && options.track_running_stats(), options.momentum(),
                                                          num_batches_tracked);
  const bool use_batch_stats = training || !options.track_running_stats();
  const bool use_running = !training || options.track_running_stats();
  const auto activation = activation_.call(options.activation(), training);
  auto [out, save_mean, save_invstd] =
      batch_norm_act(input, if_defined(weight), if_defined(bias), use_running ? if_defined(running_mean) : std::nullopt,
                     use_running ? if_defined(running_var) : std::nullopt, if_defined(residual), use_batch_stats,
                     momentum, options.eps(), activation.name, activation.params, activation.weight, activation.seed);
  return out;
}

template <size_t D, typename Derived>
void BatchNormImplBase<D, Derived>::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "fusednorm::BatchNorm" << D << "d(" << options.num_features() << ", eps=" << options.eps()
         << ", momentum=";
  if (options.momentum().has_value()) {
    stream << *options.momentum();
  } else {
    stream << "None";
  }
  stream << ", affine=" << options.affine() << ", track_running_stats=" << options.track_running_stats();
  detail::ActivationSlot::pretty_print(stream, options.activation());
  stream << ')';
}

template class BatchNormImplBase<1, BatchNorm1dImpl>;
template class BatchNormImplBase<2, BatchNorm2dImpl>;
template class BatchNormImplBase<3, BatchNorm3dImpl>;

}  // namespace fusednorm
