// CPU kernels of the channel-norm engine (see ops/channel_norm.h for what each
// computes). Statistics and gradient sums accumulate in double; elementwise
// passes run in the accumulation dtype (float, or double for double input).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <vector>

#include "../math/activation.h"
#include "../ops/channel_norm.h"
#include "fixed_activation.h"

namespace fusednorm::detail {
namespace {

using math::ActivationKind;

// Work items smaller than this are not worth a task of their own.
constexpr int64_t kGrainElements = 32768;

// Calls f(offset, c, q) for every element, in parallel, walking memory in order.
template <typename F>
void parallel_elementwise(const ChannelView& v, int64_t coef_n_stride, const F& f) {
  const int64_t N = v.N, C = v.C, S = v.S;
  if (v.layout == Layout::kChannelsFirst) {
    at::parallel_for(0, N * C, std::max<int64_t>(1, kGrainElements / S), [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t n = plane / C, c = plane % C, q = n * coef_n_stride + c;
        const int64_t base = plane * S;
        for (int64_t s = 0; s < S; ++s) {
          f(base + s, c, q);
        }
      }
    });
  } else {
    at::parallel_for(0, N * S, std::max<int64_t>(1, kGrainElements / C), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t q_base = (row / S) * coef_n_stride;
        const int64_t base = row * C;
        for (int64_t c = 0; c < C; ++c) {
          f(base + c, c, q_base + c);
        }
      }
    });
  }
}

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

// Runs `accumulate(offset, c, sums)` over every element of slice k of (n, c),
// and hands each finished (n, c, k) to `finish(n, c, k, sums, count)`. NS doubles
// of running sums per channel. The slices of channels-last inputs are row ranges
// of one sample, so channels are accumulated side by side.
template <int NS, typename Init, typename Accumulate, typename Finish>
void parallel_slice_reduce(const ChannelView& v, int64_t K, const Init& init, const Accumulate& accumulate,
                           const Finish& finish) {
  const int64_t N = v.N, C = v.C, S = v.S;
  const int64_t slice = (S + K - 1) / K;
  at::parallel_for(0, v.layout == Layout::kChannelsFirst ? N * C * K : N * K, 1, [&](int64_t begin, int64_t end) {
    std::vector<std::array<double, NS>> sums;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t k = unit % K;
      const int64_t s_begin = k * slice, s_end = std::min(S, s_begin + slice);
      if (v.layout == Layout::kChannelsFirst) {
        const int64_t plane = unit / K;
        const int64_t n = plane / C, c = plane % C;
        std::array<double, NS> acc{};
        init(n, c, plane * S + s_begin, acc);
        for (int64_t s = s_begin; s < s_end; ++s) {
          accumulate(plane * S + s, c, acc);
        }
        finish(n, c, k, acc, s_end - s_begin);
      } else {
        const int64_t n = unit / K;
        sums.assign(C, std::array<double, NS>{});
        for (int64_t c = 0; c < C; ++c) {
          init(n, c, (n * S + s_begin) * C + c, sums[c]);
        }
        for (int64_t s = s_begin; s < s_end; ++s) {
          const int64_t base = (n * S + s) * C;
          for (int64_t c = 0; c < C; ++c) {
            accumulate(base + c, c, sums[c]);
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          finish(n, c, k, sums[c], s_end - s_begin);
        }
      }
    }
  });
}

int64_t slice_count(const ChannelView& v) {
  return v.layout == Layout::kChannelsFirst ? choose_slices(v.N * v.C, v.S, 4096) : choose_slices(v.N, v.S, 16);
}

at::Tensor slice_counts(int64_t S, int64_t K, at::ScalarType acc_dtype) {
  const int64_t slice = (S + K - 1) / K;
  std::vector<double> counts(K);
  for (int64_t k = 0; k < K; ++k) {
    counts[k] = static_cast<double>(std::min(S, (k + 1) * slice) - k * slice);
  }
  return at::tensor(counts, at::TensorOptions().dtype(at::kDouble)).to(acc_dtype);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cpu_partial_moments(const ChannelView& v) {
  const int64_t K = slice_count(v);
  const auto acc_dtype = accumulation_dtype(v.data.scalar_type());
  const auto options = v.data.options().dtype(acc_dtype);
  at::Tensor mean = at::empty({v.N, v.C, K}, options);
  at::Tensor m2 = at::empty({v.N, v.C, K}, options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.data.scalar_type(), "cpu_partial_moments", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = v.data.const_data_ptr<scalar_t>();
    acc_t* mean_ptr = mean.data_ptr<acc_t>();
    acc_t* m2_ptr = m2.data_ptr<acc_t>();
    // Sums of (x - pivot) and its square, pivot = the slice's first value: one
    // pass, and no catastrophic cancellation when the mean is far from zero.
    // acc[0] = pivot, acc[1] = sum, acc[2] = sum of squares.
    parallel_slice_reduce<3>(
        v, K, [&](int64_t, int64_t, int64_t first, std::array<double, 3>& acc) { acc[0] = x[first]; },
        [&](int64_t offset, int64_t, std::array<double, 3>& acc) {
          const double d = static_cast<double>(x[offset]) - acc[0];
          acc[1] += d;
          acc[2] += d * d;
        },
        [&](int64_t n, int64_t c, int64_t k, const std::array<double, 3>& acc, int64_t count) {
          const int64_t out = (n * v.C + c) * K + k;
          const double shift = acc[1] / static_cast<double>(count);
          mean_ptr[out] = static_cast<acc_t>(acc[0] + shift);
          m2_ptr[out] = static_cast<acc_t>(std::max(0.0, acc[2] - acc[1] * shift));
        });
  });
  return {mean, m2, slice_counts(v.S, K, acc_dtype)};
}

void cpu_normalize_activate(const ChannelView& v, const at::Tensor& residual, const at::Tensor& scale,
                            const at::Tensor& shift, CoefIndexing indexing, const ActivationArgs& act,
                            const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.data.scalar_type(), "cpu_normalize_activate", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = v.data.const_data_ptr<scalar_t>();
    const scalar_t* res = residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr;
    const acc_t* scale_ptr = scale.const_data_ptr<acc_t>();
    const acc_t* shift_ptr = shift.const_data_ptr<acc_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    with_activation_kind(act.params.kind, [&](auto kind) {
      const FixedActivation<acc_t, decltype(kind)::value> activation(act);
      parallel_elementwise(v, indexing.coef_n_stride, [&](int64_t offset, int64_t c, int64_t q) {
        acc_t z = static_cast<acc_t>(x[offset]) * scale_ptr[q] + shift_ptr[q];
        if (res != nullptr) {
          z += static_cast<acc_t>(res[offset]);
        }
        y[offset] = static_cast<scalar_t>(activation.forward(z, c, offset));
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
    const scalar_t* x = v.data.const_data_ptr<scalar_t>();
    const scalar_t* dy = grad_out.data.const_data_ptr<scalar_t>();
    const scalar_t* res = residual.defined() ? residual.const_data_ptr<scalar_t>() : nullptr;
    const acc_t* scale_ptr = scale.const_data_ptr<acc_t>();
    const acc_t* shift_ptr = shift.const_data_ptr<acc_t>();
    const acc_t* mean_ptr = mean.const_data_ptr<acc_t>();
    acc_t* sum_g_ptr = sum_g.data_ptr<acc_t>();
    acc_t* sum_g_xmu_ptr = sum_g_xmu.data_ptr<acc_t>();
    acc_t* sum_prelu_ptr = want_prelu ? sum_prelu.data_ptr<acc_t>() : nullptr;
    const int64_t stride = indexing.coef_n_stride;
    with_activation_kind(act.params.kind, [&](auto kind) {
      const FixedActivation<acc_t, decltype(kind)::value> activation(act);
      // acc[0] = sum g, acc[1] = sum g * (x - mean), acc[2] = PReLU weight grad.
      parallel_slice_reduce<3>(
          v, K, [](int64_t, int64_t, int64_t, std::array<double, 3>&) {},
          [&](int64_t offset, int64_t c, std::array<double, 3>& acc) {
            // q depends on n; recovered from the offset's sample.
            const int64_t n = offset / (v.C * v.S);
            const int64_t q = n * stride + c;
            const acc_t xv = static_cast<acc_t>(x[offset]);
            acc_t z = xv * scale_ptr[q] + shift_ptr[q];
            if (res != nullptr) {
              z += static_cast<acc_t>(res[offset]);
            }
            const acc_t dyv = static_cast<acc_t>(dy[offset]);
            const acc_t g = dyv * activation.derivative(z, c, offset);
            acc[0] += g;
            acc[1] += static_cast<double>(g) * static_cast<double>(xv - mean_ptr[q]);
            if (z <= acc_t(0)) {
              acc[2] += static_cast<double>(dyv) * static_cast<double>(z);
            }
          },
          [&](int64_t n, int64_t c, int64_t k, const std::array<double, 3>& acc, int64_t) {
            const int64_t out = (n * v.C + c) * K + k;
            sum_g_ptr[out] = static_cast<acc_t>(acc[0]);
            sum_g_xmu_ptr[out] = static_cast<acc_t>(acc[1]);
            if (sum_prelu_ptr != nullptr) {
              sum_prelu_ptr[out] = static_cast<acc_t>(acc[2]);
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
    with_activation_kind(act.params.kind, [&](auto kind) {
      const FixedActivation<acc_t, decltype(kind)::value> activation(act);
      parallel_elementwise(v, indexing.coef_n_stride, [&](int64_t offset, int64_t c, int64_t q) {
        const acc_t xv = static_cast<acc_t>(x[offset]);
        acc_t z = xv * scale_ptr[q] + shift_ptr[q];
        if (res != nullptr) {
          z += static_cast<acc_t>(res[offset]);
        }
        const acc_t g = static_cast<acc_t>(dy[offset]) * activation.derivative(z, c, offset);
        if (dres != nullptr) {
          dres[offset] = static_cast<scalar_t>(g);
        }
        if (dx != nullptr) {
          dx[offset] = static_cast<scalar_t>(k1_ptr[q] * g + k2_ptr[q] * (xv - mean_ptr[q]) + k3_ptr[q]);
        }
      });
    });
  });
}

const ChannelNormKernels kCpuChannelNormKernels{
    cpu_partial_moments,
    cpu_normalize_activate,
    cpu_backward_partial_sums,
    cpu_backward_apply,
};

const bool kRegistered = register_channel_norm_kernels(c10::DeviceType::CPU, &kCpuChannelNormKernels);

}  // namespace
}  // namespace fusednorm::detail
