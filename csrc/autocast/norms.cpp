// The autocast policy of every fused norm op: run in the input's dtype (the
// kernels accumulate statistics in fp32 anyway, so there is nothing to gain from
// an fp32 upcast), and bring a residual of another dtype to the input's. One
// kernel template serves every op; the list at the end registers each op with the
// position of its residual argument.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <utility>

#include "fusednorm/ops.h"

namespace fusednorm {
namespace {

std::optional<at::Tensor> residual_like_input(const std::optional<at::Tensor>& residual, const at::Tensor& input) {
  if (residual.has_value() && residual->defined() && residual->scalar_type() != input.scalar_type()) {
    return residual->to(input.scalar_type());
  }
  return residual;
}

// AutocastKernel<Key, R, &op>::call: the autocast kernel of the op whose C++ entry
// point (include/fusednorm/ops.h) is `op`, taking input first and residual at R.
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
    const std::optional<at::Tensor> residual =
        residual_like_input(std::get<ResidualIndex>(arguments), std::get<0>(arguments));
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

template <c10::DispatchKey Key>
void register_autocast_kernels(torch::Library& m) {
  m.impl("batch_norm_act", &AutocastKernel<Key, 5, &batch_norm_act>::call);
  m.impl("group_norm_act", &AutocastKernel<Key, 4, &group_norm_act>::call);
  m.impl("instance_norm_act", &AutocastKernel<Key, 5, &instance_norm_act>::call);
  m.impl("batch_layer_norm_act", &AutocastKernel<Key, 7, &batch_layer_norm_act>::call);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusednorm, AutocastCPU, m) { register_autocast_kernels<c10::DispatchKey::AutocastCPU>(m); }

TORCH_LIBRARY_IMPL(fusednorm, AutocastCUDA, m) { register_autocast_kernels<c10::DispatchKey::AutocastCUDA>(m); }

}  // namespace fusednorm
