// fusednorm::InstanceNorm1d/2d/3d: torch::nn::InstanceNorm's bookkeeping around
// fusednorm::instance_norm_act.
#include <fusednorm/modules.h>
#include <fusednorm/ops.h>

#include <string>

#include "module_state.h"

namespace fusednorm {

template <size_t D, typename Derived>
void InstanceNormImplBase<D, Derived>::reset() {
  const int64_t channels = options.num_features();
  detail::register_affine(*this, {channels}, options.affine(), options.affine(), weight, bias);
  detail::register_running_stats(*this, channels, options.track_running_stats(), running_mean, running_var,
                                 num_batches_tracked);
  activation_.reset(*this, options.activation(), channels, "fusednorm::InstanceNorm" + std::to_string(D) + "d");
  reset_parameters();
}

template <size_t D, typename Derived>
void InstanceNormImplBase<D, Derived>::reset_running_stats() {
  detail::reset_running_stats(running_mean, running_var, num_batches_tracked);
}

template <size_t D, typename Derived>
void InstanceNormImplBase<D, Derived>::reset_parameters() {
  reset_running_stats();
  detail::reset_affine(weight, bias);
}

template <size_t D, typename Derived>
at::Tensor InstanceNormImplBase<D, Derived>::forward(const at::Tensor& input, const at::Tensor& residual) {
  TORCH_CHECK(input.dim() == D + 1 || input.dim() == D + 2, "fusednorm::InstanceNorm", D, "d: expected ", D + 1,
              "D (unbatched) or ", D + 2, "D input (got ", input.dim(), "D input)");
  // As torch::nn::InstanceNorm: batch statistics unless running ones are tracked and
  // the module is in eval mode; num_batches_tracked is not counted.
  const bool use_input_stats = this->is_training() || !options.track_running_stats();
  const auto activation = activation_.call(options.activation(), this->is_training());
  const bool unbatched = input.dim() == D + 1;
  if (unbatched && residual.defined()) {
    TORCH_CHECK(residual.dim() == input.dim(), "fusednorm::InstanceNorm", D,
                "d: residual must have input's shape, got residual of shape ", residual.sizes(), " and input of shape ",
                input.sizes());
  }
  const at::Tensor batched_input = unbatched ? input.unsqueeze(0) : input;
  const at::Tensor batched_residual = unbatched && residual.defined() ? residual.unsqueeze(0) : residual;
  auto [out, save_mean, save_invstd] = instance_norm_act(
      batched_input, detail::if_defined(weight), detail::if_defined(bias), detail::if_defined(running_mean),
      detail::if_defined(running_var), detail::if_defined(batched_residual), use_input_stats, options.momentum(),
      options.eps(), activation.name, activation.params, activation.weight, activation.seed);
  return unbatched ? out.squeeze(0) : out;
}

template <size_t D, typename Derived>
void InstanceNormImplBase<D, Derived>::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "fusednorm::InstanceNorm" << D << "d(" << options.num_features()
         << ", eps=" << options.eps() << ", momentum=" << options.momentum() << ", affine=" << options.affine()
         << ", track_running_stats=" << options.track_running_stats();
  detail::ActivationSlot::pretty_print(stream, options.activation());
  stream << ')';
}

template class InstanceNormImplBase<1, InstanceNorm1dImpl>;
template class InstanceNormImplBase<2, InstanceNorm2dImpl>;
template class InstanceNormImplBase<3, InstanceNorm3dImpl>;

}  // namespace fusednorm
