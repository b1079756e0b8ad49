// The activation part shared by every fused LibTorch module.
#include <fusednorm/modules.h>
#include <fusednorm/ops.h>

#include <string>

namespace fusednorm::detail {

void ActivationSlot::reset(torch::nn::Module& owner, const Activation& activation, int64_t num_channels,
                           std::string_view where) {
  check_activation(where, activation.name, activation.params);
  prelu_ = nullptr;
  if (activation.name == "prelu") {
    TORCH_CHECK(activation.prelu_num_parameters >= 0, where, ": PReLU num_parameters must be >= 0, got ",
                activation.prelu_num_parameters);
    const int64_t num_parameters =
        activation.prelu_num_parameters == 0 ? num_channels : activation.prelu_num_parameters;
    prelu_ = owner.register_module(
        "activation",
        torch::nn::PReLU(torch::nn::PReLUOptions().num_parameters(num_parameters).init(activation.prelu_init)));
  }
}

ActivationSlot::Call ActivationSlot::call(const Activation& activation, bool training) const {
  Call call{activation.name, activation.params, std::nullopt, std::nullopt};
  if (prelu_) {
    call.weight = prelu_->weight;
  }
  if (training && activation.name == "rrelu") {
    call.seed = draw_activation_seed();
  }
  return call;
}

void ActivationSlot::pretty_print(std::ostream& stream, const Activation& activation) {
  if (activation.name == "identity") {
    return;
  }
  stream << ", activation=" << activation.name;
  if (!activation.params.empty()) {
    stream << '(';
    for (size_t i = 0; i < activation.params.size(); ++i) {
      stream << (i ? ", " : "") << activation.params[i];
    }
    stream << ')';
  }
}

}  // namespace fusednorm::detail
