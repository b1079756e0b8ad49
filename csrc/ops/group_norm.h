// The group-norm path, shared by group_norm_act and instance_norm_act (which is
// group norm with one group per channel, plus running statistics).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <utility>

#include "norm_common.h"

namespace fusednorm::detail {

// Mean and biased variance per (sample, group) of the view, shape [N, groups].
std::pair<at::Tensor, at::Tensor> group_moments(const ChannelView& view, int64_t groups);

// The single term of group norm: statistics per (sample, group), [N, groups].
NormTerm group_term(const ChannelView& view, int64_t groups, const at::Tensor& mean, const at::Tensor& invstd,
                    bool stats_from_input);

}  // namespace fusednorm::detail
