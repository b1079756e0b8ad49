// The CPU kernels of the channel-norm engine (see ops/channel_norm.h for what each
// computes), written once on at::vec::Vectorized and compiled once per instruction
// set: channel_norm_kernel.cpp includes this file for the baseline ISA and picks,
// at load time, between that and the AVX2 build of channel_norm_kernel_avx2.cpp.
//
// The includer defines CPU_CAPABILITY (as ATen's own kernels do): every name here
// lives in fusednorm::detail::CPU_CAPABILITY, and at::vec puts its vector types in
// at::vec::CPU_CAPABILITY, so the two builds never share a symbol.
//
// Elementwise passes run in the accumulation dtype (float, or double for double
// input), a vector of it at a time; the activation is the one table of
// math/activation.h instantiated on that vector type. Sums accumulate in vector
// lanes over chunks of kChunkElements and are added into doubles chunk by chunk,
// so fp32 lanes never sum more than a few hundred terms.
#ifndef CPU_CAPABILITY
#error "define CPU_CAPABILITY before including channel_norm_kernel_impl.h"
#endif

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <array>
#include <initializer_list>
#include <type_traits>
#include <utility>
#include <vector>

#include "../math/activation.h"
#include "../ops/channel_norm.h"
#include "fixed_activation.h"
#include "vec_activation.h"

namespace fusednorm::detail::CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;
using math::ActivationKind;

// Work items smaller than this are not worth a task of their own.
constexpr int64_t kGrainElements = 32768;
// Elements (channels-first) or rows (channels-last) summed in vector lanes before
// the partial sums are added into doubles; channels-last chunks are also kept
// below kChunkBytes, so that each vector of channels re-reads them from cache.
constexpr int64_t kChunkElements = 2048;
constexpr int64_t kChunkRows = 256;
constexpr int64_t kChunkBytes = 64 * 1024;

// How many slices K to cut each (n, c)'s spatial extent into, so that there are
// enough independent work items for all threads.
int64_t choose_slices(int64_t units, int64_t S, int64_t min_slice) {
  const int64_t wanted = 4 * static_cast<int64_t>(at::get_num_threads());
  if (units >= wanted) {
    return 1;
  }
  const int64_t by_threads = (wanted + units - 1) / units;
  return std::max<int64_t>(1, std::min<int64_t>(by_threads, S / std::max<int64_t>(1, min_slice)));
}

int64_t slice_count(const ChannelView& v) {
  return v.layout == Layout::kChannelsFirst ? choose_slices(v.N * v.C, v.S, 4096) : choose_slices(v.N, v.S, 16);
}

at::Tensor slice_counts(int64_t S, int64_t K, at::ScalarType acc_dtype) {
  const int64_t slice = (S + K - 1) / K;
  at::Tensor counts = at::empty({K}, at::TensorOptions().dtype(acc_dtype));
  AT_DISPATCH_FLOATING_TYPES(acc_dtype, "slice_counts", [&] {
    scalar_t* counts_ptr = counts.data_ptr<scalar_t>();
    for (int64_t k = 0; k < K; ++k) {
      counts_ptr[k] = static_cast<scalar_t>(std::min(S, (k + 1) * slice) - k * slice);
    }
  });
  return counts;
}

// Whether an output may be written while its input is still being read: the
// overlapping tails of for_each_vector re-read inputs they have written past.
bool shares_memory(const at::Tensor& out, std::initializer_list<const at::Tensor*> inputs) {
  for (const at::Tensor* in : inputs) {
    if (out.defined() && in->defined() && at::get_overlap_status(out, *in) != at::MemOverlapStatus::No) {
      return true;
    }
  }
  return false;
}

// Channel of the element i places into a run whose first element is of channel c.
template <typename ChannelsVary>
int64_t channel_at(int64_t c, int64_t i, ChannelsVary) {
  return ChannelsVary::value ? c + i : c;
}

// A per-channel coefficient (coef[q], q = n * coef_n_stride + c) for the lanes of
// a run: one value broadcast (channels-first) or consecutive values (channels-last).
template <typename acc_t, typename ChannelsVary>
class RunCoefficient;

template <typename acc_t>
class RunCoefficient<acc_t, ChannelsFirst> {
 public:
  RunCoefficient(const acc_t* coef, int64_t q) : value_(coef[q]) {}
  Vectorized<acc_t> at(int64_t, int64_t) const { return value_; }

 private:
  Vectorized<acc_t> value_;
};

template <typename acc_t>
class RunCoefficient<acc_t, ChannelsLast> {
 public:
  RunCoefficient(const acc_t* coef, int64_t q) : coef_(coef + q) {}
  Vectorized<acc_t> at(int64_t i, int64_t count) const { return Vectorized<acc_t>::loadu(coef_ + i, count); }

 private:
  const acc_t* coef_;
};

template <typename acc_t, typename ChannelsVary>
RunCoefficient<acc_t, ChannelsVary> run_coefficient(const acc_t* coef, int64_t q, ChannelsVary) {
  return RunCoefficient<acc_t, ChannelsVary>(coef, q);
}

// One pass over every element, in parallel, walking memory in order, a run of
// consecutive elements at a time: f(offset, length, c, q, vary) gets the run's
// first element, its length, the channel c and coefficient index q of its first
// element (q = n * coef_n_stride + c), and vary = ChannelsFirst (a plane: every
// element of channel c) or ChannelsLast (a row: channels c, c + 1, ...). Runs are
// long, so f keeps its pointers in registers for the vector loop.
template <typename F>
void parallel_elementwise(const ChannelView& v, int64_t coef_n_stride, const F& f) {
  const int64_t C = v.C, S = v.S;
  if (v.layout == Layout::kChannelsFirst) {
    at::parallel_for(0, v.N * C, std::max<int64_t>(1, kGrainElements / S), [&](int64_t begin, int64_t end) {
      // (n, c) of the plane, stepped rather than divided out per plane.
      int64_t n = begin / C, c = begin % C;
      for (int64_t plane = begin; plane < end; ++plane) {
        f(plane * S, S, c, n * coef_n_stride + c, ChannelsFirst{});
        if (++c == C) {
          c = 0;
          ++n;
        }
      }
    });
  } else {
    at::parallel_for(0, v.N * S, std::max<int64_t>(1, kGrainElements / C), [&](int64_t begin, int64_t end) {
      int64_t n = begin / S, s = begin % S;
      for (int64_t row = begin; row < end; ++row) {
        f(row * C, C, 0, n * coef_n_stride, ChannelsLast{});
        if (++s == S) {
          s = 0;
          ++n;
        }
      }
    });
  }
}

// NS running sums per channel over slice k of each (n, c)'s spatial extent (K
// slices), in parallel: the reduction half of the kernels below. For each vector
// of elements it calls
//   accumulate(offset, count, skip, c, q, first, vary, sums)
// with offset the vector's first element, its lanes [skip, count) the ones to
// add (the others must leave `sums` unchanged), c and q the channel and
// coefficient index of lane 0 (as in parallel_elementwise), `first` the offset
// of the slice's first element of channel c, and `sums` the NS vectors to add
// into. Sums stay in vector lanes for a chunk and are then added into doubles;
// finish(n, c, k, first, totals, count) gets the NS doubles of (n, c, k) and the
// slice's element count.
template <int NS, typename acc_t, typename Accumulate, typename Finish>
void parallel_slice_reduce(const ChannelView& v, int64_t K, int64_t coef_n_stride, const Accumulate& accumulate,
                           const Finish& finish) {
  using Vec = Vectorized<acc_t>;
  using Sums = std::array<Vec, NS>;
  constexpr int64_t kSize = Vec::size();
  const Sums zeros = zero_vectors<Vec>(std::make_index_sequence<NS>());
  const int64_t N = v.N, C = v.C, S = v.S;
  const int64_t slice = (S + K - 1) / K;
  if (v.layout == Layout::kChannelsFirst) {
    // Four independent accumulators, so that consecutive vector additions do
    // not wait on each other's latency.
    // A grain of about kGrainElements: small inputs run on the calling thread.
    const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, slice));
    at::parallel_for(0, N * C * K, grain, [&](int64_t begin, int64_t end) {
      // Slice k of plane (n, c), stepped rather than divided out per unit.
      int64_t k = begin % K, plane = begin / K;
      int64_t n = plane / C, c = plane % C;
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t q = n * coef_n_stride + c;
        const int64_t first = plane * S + k * slice, last = plane * S + std::min(S, (k + 1) * slice);
        std::array<double, NS> totals{};
        for (int64_t chunk = first; chunk < last; chunk += kChunkElements) {
          const int64_t chunk_end = std::min(last, chunk + kChunkElements);
          std::array<Sums, 4> sums{zeros, zeros, zeros, zeros};
          int64_t i = chunk;
          for (; i + 4 * kSize <= chunk_end; i += 4 * kSize) {
            for (int64_t u = 0; u < 4; ++u) {
              accumulate(i + u * kSize, kSize, int64_t{0}, c, q, first, ChannelsFirst{}, sums[u]);
            }
          }
          // The rest: whole vectors, then the vector that ends at chunk_end
          // (its lanes before the rest masked off) or, in a chunk shorter than
          // a vector, a partial one.
          for (; i + kSize <= chunk_end; i += kSize) {
            accumulate(i, kSize, int64_t{0}, c, q, first, ChannelsFirst{}, sums[0]);
          }
          if (i < chunk_end) {
            if (chunk_end - chunk >= kSize) {
              accumulate(chunk_end - kSize, kSize, kSize - (chunk_end - i), c, q, first, ChannelsFirst{}, sums[1]);
            } else {
              accumulate(i, chunk_end - i, int64_t{0}, c, q, first, ChannelsFirst{}, sums[1]);
            }
          }
          for (int m = 0; m < NS; ++m) {
            totals[m] += lane_sum((sums[0][m] + sums[1][m]) + (sums[2][m] + sums[3][m]));
          }
        }
        finish(n, c, k, first, totals.data(), last - first);
        if (++k == K) {
          k = 0;
          ++plane;
          if (++c == C) {
            c = 0;
            ++n;
          }
        }
      }
    });
    return;
  }
  // Channels-last: a slice is a range of rows of one sample. Rows are taken a
  // chunk at a time, small enough to stay in cache, and each vector of channels
  // is summed down the chunk's rows in registers, two rows at a time.
  const int64_t row_bytes = std::max<int64_t>(1, C * v.data.element_size());
  const int64_t chunk_rows = std::clamp<int64_t>(kChunkBytes / row_bytes, 2, kChunkRows);
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, slice * C));
  at::parallel_for(0, N * K, grain, [&](int64_t begin, int64_t end) {
    std::vector<double> totals(NS * C);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t k = unit % K, n = unit / K, q_base = n * coef_n_stride;
      const int64_t s_begin = k * slice, s_end = std::min(S, s_begin + slice);
      const int64_t first_row = (n * S + s_begin) * C;
      std::fill(totals.begin(), totals.end(), 0.0);
      for (int64_t chunk = s_begin; chunk < s_end; chunk += chunk_rows) {
        const int64_t chunk_end = std::min(s_end, chunk + chunk_rows);
        for_each_vector<kSize>(0, C, /*overlap_tail=*/true, [&](int64_t c, int64_t count, int64_t skip) {
          Sums even = zeros, odd = zeros;
          int64_t s = chunk;
          for (; s + 1 < chunk_end; s += 2) {
            accumulate((n * S + s) * C + c, count, skip, c, q_base + c, first_row + c, ChannelsLast{}, even);
            accumulate((n * S + s + 1) * C + c, count, skip, c, q_base + c, first_row + c, ChannelsLast{}, odd);
          }
          if (s < chunk_end) {
            accumulate((n * S + s) * C + c, count, skip, c, q_base + c, first_row + c, ChannelsLast{}, even);
          }
          for (int m = 0; m < NS; ++m) {
            acc_t lanes[kSize];
            (even[m] + odd[m]).store(lanes);
            for (int64_t l = skip; l < count; ++l) {
              totals[m * C + c + l] += static_cast<double>(lanes[l]);
            }
          }
        });
      }
      for (int64_t c = 0; c < C; ++c) {
        std::array<double, NS> channel_totals;
        for (int m = 0; m < NS; ++m) {
          channel_totals[m] = totals[m * C + c];
        }
        finish(n, c, k, first_row + c, channel_totals.data(), s_end - s_begin);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cpu_partial_moments(const ChannelView& v) {
  const auto acc_dtype = accumulation_dtype(v.data.scalar_type());
  const auto options = v.data.options().dtype(acc_dtype);
  if (v.S == 1) {
    // (N, C): the moments of one element are the element itself and zero; the
    // combine reads them as they are, without a reduction pass (BatchNorm1d).
    const at::Tensor mean = v.data.to(acc_dtype).reshape({v.N, v.C, 1});
    return {mean, at::zeros({v.N, v.C, 1}, options), at::ones({1}, options)};
  }
  const int64_t K = slice_count(v);
  at::Tensor mean = at::empty({v.N, v.C, K}, options);
  at::Tensor m2 = at::empty({v.N, v.C, K}, options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.data.scalar_type(), "cpu_partial_moments", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using Vec = Vectorized<acc_t>;
    using L = Lanes<scalar_t>;
    const scalar_t* x = v.data.const_data_ptr<scalar_t>();
    acc_t* mean_ptr = mean.data_ptr<acc_t>();
    acc_t* m2_ptr = m2.data_ptr<acc_t>();
    // Sums of d = x - pivot and d^2, pivot = the slice's first value of the
    // channel: one pass, and no catastrophic cancellation when the mean is far
    // from zero.
    parallel_slice_reduce<2, acc_t>(
        v, K, 0,
        [&](int64_t offset, int64_t count, int64_t skip, int64_t, int64_t, int64_t first, auto vary,
            std::array<Vec, 2>& sums) {
          const Vec pivot = decltype(vary)::value ? L::load(x + first, count) : Vec(static_cast<acc_t>(x[first]));
          const Vec d = keep_lanes(L::load(x + offset, count) - pivot, count, skip);
          sums[0] += d;
          sums[1] = at::vec::fmadd(d, d, sums[1]);
        },
        [&](int64_t n, int64_t c, int64_t k, int64_t first, const double* totals, int64_t count) {
          const int64_t out = (n * v.C + c) * K + k;
          const double shift = totals[0] / static_cast<double>(count);
          mean_ptr[out] = static_cast<acc_t>(static_cast<double>(x[first]) + shift);
          m2_ptr[out] = static_cast<acc_t>(std::max(0.0, totals[1] - totals[0] * shift));
        });
  });
  return {mean, m2, slice_counts(v.S, K, acc_dtype)};
}

void cpu_normalize_activate(const ChannelView& v, const at::Tensor& residual, const at::Tensor& scale,
                            const at::Tensor& shift, CoefIndexing indexing, const ActivationArgs& act,
                            const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.data.scalar_type(), "cpu_normalize_activate", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using L = Lanes<scalar_t>;
    const scalar_t* x = v.data.const_data_ptr<scalar_t>();
    const scalar_t* res = residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr;
    const acc_t* scale_ptr = scale.const_data_ptr<acc_t>();
    const acc_t* shift_ptr = shift.const_data_ptr<acc_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    const bool overlap_tail = !shares_memory(out, {&v.data, &residual});
    with_activation_kind(act.params.kind, [&](auto kind) {
      const VecActivation<acc_t, decltype(kind)::value> activation(act);
      parallel_elementwise(
          v, indexing.coef_n_stride, [&](int64_t offset, int64_t length, int64_t c, int64_t q, auto vary) {
            const scalar_t* x_run = x + offset;
            const scalar_t* res_run = res != nullptr ? res + offset : nullptr;
            scalar_t* y_run = y + offset;
            const auto scale_run = run_coefficient(scale_ptr, q, vary);
            const auto shift_run = run_coefficient(shift_ptr, q, vary);
            for_each_vector<L::kSize>(0, length, overlap_tail, [&](int64_t i, int64_t count, int64_t) {
              auto z = at::vec::fmadd(L::load(x_run + i, count), scale_run.at(i, count), shift_run.at(i, count));
              if (res_run != nullptr) {
                z += L::load(res_run + i, count);
              }
              const auto slope = activation.slope(channel_at(c, i, vary), offset + i, count, vary);
              L::store(y_run + i, activation.forward(z, slope), count);
            });
          });
    });
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cpu_backward_partial_sums(
    const ChannelView& grad_out, const ChannelView& v, const at::Tensor& residual, const at::Tensor& scale,
    const at::Tensor& shift, const at::Tensor& mean, CoefIndexing indexing, const ActivationArgs& act,
    bool want_prelu) {
  const int64_t K = slice_count(v);
  const auto options = v.data.options().dtype(accumulation_dtype(v.data.scalar_type()));
  at::Tensor sum_g = at::empty({v.N, v.C, K}, options);
  at::Tensor sum_g_xmu = at::empty({v.N, v.C, K}, options);
  at::Tensor sum_prelu = want_prelu ? at::empty({v.N, v.C, K}, options) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.data.scalar_type(), "cpu_backward_partial_sums", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using Vec = Vectorized<acc_t>;
    using L = Lanes<scalar_t>;
    const scalar_t* x = v.data.const_data_ptr<scalar_t>();
    const scalar_t* dy = grad_out.data.const_data_ptr<scalar_t>();
    const scalar_t* res = residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr;
    const acc_t* scale_ptr = scale.const_data_ptr<acc_t>();
    const acc_t* shift_ptr = shift.const_data_ptr<acc_t>();
    const acc_t* mean_ptr = mean.const_data_ptr<acc_t>();
    acc_t* sum_g_ptr = sum_g.data_ptr<acc_t>();
    acc_t* sum_g_xmu_ptr = sum_g_xmu.data_ptr<acc_t>();
    acc_t* sum_prelu_ptr = want_prelu ? sum_prelu.data_ptr<acc_t>() : nullptr;
    with_activation_kind(act.params.kind, [&](auto kind) {
      constexpr ActivationKind kKind = decltype(kind)::value;
      // Sums of g, of g * (x - mean), and for PReLU of its weight's gradient
      // (grad_out * z over z <= 0).
      constexpr int NS = kKind == ActivationKind::kPReLU ? 3 : 2;
      const VecActivation<acc_t, kKind> activation(act);
      if (v.S == 1 && K == 1) {
        // (N, C): each (n, c) sums a single element, so the sums are an
        // elementwise pass, element i going to partial i.
        parallel_elementwise(
            v, indexing.coef_n_stride, [&](int64_t offset, int64_t length, int64_t c, int64_t q, auto vary) {
              const auto scale_run = run_coefficient(scale_ptr, q, vary);
              const auto shift_run = run_coefficient(shift_ptr, q, vary);
              const auto mean_run = run_coefficient(mean_ptr, q, vary);
              for_each_vector<L::kSize>(0, length, /*overlap_tail=*/false, [&](int64_t i, int64_t count, int64_t) {
                const Vec xv = L::load(x + offset + i, count);
                Vec z = at::vec::fmadd(xv, scale_run.at(i, count), shift_run.at(i, count));
                if (res != nullptr) {
                  z += L::load(res + offset + i, count);
                }
                const Vec dyv = L::load(dy + offset + i, count);
                const Vec slope = activation.slope(channel_at(c, i, vary), offset + i, count, vary);
                const Vec g = dyv * activation.derivative(z, slope);
                g.store(sum_g_ptr + offset + i, count);
                (g * (xv - mean_run.at(i, count))).store(sum_g_xmu_ptr + offset + i, count);
                if constexpr (NS == 3) {
                  if (sum_prelu_ptr != nullptr) {
                    Vec::blendv(Vec(acc_t(0)), dyv * z, z <= Vec(acc_t(0))).store(sum_prelu_ptr + offset + i, count);
                  }
                }
              });
            });
        return;
      }
      parallel_slice_reduce<NS, acc_t>(
          v, K, indexing.coef_n_stride,
          [&](int64_t offset, int64_t count, int64_t skip, int64_t c, int64_t q, int64_t, auto vary,
              std::array<Vec, NS>& sums) {
            const auto scale_run = run_coefficient(scale_ptr, q, vary);
            const auto shift_run = run_coefficient(shift_ptr, q, vary);
            const auto mean_run = run_coefficient(mean_ptr, q, vary);
            const Vec xv = L::load(x + offset, count);
            Vec z = at::vec::fmadd(xv, scale_run.at(0, count), shift_run.at(0, count));
            if (res != nullptr) {
              z += L::load(res + offset, count);
            }
            const Vec dyv = L::load(dy + offset, count);
            const Vec slope = activation.slope(c, offset, count, vary);
            const Vec g = keep_lanes(dyv * activation.derivative(z, slope), count, skip);
            sums[0] += g;
            sums[1] = at::vec::fmadd(g, xv - mean_run.at(0, count), sums[1]);
            if constexpr (NS == 3) {
              if (sum_prelu_ptr != nullptr) {
                sums[2] += keep_lanes(Vec::blendv(Vec(acc_t(0)), dyv * z, z <= Vec(acc_t(0))), count, skip);
              }
            }
          },
          [&](int64_t n, int64_t c, int64_t k, int64_t, const double* totals, int64_t) {
            const int64_t out = (n * v.C + c) * K + k;
            sum_g_ptr[out] = static_cast<acc_t>(totals[0]);
            sum_g_xmu_ptr[out] = static_cast<acc_t>(totals[1]);
            if (sum_prelu_ptr != nullptr) {
              sum_prelu_ptr[out] = static_cast<acc_t>(totals[NS - 1]);
            }
          });
    });
  });
  return {sum_g, sum_g_xmu, sum_prelu};
}

void cpu_backward_apply(const ChannelView& grad_out, const ChannelView& v, const at::Tensor& residual,
                        const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& k1,
                        const at::Tensor& k2, const at::Tensor& k3, CoefIndexing indexing, const ActivationArgs& act,
                        const at::Tensor& grad_input, const at::Tensor& grad_residual) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.data.scalar_type(), "cpu_backward_apply", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using L = Lanes<scalar_t>;
    const scalar_t* x = v.data.const_data_ptr<scalar_t>();
    const scalar_t* dy = grad_out.data.const_data_ptr<scalar_t>();
    const scalar_t* res = residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr;
    const acc_t* scale_ptr = scale.const_data_ptr<acc_t>();
    const acc_t* shift_ptr = shift.const_data_ptr<acc_t>();
    const acc_t* mean_ptr = mean.const_data_ptr<acc_t>();
    const acc_t* k1_ptr = k1.const_data_ptr<acc_t>();
    const acc_t* k2_ptr = k2.const_data_ptr<acc_t>();
    const acc_t* k3_ptr = k3.const_data_ptr<acc_t>();
    scalar_t* dx = grad_input.defined() ? grad_input.data_ptr<scalar_t>() : nullptr;
    scalar_t* dres = grad_residual.defined() ? grad_residual.data_ptr<scalar_t>() : nullptr;
    const std::initializer_list<const at::Tensor*> inputs{&v.data, &grad_out.data, &residual};
    const bool overlap_tail = !shares_memory(grad_input, inputs) && !shares_memory(grad_residual, inputs);
    with_activation_kind(act.params.kind, [&](auto kind) {
      const VecActivation<acc_t, decltype(kind)::value> activation(act);
      parallel_elementwise(
          v, indexing.coef_n_stride, [&](int64_t offset, int64_t length, int64_t c, int64_t q, auto vary) {
            const scalar_t* x_run = x + offset;
            const scalar_t* dy_run = dy + offset;
            const scalar_t* res_run = res != nullptr ? res + offset : nullptr;
            scalar_t* dx_run = dx != nullptr ? dx + offset : nullptr;
            scalar_t* dres_run = dres != nullptr ? dres + offset : nullptr;
            const auto scale_run = run_coefficient(scale_ptr, q, vary);
            const auto shift_run = run_coefficient(shift_ptr, q, vary);
            const auto mean_run = run_coefficient(mean_ptr, q, vary);
            const auto k1_run = run_coefficient(k1_ptr, q, vary);
            const auto k2_run = run_coefficient(k2_ptr, q, vary);
            const auto k3_run = run_coefficient(k3_ptr, q, vary);
            for_each_vector<L::kSize>(0, length, overlap_tail, [&](int64_t i, int64_t count, int64_t) {
              const auto xv = L::load(x_run + i, count);
              auto z = at::vec::fmadd(xv, scale_run.at(i, count), shift_run.at(i, count));
              if (res_run != nullptr) {
                z += L::load(res_run + i, count);
              }
              const auto slope = activation.slope(channel_at(c, i, vary), offset + i, count, vary);
              const auto g = L::load(dy_run + i, count) * activation.derivative(z, slope);
              if (dres_run != nullptr) {
                L::store(dres_run + i, g, count);
              }
              if (dx_run != nullptr) {
                // k1 * g + k2 * (x - mean) + k3
                const auto xmu = xv - mean_run.at(i, count);
                const auto grad = at::vec::fmadd(k1_run.at(i, count), g,
                                                 at::vec::fmadd(k2_run.at(i, count), xmu, k3_run.at(i, count)));
                L::store(dx_run + i, grad, count);
              }
            });
          });
    });
  });
}

}  // namespace

// This instruction set's kernels (constant-initialised: no code runs at load time).
const ChannelNormKernels& cpu_channel_norm_kernels() {
  static constexpr ChannelNormKernels kKernels{
      cpu_partial_moments,
      cpu_normalize_activate,
      cpu_backward_partial_sums,
      cpu_backward_apply,
  };
  return kKernels;
}

}  // namespace fusednorm::detail::CPU_CAPABILITY
