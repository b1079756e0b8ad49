// CPU kernels of the row-norm engine (see ops/row_norm.h for what each
// computes). Row statistics and gradient sums accumulate in double; elementwise
// math runs in the accumulation dtype (float, or double for double input).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../math/activation.h"
#include "../math/row_norm.h"
#include "../ops/row_norm.h"
#include "fixed_activation.h"

namespace fusednorm::detail {
namespace {

using math::ActivationKind;

// Work items smaller than this are not worth a task of their own.
constexpr int64_t kGrainElements = 32768;

// Rows per task of the forward pass.
int64_t grain_rows(int64_t N) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, N)); }

// What both passes read, as typed pointers, and the per-element steps they share.
template <typename scalar_t, typename acc_t>
struct RowData {
  const scalar_t* x;
  const scalar_t* residual;  // nullable
  const acc_t* weight;       // nullable
  const acc_t* bias;         // nullable
  int64_t N;
  bool rms;

  explicit RowData(const RowNormInputs& in)
      : x(in.x.const_data_ptr<scalar_t>()),
        residual(in.residual.defined() ? in.residual.const_data_ptr<scalar_t>() : nullptr),
        weight(in.weight.defined() ? in.weight.const_data_ptr<acc_t>() : nullptr),
        bias(in.bias.defined() ? in.bias.const_data_ptr<acc_t>() : nullptr),
        N(in.N),
        rms(in.mode == RowNormMode::kRMSNorm) {}

  acc_t w(int64_t col) const { return weight != nullptr ? weight[col] : acc_t(1); }
  acc_t xhat(int64_t offset, acc_t mean, acc_t rstd) const { return (static_cast<acc_t>(x[offset]) - mean) * rstd; }
  // The activation's input: normalized, affine, plus the residual.
  acc_t z(int64_t offset, int64_t col, acc_t xhat) const {
    acc_t v = xhat * w(col) + (bias != nullptr ? bias[col] : acc_t(0));
    if (residual != nullptr) {
      v += static_cast<acc_t>(residual[offset]);
    }
    return v;
  }
  // (mean, rstd) of the row starting at `base`; two passes in double (the row
  // is in cache for the second). RMS norm: mean 0 and the mean square.
  std::pair<double, double> stats(int64_t base, double eps) const {
    double mean = 0.0;
    if (!rms) {
      for (int64_t col = 0; col < N; ++col) {
        mean += static_cast<double>(x[base + col]);
      }
      mean /= static_cast<double>(N);
    }
    double m2 = 0.0;
    for (int64_t col = 0; col < N; ++col) {
      const double d = static_cast<double>(x[base + col]) - mean;
      m2 += d * d;
    }
    return {mean, 1.0 / std::sqrt(m2 / static_cast<double>(N) + eps)};
  }
};

// The element's PReLU channel; only PReLU pays for the divisions.
template <ActivationKind K>
int64_t prelu_channel(const math::PReluChannelMap& map, int64_t row, int64_t col) {
  if constexpr (K == ActivationKind::kPReLU) {
    return map(row, col);
  } else {
    return 0;
  }
}

void cpu_forward(const RowNormInputs& in, double eps, const at::Tensor& out, const at::Tensor& mean,
                 const at::Tensor& rstd) {
  if (in.M == 0 || in.N == 0) {
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.x.scalar_type(), "row_norm_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const RowData<scalar_t, acc_t> data(in);
    scalar_t* y = out.data_ptr<scalar_t>();
    acc_t* mean_ptr = mean.defined() ? mean.data_ptr<acc_t>() : nullptr;
    acc_t* rstd_ptr = rstd.data_ptr<acc_t>();
    with_activation_kind(in.act.params.kind, [&](auto kind) {
      constexpr ActivationKind K = decltype(kind)::value;
      const FixedActivation<acc_t, K> activation(in.act);
      at::parallel_for(0, in.M, grain_rows(in.N), [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const int64_t base = row * in.N;
          const auto [row_mean, row_rstd] = data.stats(base, eps);
          const acc_t mu = static_cast<acc_t>(row_mean), r = static_cast<acc_t>(row_rstd);
          if (mean_ptr != nullptr) {
            mean_ptr[row] = mu;
          }
          rstd_ptr[row] = r;
          for (int64_t col = 0; col < in.N; ++col) {
            const int64_t offset = base + col;
            const acc_t z = data.z(offset, col, data.xhat(offset, mu, r));
            y[offset] = static_cast<scalar_t>(activation.forward(z, prelu_channel<K>(in.prelu, row, col), offset));
          }
        }
      });
    });
  });
}

// Column sums of one block of rows, in double until written out.
struct ColumnSums {
  std::vector<double> weight, bias, prelu;

  ColumnSums(int64_t N, RowNormGradRequest want, bool prelu_along_columns)
      : weight(want.weight ? N : 0), bias(want.bias ? N : 0), prelu(want.prelu && prelu_along_columns ? N : 0) {}

  template <typename acc_t>
  static void store(const std::vector<double>& sums, const at::Tensor& partials, int64_t block) {
    if (!sums.empty()) {
      acc_t* dst = partials.data_ptr<acc_t>() + block * partials.size(1);
      std::transform(sums.begin(), sums.end(), dst, [](double v) { return static_cast<acc_t>(v); });
    }
  }
};

RowNormPartials cpu_backward(const RowNormInputs& in, const at::Tensor& grad_out, const at::Tensor& mean,
                             const at::Tensor& rstd, RowNormGradRequest want, const at::Tensor& grad_input,
                             const at::Tensor& grad_residual) {
  // Blocks of rows whose column sums are kept apart: one per thread, so the
  // partials stay small next to the input.
  const int64_t P = in.N == 0 ? 0 : std::min<int64_t>(in.M, at::get_num_threads());
  const auto options = in.x.options().dtype(accumulation_dtype(in.x.scalar_type()));
  const bool prelu_along_rows = in.prelu.along_rows;
  RowNormPartials partials;
  partials.weight = want.weight ? at::zeros({P, in.N}, options) : at::Tensor();
  partials.bias = want.bias ? at::zeros({P, in.N}, options) : at::Tensor();
  if (want.prelu) {
    partials.prelu = prelu_along_rows ? at::zeros({in.M}, options) : at::zeros({P, in.N}, options);
  }
  if (P == 0) {
    return partials;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.x.scalar_type(), "row_norm_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const RowData<scalar_t, acc_t> data(in);
    const scalar_t* dy = grad_out.const_data_ptr<scalar_t>();
    const acc_t* mean_ptr = mean.defined() ? mean.const_data_ptr<acc_t>() : nullptr;
    const acc_t* rstd_ptr = rstd.const_data_ptr<acc_t>();
    scalar_t* dx = grad_input.defined() ? grad_input.data_ptr<scalar_t>() : nullptr;
    scalar_t* dres = grad_residual.defined() ? grad_residual.data_ptr<scalar_t>() : nullptr;
    acc_t* row_prelu = want.prelu && prelu_along_rows ? partials.prelu.data_ptr<acc_t>() : nullptr;
    const int64_t N = in.N;
    with_activation_kind(in.act.params.kind, [&](auto kind) {
      constexpr ActivationKind K = decltype(kind)::value;
      const FixedActivation<acc_t, K> activation(in.act);
      at::parallel_for(0, P, 1, [&](int64_t block_begin, int64_t block_end) {
        std::vector<acc_t> g(N);  // d loss / d (xhat * w + b) of the current row
        for (int64_t block = block_begin; block < block_end; ++block) {
          ColumnSums sums(N, want, !prelu_along_rows);
          for (int64_t row = block * in.M / P; row < (block + 1) * in.M / P; ++row) {
            const int64_t base = row * N;
            const acc_t mu = mean_ptr != nullptr ? mean_ptr[row] : acc_t(0);
            const acc_t r = rstd_ptr[row];
            double sum_gw = 0.0, sum_gw_xhat = 0.0, sum_prelu = 0.0;
            for (int64_t col = 0; col < N; ++col) {
              const int64_t offset = base + col;
              const acc_t xhat = data.xhat(offset, mu, r);
              const acc_t z = data.z(offset, col, xhat);
              const acc_t dyv = static_cast<acc_t>(dy[offset]);
              g[col] = dyv * activation.derivative(z, prelu_channel<K>(in.prelu, row, col), offset);
              const double gw = static_cast<double>(g[col] * data.w(col));
              sum_gw += gw;
              sum_gw_xhat += gw * static_cast<double>(xhat);
              if (!sums.weight.empty()) {
                sums.weight[col] += static_cast<double>(g[col]) * static_cast<double>(xhat);
              }
              if (!sums.bias.empty()) {
                sums.bias[col] += static_cast<double>(g[col]);
              }
              if (want.prelu && z <= acc_t(0)) {
                (prelu_along_rows ? sum_prelu : sums.prelu[col]) += static_cast<double>(dyv) * static_cast<double>(z);
              }
            }
            if (row_prelu != nullptr) {
              row_prelu[row] = static_cast<acc_t>(sum_prelu);
            }
            if (dx != nullptr) {
              const acc_t mean_gw = data.rms ? acc_t(0) : static_cast<acc_t>(sum_gw / static_cast<double>(N));
              const acc_t mean_gw_xhat = static_cast<acc_t>(sum_gw_xhat / static_cast<double>(N));
              for (int64_t col = 0; col < N; ++col) {
                const int64_t offset = base + col;
                dx[offset] = static_cast<scalar_t>(math::row_norm_input_grad<acc_t>(
                    g[col] * data.w(col), data.xhat(offset, mu, r), r, mean_gw, mean_gw_xhat));
              }
            }
            if (dres != nullptr) {
              std::transform(g.begin(), g.end(), dres + base, [](acc_t v) { return static_cast<scalar_t>(v); });
            }
          }
          ColumnSums::store<acc_t>(sums.weight, partials.weight, block);
          ColumnSums::store<acc_t>(sums.bias, partials.bias, block);
          if (!prelu_along_rows && want.prelu) {
            ColumnSums::store<acc_t>(sums.prelu, partials.prelu, block);
          }
        }
      });
    });
  });
  return partials;
}

const RowNormKernels kCpuRowNormKernels{
    cpu_forward,
    cpu_backward,
};

const bool kRegistered = register_row_norm_kernels(c10::DeviceType::CPU, &kCpuRowNormKernels);

}  // namespace
}  // namespace fusednorm::detail
