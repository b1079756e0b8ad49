// Small helpers shared by the ops of every norm: optional-tensor plumbing and the
// residual check (a residual is always shaped, placed and typed like the input).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string_view>

namespace fusednorm::detail {

inline bool defined(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

inline std::optional<at::Tensor> optional_of(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

inline void check_residual(std::string_view op, const std::optional<at::Tensor>& residual, const at::Tensor& input) {
  if (!defined(residual)) {
    return;
  }
  TORCH_CHECK(residual->sym_sizes() == input.sym_sizes(), op, ": residual must have the shape of input ",
              input.sym_sizes(), ", got ", residual->sym_sizes());
  TORCH_CHECK(residual->device() == input.device(), op, ": residual is on ", residual->device(), " but input is on ",
              input.device());
  TORCH_CHECK(residual->scalar_type() == input.scalar_type(), op, ": residual must have input's dtype ",
              input.scalar_type(), ", got ", residual->scalar_type());
}

}  // namespace fusednorm::detail
