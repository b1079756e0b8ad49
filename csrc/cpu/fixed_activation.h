// The activation as the CPU kernels apply it: its kind fixed at compile time (so
// the table's switch folds away and simple kinds vectorise) and the per-element
// slope of PReLU/RReLU resolved from the channel and the element's memory offset.
// Shared by the CPU kernels of every norm engine.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <type_traits>

#include "../math/activation.h"
#include "../ops/channel_norm.h"

namespace fusednorm::detail {

template <math::ActivationKind K>
using KindTag = std::integral_constant<math::ActivationKind, K>;

// Calls f(KindTag<kind>{}) so that the activation is a compile-time constant
// inside the elementwise loops.
template <typename F>
void with_activation_kind(math::ActivationKind kind, const F& f) {
  switch (kind) {
#define FUSEDNORM_KIND_CASE(K)  \
  case math::ActivationKind::K: \
    return f(KindTag<math::ActivationKind::K>{});
    FUSEDNORM_KIND_CASE(kIdentity)
    FUSEDNORM_KIND_CASE(kReLU)
    FUSEDNORM_KIND_CASE(kLeakyReLU)
    FUSEDNORM_KIND_CASE(kPReLU)
    FUSEDNORM_KIND_CASE(kRReLU)
    FUSEDNORM_KIND_CASE(kELU)
    FUSEDNORM_KIND_CASE(kSELU)
    FUSEDNORM_KIND_CASE(kCELU)
    FUSEDNORM_KIND_CASE(kGELU)
    FUSEDNORM_KIND_CASE(kGELUTanh)
    FUSEDNORM_KIND_CASE(kSiLU)
    FUSEDNORM_KIND_CASE(kSigmoid)
    FUSEDNORM_KIND_CASE(kTanh)
#undef FUSEDNORM_KIND_CASE
  }
  TORCH_INTERNAL_ASSERT(false, "unhandled activation kind");
}

// Activation with its kind fixed at compile time and its slope resolved. `c` is
// the element's PReLU channel (only read for PReLU), `offset` its memory offset
// (RReLU's noise is a hash of it, so forward and backward draw the same slope).
template <typename acc_t, math::ActivationKind K>
struct FixedActivation {
  math::ActivationParams params;
  const acc_t* prelu_weight;  // nullptr unless PReLU
  int64_t prelu_stride;       // 0 for a shared slope, 1 per channel

  explicit FixedActivation(const ActivationArgs& args)
      : params(args.params),
        prelu_weight(args.prelu_weight.defined() ? args.prelu_weight.data_ptr<acc_t>() : nullptr),
        prelu_stride(args.prelu_weight.defined() && args.prelu_weight.numel() > 1 ? 1 : 0) {
    params.kind = K;
  }
  acc_t slope(int64_t c, int64_t offset) const {
    if constexpr (math::uses_slope(K)) {
      const acc_t prelu = prelu_weight != nullptr ? prelu_weight[c * prelu_stride] : acc_t(0);
      return math::negative_slope<acc_t>(params, prelu, offset);
    } else {
      return acc_t(0);
    }
  }
  acc_t forward(acc_t z, int64_t c, int64_t offset) const {
    return math::activation_forward<acc_t>(params, z, slope(c, offset));
  }
  acc_t derivative(acc_t z, int64_t c, int64_t offset) const {
    return math::activation_derivative<acc_t>(params, z, slope(c, offset));
  }
};

}  // namespace fusednorm::detail
