// The vector building blocks of the CPU kernels, shared by the channel-norm and
// row-norm kernels: the activation table on at::vec::Vectorized (forward and
// derivative of every activation of math/activation.h), loads and stores of
// scalar_t as vectors of the accumulation dtype, lane sums and masks.
//
// Like the kernel files that include it (channel_norm_kernel_impl.h,
// row_norm_kernel_impl.h), it is compiled once per instruction set: the includer
// defines CPU_CAPABILITY, and every name here lives in
// fusednorm::detail::CPU_CAPABILITY (at::vec's vector types in
// at::vec::CPU_CAPABILITY), so the builds never share a symbol.
#pragma once

#ifndef CPU_CAPABILITY
#error "define CPU_CAPABILITY before including vec_activation.h"
#endif

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "../math/activation.h"
#include "../ops/channel_norm.h"
#include "fixed_activation.h"

namespace fusednorm::math {

// The activation table on SIMD vectors: comparisons give lane masks, select blends.
// exp is ATen's inline polynomial (exp_u20, about 2e-6 relative error in float,
// saturating instead of overflowing), not Sleef's: a call per vector, with every
// vector register saved around it, made the sigmoid-based activations slower
// than PyTorch's own separate pass.
template <typename T>
struct ElementaryMath<at::vec::Vectorized<T>> {
  using V = at::vec::Vectorized<T>;
  static V exp(const V& z) { return z.exp_u20(); }
  static V expm1(const V& z) { return z.expm1(); }
  static V erf(const V& z) {
    if constexpr (std::is_same_v<T, float>) {
      return erf_on_inline_exp(z);
    } else {
      return z.erf();  // double: Sleef's, accurate to the last bits
    }
  }
  static V tanh(const V& z) { return z.tanh(); }
  static V select(const V& mask, const V& if_true, const V& if_false) { return V::blendv(if_false, if_true, mask); }

  // Abramowitz & Stegun 7.1.26 (absolute error 1.5e-7, the formula of ATen's own
  // float vector erf) on the inline exp: ATen's calls Sleef's out-of-line exp per
  // vector, which made LayerNorm+GELU slower than PyTorch's separate passes.
  static V erf_on_inline_exp(const V& z) {
    const V abs_z = z.abs();
    const V t = V(1) / at::vec::fmadd(V(0.3275911f), abs_z, V(1));
    V poly = V(1.061405429f);
    poly = at::vec::fmadd(poly, t, V(-1.453152027f));
    poly = at::vec::fmadd(poly, t, V(1.421413741f));
    poly = at::vec::fmadd(poly, t, V(-0.284496736f));
    poly = at::vec::fmadd(poly, t, V(0.254829592f));
    const V magnitude = V(1) - poly * t * (z * z).neg().exp_u20();
    return V::blendv(magnitude, magnitude.neg(), z < V(0));
  }
};

}  // namespace fusednorm::math

namespace fusednorm::detail::CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;
using math::ActivationKind;

// Moves up to Vec::size() elements of scalar_t to and from one vector of the
// accumulation dtype. Lanes past `count` load as zero and are not stored.
template <typename scalar_t>
struct Lanes {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = Vectorized<acc_t>;
  static constexpr int64_t kSize = Vec::size();
  static constexpr bool kSameType = std::is_same_v<scalar_t, acc_t>;

  static C10_ALWAYS_INLINE Vec load(const scalar_t* p, int64_t count) {
    if (count != kSize) {
      return load_partial(p, count);
    }
    if constexpr (kSameType) {
      return Vec::loadu(p);
    } else {
      Vec out;
      at::vec::load_to_float<scalar_t>(p, out);
      return out;
    }
  }
  static C10_ALWAYS_INLINE void store(scalar_t* p, const Vec& v, int64_t count) {
    if (count != kSize) {
      store_partial(p, v, count);
    } else if constexpr (kSameType) {
      v.store(p);
    } else {
      at::vec::convert_from_float<scalar_t>(v, v).store(p, kSize);
    }
  }

 private:
  // Kept out of line: the loops run whole vectors, these only at the ends.
  static C10_NOINLINE Vec load_partial(const scalar_t* p, int64_t count) {
    if constexpr (kSameType) {
      return Vec::loadu(p, count);
    } else {
      scalar_t padded[kSize] = {};
      std::copy_n(p, count, padded);
      Vec out;
      at::vec::load_to_float<scalar_t>(padded, out);
      return out;
    }
  }
  static C10_NOINLINE void store_partial(scalar_t* p, const Vec& v, int64_t count) {
    if constexpr (kSameType) {
      v.store(p, count);
    } else {
      at::vec::convert_from_float<scalar_t>(v, v).store(p, count);
    }
  }
};

// The sum of a vector's lanes, as a double. The lanes are added in acc_t: they
// hold partial sums of a few hundred terms at most, so that loses nothing.
template <typename acc_t>
double lane_sum(const Vectorized<acc_t>& v) {
  const auto add = [](const Vectorized<acc_t>& a, const Vectorized<acc_t>& b) { return a + b; };
  return static_cast<double>(at::vec::vec_reduce_all<acc_t>(add, v));
}

// Calls step(i, count, skip) over [begin, end) a vector of kSize elements at a
// time: full vectors (count = kSize, skip = 0), then the rest. With
// overlap_tail, and a range of at least one vector, the rest is the full vector
// that ends at `end`, whose first `skip` lanes were visited already: whole-vector
// loads and stores instead of partial ones (a copy through the stack for 16-bit
// types), which matters for short runs such as 7x7 planes. Otherwise it is a
// partial vector (count = end - i, skip = 0).
template <int64_t kSize, typename F>
void for_each_vector(int64_t begin, int64_t end, bool overlap_tail, const F& step) {
  int64_t i = begin;
  for (; i + kSize <= end; i += kSize) {
    step(i, kSize, int64_t{0});
  }
  if (i < end) {
    if (overlap_tail && end - begin >= kSize) {
      step(end - kSize, kSize, kSize - (end - i));
    } else {
      step(i, end - i, int64_t{0});
    }
  }
}

// `v` with the lanes outside [skip, count) zeroed, so that they add nothing.
template <typename acc_t>
C10_ALWAYS_INLINE Vectorized<acc_t> keep_lanes(const Vectorized<acc_t>& v, int64_t count, int64_t skip) {
  using Vec = Vectorized<acc_t>;
  if (count == Vec::size() && skip == 0) {
    return v;
  }
  const Vec zero(acc_t(0));
  const Vec head = count == Vec::size() ? v : Vec::set(zero, v, count);
  return skip == 0 ? head : Vec::set(head, zero, skip);
}

// Zero vectors, built in place: a default-constructed std::array of vectors
// costs a call per element.
template <typename Vec, size_t... I>
std::array<Vec, sizeof...(I)> zero_vectors(std::index_sequence<I...>) {
  return {((void)I, Vec(typename Vec::value_type(0)))...};
}

// The layouts as types, so that the loops below are compiled once per layout:
// in a channels-first run every lane holds the same channel, in a channels-last
// run the lanes hold consecutive channels.
using ChannelsFirst = std::false_type;
using ChannelsLast = std::true_type;

// The activation with its kind fixed at compile time, on vectors of acc_t. The
// negative-side slope (LeakyReLU, PReLU, RReLU) is a vector too: per lane it may
// be a channel's PReLU weight or an element's RReLU draw.
template <typename acc_t, ActivationKind K>
struct VecActivation {
  using Vec = Vectorized<acc_t>;
  math::ActivationParams params;
  const acc_t* prelu_weight;  // nullptr unless PReLU
  bool prelu_per_channel;

  explicit VecActivation(const ActivationArgs& args)
      : params(args.params),
        prelu_weight(args.prelu_weight.defined() ? args.prelu_weight.const_data_ptr<acc_t>() : nullptr),
        prelu_per_channel(args.prelu_weight.defined() && args.prelu_weight.numel() > 1) {
    params.kind = K;
  }

  // Slopes of the `count` elements from `offset`, the first of channel c.
  template <typename ChannelsVary>
  Vec slope(int64_t c, int64_t offset, int64_t count, ChannelsVary) const {
    if constexpr (K == ActivationKind::kPReLU) {
      if (!prelu_per_channel) {
        return Vec(prelu_weight[0]);
      }
      return ChannelsVary::value ? Vec::loadu(prelu_weight + c, count) : Vec(prelu_weight[c]);
    } else if constexpr (K == ActivationKind::kRReLU) {
      if (!params.rrelu_training) {
        return Vec(math::negative_slope<acc_t>(params, acc_t(0), offset));
      }
      acc_t lanes[Vec::size()] = {};
      for (int64_t i = 0; i < count; ++i) {
        lanes[i] = math::negative_slope<acc_t>(params, acc_t(0), offset + i);
      }
      return Vec::loadu(lanes);
    } else if constexpr (K == ActivationKind::kLeakyReLU) {
      return Vec(static_cast<acc_t>(params.alpha));
    } else {
      return Vec(acc_t(0));
    }
  }

  // The table's functions, on a local copy of the parameters whose kind the
  // compiler can see, so that the table's switch folds away.
  Vec forward(const Vec& z, const Vec& slope) const {
    math::ActivationParams p = params;
    p.kind = K;
    return math::activation_forward<Vec>(p, z, slope);
  }
  Vec derivative(const Vec& z, const Vec& slope) const {
    math::ActivationParams p = params;
    p.kind = K;
    return math::activation_derivative<Vec>(p, z, slope);
  }
};

}  // namespace
}  // namespace fusednorm::detail::CPU_CAPABILITY
