// The one activation table of fusednorm: forward value and derivative of every
// supported activation, as functions of the pre-activation z. Shared by the CPU
// and CUDA kernels of every norm; depends on nothing but <cmath>/<cstdint>.
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace fusednorm::math {

// Stable numbering: it travels through kernel parameter structs.
enum class ActivationKind : int32_t {
  kIdentity = 0,
  kReLU,
  kLeakyReLU,  // alpha = negative slope
  kPReLU,      // alpha = learnable slope (per channel or shared), read per element
  kRReLU,      // alpha = lower, beta = upper; random slope in training
  kELU,        // alpha
  kSELU,
  kCELU,  // alpha
  kGELU,
  kGELUTanh,
  kSiLU,
  kSigmoid,
  kTanh,
};

constexpr int kNumActivationKinds = 13;

// Scalar description of an activation as the kernels see it. The per-element
// slope of PReLU/RReLU is resolved by the caller (see rrelu_uniform) and passed
// in as `slope`.
struct ActivationParams {
  ActivationKind kind = ActivationKind::kIdentity;
  double alpha = 0.0;
  double beta = 0.0;
  // RReLU in training draws a slope per element; in eval it uses (lower+upper)/2.
  bool rrelu_training = false;
  uint64_t rrelu_seed = 0;
};

// SplitMix64 finaliser: a counter-based hash, so the forward and the backward pass
// regenerate the same RReLU slope from (seed, element offset) without storing it.
FUSEDNORM_HOST_DEVICE uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) with 24 random bits, identical on host and device.
FUSEDNORM_HOST_DEVICE float rrelu_uniform(uint64_t seed, int64_t offset) {
  const uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ULL * (static_cast<uint64_t>(offset) + 1));
  return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
}

// Slope used on the negative side for the slope-style activations. `prelu_slope`
// is the PReLU weight for this element's channel (ignored otherwise).
template <typename T>
FUSEDNORM_HOST_DEVICE T negative_slope(const ActivationParams& p, T prelu_slope, int64_t offset) {
  switch (p.kind) {
    case ActivationKind::kLeakyReLU:
      return static_cast<T>(p.alpha);
    case ActivationKind::kPReLU:
      return prelu_slope;
    case ActivationKind::kRReLU:
      if (p.rrelu_training) {
        return static_cast<T>(p.alpha) +
               static_cast<T>(p.beta - p.alpha) * static_cast<T>(rrelu_uniform(p.rrelu_seed, offset));
      }
      return static_cast<T>((p.alpha + p.beta) * 0.5);
    default:
      return T(0);
  }
}

// The elementary functions and the branch-free select the table below is written
// in. This primary template serves scalars, on the host and on the device; the CPU
// kernels specialise it for their SIMD vector types (where a comparison yields a
// lane mask), so that one table serves scalar and vector code alike. Both
// arguments of select are evaluated: every formula here is finite, or discarded
// by the select, for every finite z.
template <typename T>
struct ElementaryMath {
  static FUSEDNORM_HOST_DEVICE T exp(T z) {
    using std::exp;
    return exp(z);
  }
  static FUSEDNORM_HOST_DEVICE T expm1(T z) {
    using std::expm1;
    return expm1(z);
  }
  static FUSEDNORM_HOST_DEVICE T erf(T z) {
    using std::erf;
    return erf(z);
  }
  static FUSEDNORM_HOST_DEVICE T tanh(T z) {
    using std::tanh;
    return tanh(z);
  }
  static FUSEDNORM_HOST_DEVICE T select(bool condition, T if_true, T if_false) {
    return condition ? if_true : if_false;
  }
};

template <typename T>
FUSEDNORM_HOST_DEVICE T sigmoid_of(T z) {
  return T(1) / (T(1) + ElementaryMath<T>::exp(-z));
}

constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluTanhCubic = 0.044715;

// activation(z). `slope` is negative_slope(...) for this element (only read by the
// slope-style kinds).
template <typename T>
FUSEDNORM_HOST_DEVICE T activation_forward(const ActivationParams& p, T z, T slope) {
  using M = ElementaryMath<T>;
  switch (p.kind) {
    case ActivationKind::kIdentity:
      return z;
    case ActivationKind::kReLU:
      return M::select(z > T(0), z, T(0));
    case ActivationKind::kLeakyReLU:
    case ActivationKind::kPReLU:
      return M::select(z > T(0), z, z * slope);
    case ActivationKind::kRReLU:
      return M::select(z >= T(0), z, z * slope);
    case ActivationKind::kELU:
      return M::select(z > T(0), z, static_cast<T>(p.alpha) * M::expm1(z));
    case ActivationKind::kSELU:
      return static_cast<T>(kSeluScale) * M::select(z > T(0), z, static_cast<T>(kSeluAlpha) * M::expm1(z));
    case ActivationKind::kCELU:
      return M::select(z > T(0), z, static_cast<T>(p.alpha) * M::expm1(z / static_cast<T>(p.alpha)));
    case ActivationKind::kGELU:
      return T(0.5) * z * (T(1) + M::erf(z * static_cast<T>(kInvSqrt2)));
    case ActivationKind::kGELUTanh: {
      const T inner = static_cast<T>(kSqrt2OverPi) * (z + static_cast<T>(kGeluTanhCubic) * z * z * z);
      return T(0.5) * z * (T(1) + M::tanh(inner));
    }
    case ActivationKind::kSiLU:
      return z * sigmoid_of(z);
    case ActivationKind::kSigmoid:
      return sigmoid_of(z);
    case ActivationKind::kTanh:
      return M::tanh(z);
  }
  return z;
}

// d activation / dz at z, with PyTorch's conventions at the kinks (ReLU'(0) = 0,
// RReLU uses the slope for z <= 0 as rrelu_with_noise does).
template <typename T>
FUSEDNORM_HOST_DEVICE T activation_derivative(const ActivationParams& p, T z, T slope) {
  using M = ElementaryMath<T>;
  switch (p.kind) {
    case ActivationKind::kIdentity:
      return T(1);
    case ActivationKind::kReLU:
      return M::select(z > T(0), T(1), T(0));
    case ActivationKind::kLeakyReLU:
    case ActivationKind::kPReLU:
    case ActivationKind::kRReLU:
      return M::select(z > T(0), T(1), slope);
    case ActivationKind::kELU:
      return M::select(z > T(0), T(1), static_cast<T>(p.alpha) * M::exp(z));
    case ActivationKind::kSELU:
      return static_cast<T>(kSeluScale) * M::select(z > T(0), T(1), static_cast<T>(kSeluAlpha) * M::exp(z));
    case ActivationKind::kCELU:
      return M::select(z > T(0), T(1), M::exp(z / static_cast<T>(p.alpha)));
    case ActivationKind::kGELU: {
      const T cdf = T(0.5) * (T(1) + M::erf(z * static_cast<T>(kInvSqrt2)));
      const T pdf = static_cast<T>(kInvSqrt2Pi) * M::exp(T(-0.5) * z * z);
      return cdf + z * pdf;
    }
    case ActivationKind::kGELUTanh: {
      const T z2 = z * z;
      const T inner = static_cast<T>(kSqrt2OverPi) * (z + static_cast<T>(kGeluTanhCubic) * z2 * z);
      const T t = M::tanh(inner);
      const T dinner = static_cast<T>(kSqrt2OverPi) * (T(1) + T(3) * static_cast<T>(kGeluTanhCubic) * z2);
      return T(0.5) * (T(1) + t) + T(0.5) * z * (T(1) - t * t) * dinner;
    }
    case ActivationKind::kSiLU: {
      const T s = sigmoid_of(z);
      return s * (T(1) + z * (T(1) - s));
    }
    case ActivationKind::kSigmoid: {
      const T s = sigmoid_of(z);
      return s * (T(1) - s);
    }
    case ActivationKind::kTanh: {
      const T t = M::tanh(z);
      return T(1) - t * t;
    }
  }
  return T(1);
}

// True when the activation needs a per-element slope (PReLU weight or RReLU noise).
FUSEDNORM_HOST_DEVICE constexpr bool uses_slope(ActivationKind k) {
  return k == ActivationKind::kLeakyReLU || k == ActivationKind::kPReLU || k == ActivationKind::kRReLU;
}

}  // namespace fusednorm::math
