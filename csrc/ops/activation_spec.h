// Turns an op's (name, params, PReLU weight, RReLU seed) arguments into the
// kernels' ActivationArgs, with clear errors for anything malformed.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <string_view>

#include "channel_norm.h"

namespace fusednorm::detail {

math::ActivationKind parse_activation_kind(std::string_view op, std::string_view name);

// Checks everything about the activation arguments. RReLU draws random slopes
// exactly when a seed is given (the caller passes one in training mode); `num_channels` is the size of
// the dimension PReLU's per-channel weight runs along.
ActivationArgs make_activation_args(std::string_view op, std::string_view name, c10::ArrayRef<double> params,
                                    const std::optional<at::Tensor>& activation_weight,
                                    const std::optional<at::Tensor>& activation_seed, int64_t num_channels,
                                    const at::Tensor& input);

}  // namespace fusednorm::detail
