#include "activation_spec.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <fusednorm/activation.h>

#include <array>
#include <string>
#include <utility>

namespace fusednorm::detail {
namespace {

using math::ActivationKind;

struct NamedActivation {
  std::string_view name;
  ActivationKind kind;
  // Defaults of the torch.nn modules; params beyond these are an error.
  std::array<double, 2> defaults;
  int num_params;
};

constexpr std::array<NamedActivation, 14> kActivations{{
    {"identity", ActivationKind::kIdentity, {0, 0}, 0},
    {"relu", ActivationKind::kReLU, {0, 0}, 0},
    {"leaky_relu", ActivationKind::kLeakyReLU, {0.01, 0}, 1},
    {"prelu", ActivationKind::kPReLU, {0, 0}, 0},
    {"rrelu", ActivationKind::kRReLU, {1.0 / 8.0, 1.0 / 3.0}, 2},
    {"elu", ActivationKind::kELU, {1.0, 0}, 1},
    {"selu", ActivationKind::kSELU, {0, 0}, 0},
    {"celu", ActivationKind::kCELU, {1.0, 0}, 1},
    {"gelu", ActivationKind::kGELU, {0, 0}, 0},
    {"gelu_tanh", ActivationKind::kGELUTanh, {0, 0}, 0},
    {"silu", ActivationKind::kSiLU, {0, 0}, 0},
    {"sigmoid", ActivationKind::kSigmoid, {0, 0}, 0},
    {"tanh", ActivationKind::kTanh, {0, 0}, 0},
    {"swish", ActivationKind::kSiLU, {0, 0}, 0},
}};

const NamedActivation& find_activation(std::string_view op, std::string_view name) {
  for (const auto& entry : kActivations) {
    if (entry.name == name) {
      return entry;
    }
  }
  std::string known;
  for (const auto& entry : kActivations) {
    known += known.empty() ? "" : ", ";
    known += entry.name;
  }
  TORCH_CHECK(false, op, ": unknown activation '", name, "'; expected one of: ", known);
}

}  // namespace

ActivationKind parse_activation_kind(std::string_view op, std::string_view name) {
  return find_activation(op, name).kind;
}

ActivationArgs make_activation_args(std::string_view op, std::string_view name, c10::ArrayRef<double> params,
                                    const std::optional<at::Tensor>& activation_weight,
                                    const std::optional<at::Tensor>& activation_seed, int64_t num_channels,
                                    const at::Tensor& input) {
  const NamedActivation& entry = find_activation(op, name);
  TORCH_CHECK(static_cast<int>(params.size()) <= entry.num_params, op, ": activation '", name, "' takes at most ",
              entry.num_params, " activation_params, got ", params.size());
  ActivationArgs args;
  args.params.kind = entry.kind;
  args.params.alpha = (params.size() > 0 ? params[0] : entry.defaults[0]);
  args.params.beta = (params.size() > 1 ? params[1] : entry.defaults[1]);

  const bool has_weight = activation_weight.has_value() && activation_weight->defined();
  if (entry.kind == ActivationKind::kPReLU) {
    TORCH_CHECK(has_weight, op, ": activation 'prelu' needs activation_weight (the PReLU weight)");
    const at::Tensor& w = *activation_weight;
    TORCH_CHECK(w.dim() <= 1 && (w.numel() == 1 || w.numel() == num_channels), op,
                ": activation_weight must have 1 or ", num_channels, " elements (one per channel), got shape ",
                w.sizes());
    TORCH_CHECK(w.device() == input.device(), op, ": activation_weight is on ", w.device(), " but input is on ",
                input.device());
    TORCH_CHECK(at::isFloatingType(w.scalar_type()), op, ": activation_weight must be floating point, got ",
                w.scalar_type());
    args.prelu_weight = w.to(accumulation_dtype(input.scalar_type())).contiguous();
  } else {
    TORCH_CHECK(!has_weight, op, ": activation_weight is only used by 'prelu', not by '", name, "'");
  }

  if (entry.kind == ActivationKind::kCELU) {
    TORCH_CHECK(args.params.alpha != 0.0, op, ": celu alpha must not be 0");
  }
  if (entry.kind == ActivationKind::kRReLU) {
    TORCH_CHECK(args.params.alpha <= args.params.beta, op, ": rrelu lower (", args.params.alpha,
                ") must not exceed upper (", args.params.beta, ")");
    // RReLU follows its own train/eval mode, which can differ from the norm's use of
    // batch statistics (e.g. eval without running stats): a seed means "training".
    const bool has_seed = activation_seed.has_value() && activation_seed->defined();
    args.params.rrelu_training = has_seed;
    if (has_seed) {
      const at::Tensor& seed = *activation_seed;
      TORCH_CHECK(seed.device().is_cpu() && seed.scalar_type() == at::kLong && seed.numel() == 1, op,
                  ": activation_seed must be a CPU int64 tensor with one element, got ", seed.scalar_type(), " ",
                  seed.sizes(), " on ", seed.device());
      args.params.rrelu_seed = static_cast<uint64_t>(seed.item<int64_t>());
    }
  } else {
    TORCH_CHECK(!(activation_seed.has_value() && activation_seed->defined()), op,
                ": activation_seed is only used by 'rrelu', not by '", name, "'");
  }
  return args;
}

}  // namespace fusednorm::detail

namespace fusednorm {

void check_activation(std::string_view where, std::string_view name, c10::ArrayRef<double> params) {
  const auto& entry = detail::find_activation(where, name);
  TORCH_CHECK(static_cast<int>(params.size()) <= entry.num_params, where, ": activation '", name, "' takes at most ",
              entry.num_params, " parameters, got ", params.size());
}

}  // namespace fusednorm
