// Helpers shared by the autograd functions of every norm.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/custom_function.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <utility>
#include <vector>

namespace fusednorm::autograd_detail {

inline std::optional<at::Tensor> as_optional(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// Position of each optional tensor argument among the variables autograd tracks
// (input is 0); -1 when absent. Absent optionals are not tracked, so later
// positions shift.
template <size_t K>
std::vector<int64_t> tracked_positions(const std::array<const std::optional<at::Tensor>*, K>& optionals) {
  std::vector<int64_t> positions;
  int64_t next = 1;
  for (const auto* t : optionals) {
    positions.push_back(t->has_value() && (*t)->defined() ? next++ : -1);
  }
  return positions;
}

// Whether the optional tensor argument at `index` of the list saved as
// ctx->saved_data["tracked"] (tracked_positions' result) needs a gradient.
inline bool tracked_needs_grad(torch::autograd::AutogradContext* ctx, size_t index) {
  const int64_t position = ctx->saved_data["tracked"].toIntVector().at(index);
  return position >= 0 && ctx->needs_input_grad(position);
}

// A backward's result: one entry per forward argument, the given gradients at
// their argument positions, undefined elsewhere (non-tensor arguments, absent
// optionals, gradients not computed).
inline std::vector<at::Tensor> grads_by_argument(
    size_t num_arguments, std::initializer_list<std::pair<size_t, std::optional<at::Tensor>>> grads) {
  std::vector<at::Tensor> result(num_arguments);
  for (const auto& [position, grad] : grads) {
    result.at(position) = grad.value_or(at::Tensor());
  }
  return result;
}

}  // namespace fusednorm::autograd_detail
