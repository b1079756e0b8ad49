// fusednorm::GroupNorm: torch::nn::GroupNorm's parameters around fusednorm::group_norm_act.
#include <fusednorm/modules.h>
#include <fusednorm/ops.h>

#include "module_state.h"

namespace fusednorm {

GroupNormImpl::GroupNormImpl(const GroupNormOptions& options_) : options(options_) { GroupNormImpl::reset(); }

void GroupNormImpl::reset() {
  TORCH_CHECK(options.num_groups() > 0, "fusednorm::GroupNorm: num_groups must be positive, got ",
              options.num_groups());
  TORCH_CHECK(options.num_channels() % options.num_groups() == 0,
              "fusednorm::GroupNorm: num_channels must be divisible by num_groups, got num_channels ",
              options.num_channels(), " and num_groups ", options.num_groups());
  detail::register_affine(*this, {options.num_channels()}, options.affine(), options.affine(), weight, bias);
  activation_.reset(*this, options.activation(), options.num_channels(), "fusednorm::GroupNorm");
  reset_parameters();
}

void GroupNormImpl::reset_parameters() { detail::reset_affine(weight, bias); }

at::Tensor GroupNormImpl::forward(const at::Tensor& input, const at::Tensor& residual) {
  const auto activation = activation_.call(options.activation(), is_training());
  return std::get<0>(group_norm_act(input, options.num_groups(), detail::if_defined(weight), detail::if_defined(bias),
                                    detail::if_defined(residual), options.eps(), activation.name, activation.params,
                                    activation.weight, activation.seed));
}

void GroupNormImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "fusednorm::GroupNorm(" << options.num_groups() << ", " << options.num_channels()
         << ", eps=" << options.eps() << ", affine=" << options.affine();
  detail::ActivationSlot::pretty_print(stream, options.activation());
  stream << ')';
}

}  // namespace fusednorm
