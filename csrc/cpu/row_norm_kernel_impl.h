// The CPU kernels of the row-norm engine (see ops/row_norm.h for what each
// computes), written once on at::vec::Vectorized and compiled once per
// instruction set: row_norm_kernel.cpp includes this file for the baseline ISA
// and picks, at load time, between that and the AVX2 build of
// row_norm_kernel_avx2.cpp (as the channel-norm kernels do; the vector building
// blocks and the activation table on vectors are shared, in vec_activation.h).
//
// Elementwise math runs in the accumulation dtype (float, or double for double
// input), a vector of it at a time. Row sums (statistics, the backward's two
// per-row sums) accumulate in vector lanes over chunks of kChunkElements and are
// added into doubles chunk by chunk; the backward's column sums accumulate in
// acc_t over kChunkRows rows at a time and are then added into doubles.
#ifndef CPU_CAPABILITY
#error "define CPU_CAPABILITY before including row_norm_kernel_impl.h"
#endif

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>
#include <vector>

#include "../math/activation.h"
#include "../math/row_norm.h"
#include "../ops/row_norm.h"
#include "fixed_activation.h"
#include "vec_activation.h"

namespace fusednorm::detail::CPU_CAPABILITY {
namespace {

// Work items smaller than this are not worth a task of their own.
constexpr int64_t kRowGrainElements = 32768;
// Elements of a row summed in vector lanes before the sums are added into doubles.
constexpr int64_t kRowChunkElements = 2048;
// Rows whose column sums (backward) are added in acc_t before going into doubles.
constexpr int64_t kColumnChunkRows = 256;

// Rows per task of the forward pass.
int64_t grain_rows(int64_t N) { return std::max<int64_t>(1, kRowGrainElements / std::max<int64_t>(1, N)); }

// NS sums over the N elements of a row: accumulate(col, count, sums) adds the
// vector of columns [col, col + count) into the NS vectors `sums`, its lanes past
// count zeroed (count < kSize only for the last vector). Two sets of
// accumulators, so that consecutive additions do not wait on each other.
template <int NS, typename acc_t, typename F>
std::array<double, NS> row_sums(int64_t N, const F& accumulate) {
  using Vec = Vectorized<acc_t>;
  using Sums = std::array<Vec, NS>;
  constexpr int64_t kSize = Vec::size();
  const Sums zeros = zero_vectors<Vec>(std::make_index_sequence<NS>());
  std::array<double, NS> totals{};
  for (int64_t chunk = 0; chunk < N; chunk += kRowChunkElements) {
    const int64_t chunk_end = std::min(N, chunk + kRowChunkElements);
    Sums even = zeros, odd = zeros;
    int64_t col = chunk;
    for (; col + 2 * kSize <= chunk_end; col += 2 * kSize) {
      accumulate(col, kSize, even);
      accumulate(col + kSize, kSize, odd);
    }
    for (; col < chunk_end; col += kSize) {
      accumulate(col, std::min(kSize, chunk_end - col), even);
    }
    for (int m = 0; m < NS; ++m) {
      totals[m] += lane_sum(even[m] + odd[m]);
    }
  }
  return totals;
}

// What both passes read, as typed pointers, and the per-vector steps they share.
template <typename scalar_t>
struct RowData {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = Vectorized<acc_t>;
  using L = Lanes<scalar_t>;
  using LA = Lanes<acc_t>;

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

  Vec w(int64_t col, int64_t count) const { return weight != nullptr ? LA::load(weight + col, count) : Vec(acc_t(1)); }
  // xhat of the columns [col, col + count) of the row starting at `base`.
  Vec xhat(int64_t base, int64_t col, int64_t count, const Vec& mean, const Vec& rstd) const {
    return (L::load(x + base + col, count) - mean) * rstd;
  }
  // The activation's input: normalized, affine, plus the residual.
  Vec z(int64_t base, int64_t col, int64_t count, const Vec& xhat) const {
    Vec v = bias != nullptr ? at::vec::fmadd(xhat, w(col, count), LA::load(bias + col, count)) : xhat * w(col, count);
    if (residual != nullptr) {
      v += L::load(residual + base + col, count);
    }
    return v;
  }
  // (mean, rstd) of the row starting at `base`: two passes (the row is in cache
  // for the second), the second over x - mean. RMS norm: mean 0 and the mean square.
  std::pair<double, double> stats(int64_t base, double eps) const {
    const scalar_t* row = x + base;
    double mean = 0.0;
    if (!rms) {
      mean = row_sums<1, acc_t>(N,
                                [&](int64_t col, int64_t count, std::array<Vec, 1>& sums) {
                                  sums[0] += L::load(row + col, count);  // lanes past count load as zero
                                })[0] /
             static_cast<double>(N);
    }
    const Vec mu(static_cast<acc_t>(mean));
    const double m2 = row_sums<1, acc_t>(N, [&](int64_t col, int64_t count, std::array<Vec, 1>& sums) {
      const Vec d = keep_lanes(L::load(row + col, count) - mu, count, 0);
      sums[0] = at::vec::fmadd(d, d, sums[0]);
    })[0];
    return {mean, 1.0 / std::sqrt(m2 / static_cast<double>(N) + eps)};
  }
};

// The activation's negative-side slopes for the lanes of a row. PReLU's weight
// belongs to input dim 1, which runs along the rows (one slope per row) or the
// columns (the columns' slopes are gathered once per call); the other kinds'
// slopes come from VecActivation (RReLU's draw is a hash of the memory offset).
template <typename acc_t, ActivationKind K>
class RowSlopes {
 public:
  using Vec = Vectorized<acc_t>;

  RowSlopes(const RowNormInputs& in, const VecActivation<acc_t, K>& activation) : activation_(activation) {
    if constexpr (K == ActivationKind::kPReLU) {
      weight_ = in.act.prelu_weight.const_data_ptr<acc_t>();
      map_ = in.prelu;
      if (!map_.along_rows) {
        columns_.resize(in.N);
        for (int64_t col = 0; col < in.N; ++col) {
          columns_[col] = weight_[map_(0, col)];
        }
      }
    }
  }
  // What `at` needs of the row: PReLU's slope when it is one per row.
  Vec row(int64_t row) const {
    if constexpr (K == ActivationKind::kPReLU) {
      return columns_.empty() ? Vec(weight_[map_(row, 0)]) : Vec(acc_t(0));
    } else {
      return Vec(acc_t(0));
    }
  }
  // Slopes of the columns [col, col + count), the first at memory offset `offset`.
  Vec at(const Vec& row_slope, int64_t col, int64_t offset, int64_t count) const {
    if constexpr (K == ActivationKind::kPReLU) {
      return columns_.empty() ? row_slope : Lanes<acc_t>::load(columns_.data() + col, count);
    } else {
      return activation_.slope(0, offset, count, ChannelsFirst{});
    }
  }

 private:
  const VecActivation<acc_t, K>& activation_;
  const acc_t* weight_ = nullptr;
  math::PReluChannelMap map_;
  std::vector<acc_t> columns_;
};

void cpu_forward(const RowNormInputs& in, double eps, const at::Tensor& out, const at::Tensor& mean,
                 const at::Tensor& rstd) {
  if (in.M == 0 || in.N == 0) {
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.x.scalar_type(), "row_norm_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using Vec = Vectorized<acc_t>;
    using L = Lanes<scalar_t>;
    const RowData<scalar_t> data(in);
    scalar_t* y = out.data_ptr<scalar_t>();
    acc_t* mean_ptr = mean.defined() ? mean.data_ptr<acc_t>() : nullptr;
    acc_t* rstd_ptr = rstd.data_ptr<acc_t>();
    const int64_t N = in.N;
    with_activation_kind(in.act.params.kind, [&](auto kind) {
      constexpr ActivationKind K = decltype(kind)::value;
      const VecActivation<acc_t, K> activation(in.act);
      const RowSlopes<acc_t, K> slopes(in, activation);
      at::parallel_for(0, in.M, grain_rows(N), [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const int64_t base = row * N;
          const auto [row_mean, row_rstd] = data.stats(base, eps);
          const acc_t mu = static_cast<acc_t>(row_mean), r = static_cast<acc_t>(row_rstd);
          if (mean_ptr != nullptr) {
            mean_ptr[row] = mu;
          }
          rstd_ptr[row] = r;
          const Vec mu_v(mu), r_v(r), row_slope = slopes.row(row);
          for_each_vector<L::kSize>(0, N, /*overlap_tail=*/false, [&](int64_t col, int64_t count, int64_t) {
            const Vec z = data.z(base, col, count, data.xhat(base, col, count, mu_v, r_v));
            L::store(y + base + col, activation.forward(z, slopes.at(row_slope, col, base + col, count)), count);
          });
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

  // Adds a chunk's sums (acc_t) into `sums` and clears them.
  template <typename acc_t>
  static void add(std::vector<double>& sums, std::vector<acc_t>& chunk) {
    for (size_t i = 0; i < chunk.size(); ++i) {
      sums[i] += static_cast<double>(chunk[i]);
      chunk[i] = acc_t(0);
    }
  }

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
    using Vec = Vectorized<acc_t>;
    using L = Lanes<scalar_t>;
    using LA = Lanes<acc_t>;
    const RowData<scalar_t> data(in);
    const scalar_t* dy = grad_out.const_data_ptr<scalar_t>();
    const acc_t* mean_ptr = mean.defined() ? mean.const_data_ptr<acc_t>() : nullptr;
    const acc_t* rstd_ptr = rstd.const_data_ptr<acc_t>();
    scalar_t* dx = grad_input.defined() ? grad_input.data_ptr<scalar_t>() : nullptr;
    scalar_t* dres = grad_residual.defined() ? grad_residual.data_ptr<scalar_t>() : nullptr;
    acc_t* row_prelu = want.prelu && prelu_along_rows ? partials.prelu.data_ptr<acc_t>() : nullptr;
    const int64_t N = in.N;
    with_activation_kind(in.act.params.kind, [&](auto kind) {
      constexpr ActivationKind K = decltype(kind)::value;
      const VecActivation<acc_t, K> activation(in.act);
      const RowSlopes<acc_t, K> slopes(in, activation);
      at::parallel_for(0, P, 1, [&](int64_t block_begin, int64_t block_end) {
        std::vector<acc_t> g(N);  // d loss / d (xhat * w + b) of the current row
        // The column sums of the current chunk of rows.
        std::vector<acc_t> chunk_weight(want.weight ? N : 0), chunk_bias(want.bias ? N : 0);
        std::vector<acc_t> chunk_prelu(want.prelu && !prelu_along_rows ? N : 0);
        for (int64_t block = block_begin; block < block_end; ++block) {
          ColumnSums sums(N, want, !prelu_along_rows);
          const int64_t row_end = (block + 1) * in.M / P;
          for (int64_t chunk = block * in.M / P; chunk < row_end; chunk += kColumnChunkRows) {
            for (int64_t row = chunk; row < std::min(row_end, chunk + kColumnChunkRows); ++row) {
              const int64_t base = row * N;
              const Vec mu(mean_ptr != nullptr ? mean_ptr[row] : acc_t(0));
              const Vec r(rstd_ptr[row]);
              const Vec row_slope = slopes.row(row);
              // Sums of g * w, of g * w * xhat, and of PReLU's weight gradient
              // (grad_out * z over z <= 0) when it is one per row.
              const auto totals = row_sums<3, acc_t>(N, [&](int64_t col, int64_t count, std::array<Vec, 3>& s) {
                const Vec xhat = data.xhat(base, col, count, mu, r);
                const Vec z = data.z(base, col, count, xhat);
                const Vec dyv = L::load(dy + base + col, count);
                const Vec gv =
                    keep_lanes(dyv * activation.derivative(z, slopes.at(row_slope, col, base + col, count)), count, 0);
                LA::store(g.data() + col, gv, count);
                const Vec gw = gv * data.w(col, count);
                s[0] += gw;
                s[1] = at::vec::fmadd(gw, xhat, s[1]);
                if (!chunk_weight.empty()) {
                  acc_t* p = chunk_weight.data() + col;
                  LA::store(p, at::vec::fmadd(gv, xhat, LA::load(p, count)), count);
                }
                if (!chunk_bias.empty()) {
                  acc_t* p = chunk_bias.data() + col;
                  LA::store(p, LA::load(p, count) + gv, count);
                }
                if constexpr (K == ActivationKind::kPReLU) {
                  if (want.prelu) {
                    const Vec zero(acc_t(0));
                    const Vec term = keep_lanes(Vec::blendv(zero, dyv * z, z <= zero), count, 0);
                    if (prelu_along_rows) {
                      s[2] += term;
                    } else {
                      acc_t* p = chunk_prelu.data() + col;
                      LA::store(p, LA::load(p, count) + term, count);
                    }
                  }
                }
              });
              if (row_prelu != nullptr) {
                row_prelu[row] = static_cast<acc_t>(totals[2]);
              }
              if (dx != nullptr) {
                const Vec mean_gw(data.rms ? acc_t(0) : static_cast<acc_t>(totals[0] / static_cast<double>(N)));
                const Vec mean_gw_xhat(static_cast<acc_t>(totals[1] / static_cast<double>(N)));
                for_each_vector<L::kSize>(0, N, /*overlap_tail=*/false, [&](int64_t col, int64_t count, int64_t) {
                  const Vec gw = LA::load(g.data() + col, count) * data.w(col, count);
                  L::store(
                      dx + base + col,
                      math::row_norm_input_grad<Vec>(gw, data.xhat(base, col, count, mu, r), r, mean_gw, mean_gw_xhat),
                      count);
                });
              }
              if (dres != nullptr) {
                for_each_vector<L::kSize>(0, N, /*overlap_tail=*/false, [&](int64_t col, int64_t count, int64_t) {
                  L::store(dres + base + col, LA::load(g.data() + col, count), count);
                });
              }
            }
            ColumnSums::add(sums.weight, chunk_weight);
            ColumnSums::add(sums.bias, chunk_bias);
            ColumnSums::add(sums.prelu, chunk_prelu);
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

}  // namespace

// This instruction set's kernels (constant-initialised: no code runs at load time).
const RowNormKernels& cpu_row_norm_kernels() {
  static constexpr RowNormKernels kKernels{
      cpu_forward,
      cpu_backward,
  };
  return kKernels;
}

}  // namespace fusednorm::detail::CPU_CAPABILITY
