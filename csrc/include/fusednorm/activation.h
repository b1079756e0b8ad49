// The activation option of fusednorm's LibTorch modules: a name as in Python
// ("relu", "leaky_relu", ...) plus the torch::nn module's scalars, e.g.
//   fusednorm::BatchNorm2d(fusednorm::BatchNormOptions(64).activation(fusednorm::Activation::leaky_relu(0.2)))
// or simply .activation("silu").
#pragma once

#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fusednorm {

struct Activation {
  // Identity: the plain norm.
  Activation() = default;
  // A name with the torch::nn module's scalars in constructor order (leaky_relu: negative_slope;
  // elu/celu: alpha; rrelu: lower, upper); missing scalars take torch::nn's defaults.
  /* implicit */ Activation(std::string name, std::vector<double> params = {})
      : name(std::move(name)), params(std::move(params)) {}
  /* implicit */ Activation(const char* name) : Activation(std::string(name)) {}

  static Activation identity() { return {}; }
  static Activation relu() { return {"relu"}; }
  static Activation leaky_relu(double negative_slope = 0.01) { return {"leaky_relu", {negative_slope}}; }
  // A learnable slope, registered as the module's child "activation" with parameter "weight"
  // (state key "activation.weight", as in Python). num_parameters 0 means one per channel.
  static Activation prelu(int64_t num_parameters = 0, double init = 0.25) {
    Activation activation("prelu");
    activation.prelu_num_parameters = num_parameters;
    activation.prelu_init = init;
    return activation;
  }
  // Random slopes in [lower, upper] in training mode (from the default generator, so
  // torch::manual_seed reproduces them), the mean slope in eval mode.
  static Activation rrelu(double lower = 1.0 / 8.0, double upper = 1.0 / 3.0) { return {"rrelu", {lower, upper}}; }
  static Activation elu(double alpha = 1.0) { return {"elu", {alpha}}; }
  static Activation selu() { return {"selu"}; }
  static Activation celu(double alpha = 1.0) { return {"celu", {alpha}}; }
  // approximate: "none" or "tanh", as torch::nn::GELUOptions.
  static Activation gelu(std::string_view approximate = "none") {
    return {approximate == "tanh" ? "gelu_tanh" : "gelu"};
  }
  static Activation silu() { return {"silu"}; }
  static Activation sigmoid() { return {"sigmoid"}; }
  static Activation tanh() { return {"tanh"}; }

  std::string name = "identity";
  std::vector<double> params;
  int64_t prelu_num_parameters = 0;
  double prelu_init = 0.25;
};

// Throws c10::Error (naming `where`) unless `name` is an activation the fused ops know
// and `params` are at most the scalars it takes.
void check_activation(std::string_view where, std::string_view name, c10::ArrayRef<double> params);

}  // namespace fusednorm
