// The autocast policy of every fused norm op: run in the input's dtype (the
// kernels accumulate statistics in fp32 anyway, so there is nothing to gain from
// an fp32 upcast), and bring a residual of another dtype to the input's.
// AutocastKernel<Key, R, &op>::call is the autocast kernel of an op whose C++ entry
// point (include/fusednorm/ops.h) is `op`, takes input first and residual at R.
#pragma once

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include <optional>
#include <tuple>
#include <utility>

namespace fusednorm::autocast_detail {

inline std::optional<at::Tensor> residual_like_input(const std::optional<at::Tensor>& residual,
                                                     const at::Tensor& input) {
  if (residual.has_value() && residual->defined() && residual->scalar_type() != input.scalar_type()) {
    return residual->to(input.scalar_type());
  }
  return residual;
}

template <c10::DispatchKey Key, size_t ResidualIndex, auto Op>
struct AutocastKernel;

template <c10::DispatchKey Key, size_t ResidualIndex, typename Ret, typename... Args, Ret (*Op)(Args...)>
struct AutocastKernel<Key, ResidualIndex, Op> {
  static Ret call(Args... args) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
    return call_with_residual(std::index_sequence_for<Args...>{}, args...);
  }

 private:
  template <size_t... I>
  static Ret call_with_residual(std::index_sequence<I...>, Args... args) {
    const auto arguments = std::forward_as_tuple(args...);
    const std::optional<at::Tensor> residual = residual_like_input(std::get<ResidualIndex>(arguments),
                                                                   std::get<0>(arguments));
    return Op(pick<I>(std::get<I>(arguments), residual)...);
  }

  template <size_t I, typename T>
  static decltype(auto) pick(T&& argument, const std::optional<at::Tensor>& residual) {
    if constexpr (I == ResidualIndex) {
      return residual;
    } else {
      return std::forward<T>(argument);
    }
  }
};

}  // namespace fusednorm::autocast_detail
