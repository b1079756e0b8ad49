// fusednorm::LayerNorm and fusednorm::RMSNorm: torch.nn's parameters around the row-norm ops.
#include <fusednorm/modules.h>
#include <fusednorm/ops.h>
#include <torch/types.h>

#include <ostream>
#include <vector>

#include "module_state.h"

namespace fusednorm {
namespace {

void print_shape(std::ostream& stream, const std::vector<int64_t>& shape) {
  stream << '[';
  for (size_t i = 0; i < shape.size(); ++i) {
    stream << (i ? ", " : "") << shape[i];
  }
  stream << ']';
}

// Python's modules: a PReLU by name gets one slope shared by every element.
constexpr int64_t kRowNormPReLUChannels = 1;

}  // namespace

LayerNormImpl::LayerNormImpl(const LayerNormOptions& options_) : options(options_) { LayerNormImpl::reset(); }

void LayerNormImpl::reset() {
  const bool affine = options.elementwise_affine();
  detail::register_affine(*this, options.normalized_shape(), affine, affine && options.bias(), weight, bias);
  activation_.reset(*this, options.activation(), kRowNormPReLUChannels, "fusednorm::LayerNorm");
  reset_parameters();
}

void LayerNormImpl::reset_parameters() { detail::reset_affine(weight, bias); }

at::Tensor LayerNormImpl::forward(const at::Tensor& input, const at::Tensor& residual) {
  const auto activation = activation_.call(options.activation(), is_training());
  return std::get<0>(layer_norm_act(input, options.normalized_shape(), detail::if_defined(weight),
                                    detail::if_defined(bias), detail::if_defined(residual), options.eps(),
                                    activation.name, activation.params, activation.weight, activation.seed));
}

void LayerNormImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "fusednorm::LayerNorm(";
  print_shape(stream, options.normalized_shape());
  stream << ", eps=" << options.eps() << ", elementwise_affine=" << options.elementwise_affine();
  if (options.elementwise_affine() && !options.bias()) {
    stream << ", bias=false";
  }
  detail::ActivationSlot::pretty_print(stream, options.activation());
  stream << ')';
}

RMSNormImpl::RMSNormImpl(const RMSNormOptions& options_) : options(options_) { RMSNormImpl::reset(); }

void RMSNormImpl::reset() {
  // torch.nn.RMSNorm's state: a weight (undefined without elementwise_affine), no bias.
  weight = options.elementwise_affine() ? register_parameter("weight", torch::ones(options.normalized_shape()))
                                        : register_parameter("weight", at::Tensor(), /*requires_grad=*/false);
  activation_.reset(*this, options.activation(), kRowNormPReLUChannels, "fusednorm::RMSNorm");
  reset_parameters();
}

void RMSNormImpl::reset_parameters() { detail::reset_affine(weight, at::Tensor()); }

at::Tensor RMSNormImpl::forward(const at::Tensor& input, const at::Tensor& residual) {
  const auto activation = activation_.call(options.activation(), is_training());
  return std::get<0>(rms_norm_act(input, options.normalized_shape(), detail::if_defined(weight),
                                  detail::if_defined(residual), options.eps(), activation.name, activation.params,
                                  activation.weight, activation.seed));
}

void RMSNormImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "fusednorm::RMSNorm(";
  print_shape(stream, options.normalized_shape());
  stream << ", eps=";
  if (options.eps().has_value()) {
    stream << *options.eps();
  } else {
    stream << "None";
  }
  stream << ", elementwise_affine=" << options.elementwise_affine();
  detail::ActivationSlot::pretty_print(stream, options.activation());
  stream << ')';
}

}  // namespace fusednorm
