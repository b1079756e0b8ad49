// The activation kind as a compile-time constant for the CPU kernels of every
// norm engine, so that the activation table's switch folds away inside their
// vector loops (VecActivation, in vec_activation.h, applies it).
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <type_traits>

#include "../math/activation.h"

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

}  // namespace fusednorm::detail
