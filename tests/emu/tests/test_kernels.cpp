// Every CUDA kernel of both engines, run by the emulator through the torch-free
// launch API (csrc/cuda/*_launch.h) with the real launch planning, against a
// double-precision reference computed here from the same rounded inputs:
//   channel engine: partial moments, normalize+activate, backward partial sums,
//                   backward apply (channels-first and channels-last, scalar and
//                   vector paths, K slices);
//   row engine:     forward, backward rows, backward columns (warp and block per
//                   row, scalar and vector paths).
// Device buffers come from (emulated) cudaMalloc, exactly sized, so an access
// past a tensor hits a redzone. A launch that trips any of the emulator's checks
// fails the test through cudaGetLastError.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cuda/channel_norm_launch.h"
#include "cuda/row_norm_launch.h"

namespace {

using fusednorm::cuda::DType;
using fusednorm::math::ActivationKind;
namespace fc = fusednorm::cuda;

// ---------------------------------------------------------------------------
// Element types.

template <typename T>
double to_d(T v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(v);
  } else {
    return static_cast<double>(v);
  }
}
template <typename T>
T from_d(double v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(static_cast<float>(v));
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
}
template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) {
    return DType::kFloat;
  } else if constexpr (std::is_same_v<T, double>) {
    return DType::kDouble;
  } else if constexpr (std::is_same_v<T, __half>) {
    return DType::kHalf;
  } else {
    return DType::kBFloat16;
  }
}
template <typename T>
const char* dtype_name() {
  if constexpr (std::is_same_v<T, float>) {
    return "float32";
  } else if constexpr (std::is_same_v<T, double>) {
    return "float64";
  } else if constexpr (std::is_same_v<T, __half>) {
    return "float16";
  } else {
    return "bfloat16";
  }
}
template <typename T>
using acc_of = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Tolerance of a value stored in T (its rounding) plus the accumulation's error.
template <typename T>
double rel_tol() {
  if constexpr (std::is_same_v<T, double>) {
    return 1e-10;
  } else if constexpr (std::is_same_v<T, float>) {
    return 2e-5;
  } else if constexpr (std::is_same_v<T, __half>) {
    return 2e-3;
  } else {
    return 1.6e-2;
  }
}

// ---------------------------------------------------------------------------
// Device memory: exactly sized (cudaMalloc gives redzones), optionally shifted
// by `misalign` elements to force the scalar path.
template <typename T>
class Buffer {
 public:
  Buffer(std::size_t n, int misalign = 0) : n_(n) {
    EXPECT_EQ(cudaMalloc(&base_, (n + misalign) * sizeof(T)), cudaSuccess);
    ptr_ = base_ + misalign;
  }
  ~Buffer() { cudaFree(base_); }
  Buffer(Buffer&& o) noexcept : base_(std::exchange(o.base_, nullptr)), ptr_(o.ptr_), n_(o.n_) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* get() const { return ptr_; }
  void upload(const std::vector<T>& h) { cudaMemcpy(ptr_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice); }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    cudaMemcpy(h.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }

 private:
  T* base_ = nullptr;
  T* ptr_ = nullptr;
  std::size_t n_;
};

// A device copy of `h`, shifted by `misalign` elements.
template <typename T>
Buffer<T> device_copy(const std::vector<T>& h, int misalign = 0) {
  Buffer<T> b(h.size(), misalign);
  b.upload(h);
  return b;
}

template <typename T>
std::vector<T> random_values(std::size_t n, std::mt19937& rng, double mean, double stddev) {
  std::normal_distribution<double> d(mean, stddev);
  std::vector<T> v(n);
  for (T& x : v) {
    x = from_d<T>(d(rng));
  }
  return v;
}

// ---------------------------------------------------------------------------
// Activations, written out here (not the project's math): value and derivative.
struct Act {
  ActivationKind kind = ActivationKind::kIdentity;
  double alpha = 0.0;
  const char* name = "identity";
};

const std::vector<Act>& activations() {
  static const std::vector<Act> a = {
      {ActivationKind::kIdentity, 0.0, "identity"},
      {ActivationKind::kReLU, 0.0, "relu"},
      {ActivationKind::kLeakyReLU, 0.1, "leaky_relu"},
      {ActivationKind::kPReLU, 0.0, "prelu"},
      {ActivationKind::kELU, 1.3, "elu"},
      {ActivationKind::kGELU, 0.0, "gelu"},
      {ActivationKind::kSiLU, 0.0, "silu"},
      {ActivationKind::kTanh, 0.0, "tanh"},
      {ActivationKind::kSigmoid, 0.0, "sigmoid"},
  };
  return a;
}

double act_forward(const Act& a, double z, double prelu) {
  switch (a.kind) {
    case ActivationKind::kReLU:
      return z > 0 ? z : 0.0;
    case ActivationKind::kLeakyReLU:
      return z > 0 ? z : a.alpha * z;
    case ActivationKind::kPReLU:
      return z > 0 ? z : prelu * z;
    case ActivationKind::kELU:
      return z > 0 ? z : a.alpha * std::expm1(z);
    case ActivationKind::kGELU:
      return 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0)));
    case ActivationKind::kSiLU:
      return z / (1.0 + std::exp(-z));
    case ActivationKind::kTanh:
      return std::tanh(z);
    case ActivationKind::kSigmoid:
      return 1.0 / (1.0 + std::exp(-z));
    default:
      return z;
  }
}

double act_derivative(const Act& a, double z, double prelu) {
  switch (a.kind) {
    case ActivationKind::kReLU:
      return z > 0 ? 1.0 : 0.0;
    case ActivationKind::kLeakyReLU:
      return z > 0 ? 1.0 : a.alpha;
    case ActivationKind::kPReLU:
      return z > 0 ? 1.0 : prelu;
    case ActivationKind::kELU:
      return z > 0 ? 1.0 : a.alpha * std::exp(z);
    case ActivationKind::kGELU:
      return 0.5 * (1.0 + std::erf(z / std::sqrt(2.0))) + z * std::exp(-0.5 * z * z) / std::sqrt(2.0 * M_PI);
    case ActivationKind::kSiLU: {
      const double s = 1.0 / (1.0 + std::exp(-z));
      return s * (1.0 + z * (1.0 - s));
    }
    case ActivationKind::kTanh:
      return 1.0 - std::tanh(z) * std::tanh(z);
    case ActivationKind::kSigmoid: {
      const double s = 1.0 / (1.0 + std::exp(-z));
      return s * (1.0 - s);
    }
    default:
      return 1.0;
  }
}

template <typename acc_t>
fc::ActivationRaw raw_activation(const Act& a, const Buffer<acc_t>* prelu, bool per_channel) {
  fc::ActivationRaw r;
  r.params.kind = a.kind;
  r.params.alpha = a.alpha;
  if (a.kind == ActivationKind::kPReLU) {
    r.prelu_weight = prelu->get();
    r.prelu_per_channel = per_channel;
  }
  return r;
}

// Near a kink of the activation the derivative (or value) depends on the side
// of z; elements whose reference z is that close are not compared.
bool near_kink(const Act& a, double z, double tol) {
  switch (a.kind) {
    case ActivationKind::kReLU:
    case ActivationKind::kLeakyReLU:
    case ActivationKind::kPReLU:
    case ActivationKind::kELU:
      return std::abs(z) < tol;
    default:
      return false;
  }
}

// Compares and counts mismatches (prints the first few).
struct Compare {
  std::string what;
  int mismatches = 0;
  void operator()(double got, double want, double tol, const std::string& where) {
    if (!(std::abs(got - want) <= tol)) {  // NaN fails too
      if (mismatches++ < 5) {
        ADD_FAILURE() << what << ": " << where << ": got " << got << ", want " << want << " (tol " << tol << ")";
      }
    }
  }
};

void expect_clean_launch(const std::string& what) {
  const cudaError_t e = cudaGetLastError();
  EXPECT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e);
}

// ---------------------------------------------------------------------------
// Channel engine.

struct ChannelCase {
  int64_t N, C, S;
  bool channels_last;
  int misalign = 0;  // elements: forces the scalar path
  bool residual = false;
  bool per_sample_coef = false;  // coef_n_stride = C (group/instance norm) or 0 (batch norm)
  int act = 0;                   // index in activations()
  bool prelu_per_channel = true;

  std::string str() const {
    char b[160];
    std::snprintf(b, sizeof(b), "N=%lld C=%lld S=%lld %s misalign=%d residual=%d coef=%s act=%s",
                  static_cast<long long>(N), static_cast<long long>(C), static_cast<long long>(S),
                  channels_last ? "channels_last" : "channels_first", misalign, residual, per_sample_coef ? "nc" : "c",
                  activations()[act].name);
    return b;
  }
};

// Memory offset of (n, c, s).
int64_t offset_of(const ChannelCase& c, int64_t n, int64_t ch, int64_t s) {
  return c.channels_last ? (n * c.S + s) * c.C + ch : (n * c.C + ch) * c.S + s;
}

fc::Geometry geometry(const ChannelCase& c) { return fc::Geometry{c.N, c.C, c.S, c.channels_last}; }

std::vector<ChannelCase> channel_cases(bool vector_friendly_only = false) {
  std::vector<ChannelCase> cases;
  int act = 0;
  auto add = [&](int64_t N, int64_t C, int64_t S, bool last, int misalign, bool residual, bool nc) {
    ChannelCase c{N, C, S, last, misalign, residual, nc, act};
    act = (act + 1) % static_cast<int>(activations().size());
    cases.push_back(c);
  };
  for (bool last : {false, true}) {
    add(2, 6, 49, last, 0, false, false);   // 7x7 planes
    add(3, 5, 7, last, 0, true, true);      // odd everything
    add(2, 33, 99, last, 0, true, false);   // 9x11
    add(1, 4, 4096, last, 0, false, true);  // large planes: K slices
    add(4, 64, 16, last, 0, true, false);   // channels-last: block_x 16 x 16 rows
    add(8, 3, 1, last, 0, false, false);    // (N, C)
    add(2, 256, 8, last, 0, false, true);   // wide C: c_tiles
    add(2, 40, 64, last, 0, true, true);    // vector path with a tail tile
    if (!vector_friendly_only) {
      add(2, 16, 64, last, 1, true, false);  // misaligned: scalar path
      add(2, 7, 13, last, 0, false, false);  // odd: scalar path
    }
  }
  return cases;
}

template <typename T>
struct ChannelData {
  using acc_t = acc_of<T>;
  ChannelCase c;
  std::vector<T> x, residual, grad_out;
  std::vector<acc_t> scale, shift, mean, prelu, k1, k2, k3;

  ChannelData(const ChannelCase& cc, std::mt19937& rng) : c(cc) {
    const std::size_t n = c.N * c.C * c.S;
    const std::size_t q = (c.per_sample_coef ? c.N : 1) * c.C;
    x = random_values<T>(n, rng, 0.5, 2.0);
    residual = random_values<T>(n, rng, 0.0, 1.0);
    grad_out = random_values<T>(n, rng, 0.0, 1.0);
    scale = random_values<acc_t>(q, rng, 1.0, 0.3);
    shift = random_values<acc_t>(q, rng, 0.0, 0.5);
    mean = random_values<acc_t>(q, rng, 0.5, 0.2);
    k1 = random_values<acc_t>(q, rng, 1.0, 0.3);
    k2 = random_values<acc_t>(q, rng, 0.0, 0.3);
    k3 = random_values<acc_t>(q, rng, 0.0, 0.3);
    std::uniform_real_distribution<double> u(0.05, 0.4);
    prelu.resize(c.prelu_per_channel ? c.C : 1);
    for (acc_t& p : prelu) {
      p = static_cast<acc_t>(u(rng));
    }
  }
  int64_t coef(int64_t n, int64_t ch) const { return (c.per_sample_coef ? n * c.C : 0) + ch; }
  double prelu_at(int64_t ch) const { return prelu[c.prelu_per_channel ? ch : 0]; }
  double z_at(int64_t n, int64_t ch, int64_t o) const {
    const int64_t q = coef(n, ch);
    return to_d(x[o]) * scale[q] + shift[q] + (c.residual ? to_d(residual[o]) : 0.0);
  }
};

template <typename T>
void run_moments(const ChannelCase& c, std::mt19937& rng) {
  using acc_t = acc_of<T>;
  ChannelData<T> d(c, rng);
  const Buffer<T> x = device_copy(d.x, c.misalign);
  const fc::Geometry g = geometry(c);
  const fc::ReductionPlan plan = fc::plan_reduction(g, dtype_of<T>(), {x.get()});
  Buffer<acc_t> mean(c.N * c.C * plan.K), m2(c.N * c.C * plan.K), count(plan.K);
  fc::MomentsArgs args{x.get(), mean.get(), m2.get(), count.get()};
  EXPECT_EQ(fc::launch_partial_moments(g, dtype_of<T>(), plan, args, nullptr), cudaSuccess);
  expect_clean_launch(c.str());
  const auto pm = mean.download(), pv = m2.download(), pc = count.download();
  Compare cmp{std::string("moments ") + dtype_name<T>() + " " + c.str()};
  double total_count = 0;
  for (int64_t k = 0; k < plan.K; ++k) {
    total_count += pc[k];
  }
  cmp(total_count, static_cast<double>(c.S), 0.0, "sum of slice counts");
  for (int64_t n = 0; n < c.N; ++n) {
    for (int64_t ch = 0; ch < c.C; ++ch) {
      // Reference: two-pass moments in double.
      double s = 0, m2ref = 0, max_abs = 0;
      for (int64_t i = 0; i < c.S; ++i) {
        s += to_d(d.x[offset_of(c, n, ch, i)]);
      }
      const double mref = s / c.S;
      for (int64_t i = 0; i < c.S; ++i) {
        const double v = to_d(d.x[offset_of(c, n, ch, i)]);
        m2ref += (v - mref) * (v - mref);
        max_abs = std::max(max_abs, std::abs(v));
      }
      // The kernel's partials, combined (Chan) in double.
      double cnt = 0, m = 0, q2 = 0;
      for (int64_t k = 0; k < plan.K; ++k) {
        const int64_t i = c.channels_last ? (n * plan.K + k) * c.C + ch : (n * c.C + ch) * plan.K + k;
        const double nb = pc[k], mb = pm[i], vb = pv[i];
        if (nb == 0) {
          continue;
        }
        const double delta = mb - m;
        m += delta * nb / (cnt + nb);
        q2 += vb + delta * delta * cnt * nb / (cnt + nb);
        cnt += nb;
      }
      const double tol = std::is_same_v<acc_t, double> ? 1e-10 : 2e-5;
      const std::string where = "(n=" + std::to_string(n) + ", c=" + std::to_string(ch) + ")";
      cmp(m, mref, tol * (1 + max_abs), where + " mean");
      cmp(q2 / c.S, m2ref / c.S, tol * (1 + max_abs * max_abs), where + " variance");
    }
  }
}

template <typename T>
void run_normalize(const ChannelCase& c, std::mt19937& rng) {
  using acc_t = acc_of<T>;
  ChannelData<T> d(c, rng);
  const Act& a = activations()[c.act];
  const Buffer<T> x = device_copy(d.x, c.misalign), res = device_copy(d.residual, c.misalign);
  const Buffer<T> out(d.x.size(), c.misalign);
  const Buffer<acc_t> scale = device_copy(d.scale), shift = device_copy(d.shift), prelu = device_copy(d.prelu);
  fc::NormalizeArgs args;
  args.x = x.get();
  args.residual = c.residual ? res.get() : nullptr;
  args.scale = scale.get();
  args.shift = shift.get();
  args.coef_n_stride = c.per_sample_coef ? c.C : 0;
  args.act = raw_activation(a, &prelu, c.prelu_per_channel);
  args.out = out.get();
  EXPECT_EQ(fc::launch_normalize_activate(geometry(c), dtype_of<T>(), args, nullptr), cudaSuccess);
  expect_clean_launch(c.str());
  const auto got = out.download();
  Compare cmp{std::string("normalize ") + dtype_name<T>() + " " + c.str() + " " + a.name};
  for (int64_t n = 0; n < c.N; ++n) {
    for (int64_t ch = 0; ch < c.C; ++ch) {
      for (int64_t s = 0; s < c.S; ++s) {
        const int64_t o = offset_of(c, n, ch, s);
        const double z = d.z_at(n, ch, o);
        const double tol = 1e-5 * (1 + std::abs(z)) + rel_tol<T>() * (1 + std::abs(z));
        if (near_kink(a, z, 1e-4)) {
          continue;
        }
        cmp(to_d(got[o]), act_forward(a, z, d.prelu_at(ch)), tol, "offset " + std::to_string(o));
      }
    }
  }
}

template <typename T>
void run_sums(const ChannelCase& c, std::mt19937& rng) {
  using acc_t = acc_of<T>;
  ChannelData<T> d(c, rng);
  const Act& a = activations()[c.act];
  const Buffer<T> x = device_copy(d.x, c.misalign), res = device_copy(d.residual, c.misalign),
                  dy = device_copy(d.grad_out, c.misalign);
  const Buffer<acc_t> scale = device_copy(d.scale), shift = device_copy(d.shift), mean = device_copy(d.mean),
                      prelu = device_copy(d.prelu);
  const fc::Geometry g = geometry(c);
  const bool want_prelu = a.kind == ActivationKind::kPReLU;
  const fc::ReductionPlan plan =
      fc::plan_reduction(g, dtype_of<T>(), {dy.get(), x.get(), c.residual ? res.get() : nullptr});
  const std::size_t np = c.N * c.C * plan.K;
  Buffer<acc_t> sum_g(np), sum_gx(np), sum_p(np);
  fc::BackwardSumsArgs args;
  args.grad_out = dy.get();
  args.x = x.get();
  args.residual = c.residual ? res.get() : nullptr;
  args.scale = scale.get();
  args.shift = shift.get();
  args.mean = mean.get();
  args.coef_n_stride = c.per_sample_coef ? c.C : 0;
  args.act = raw_activation(a, &prelu, c.prelu_per_channel);
  args.sum_g = sum_g.get();
  args.sum_g_xmu = sum_gx.get();
  args.sum_prelu = want_prelu ? sum_p.get() : nullptr;
  EXPECT_EQ(fc::launch_backward_partial_sums(g, dtype_of<T>(), plan, args, nullptr), cudaSuccess);
  expect_clean_launch(c.str());
  const auto pg = sum_g.download(), pgx = sum_gx.download(), pp = want_prelu ? sum_p.download() : std::vector<acc_t>();
  Compare cmp{std::string("backward sums ") + dtype_name<T>() + " " + c.str() + " " + a.name};
  for (int64_t n = 0; n < c.N; ++n) {
    for (int64_t ch = 0; ch < c.C; ++ch) {
      double rg = 0, rgx = 0, rp = 0, mag = 0;
      bool skip = false;
      const int64_t q = d.coef(n, ch);
      for (int64_t s = 0; s < c.S; ++s) {
        const int64_t o = offset_of(c, n, ch, s);
        const double z = d.z_at(n, ch, o);
        skip = skip || near_kink(a, z, 1e-4);
        const double dyv = to_d(d.grad_out[o]), xv = to_d(d.x[o]);
        const double gv = dyv * act_derivative(a, z, d.prelu_at(ch));
        rg += gv;
        rgx += gv * (xv - d.mean[q]);
        rp += z > 0 ? 0.0 : dyv * z;
        mag += std::abs(gv) * (1 + std::abs(xv - d.mean[q])) + std::abs(dyv * z);
      }
      if (skip) {
        continue;
      }
      double kg = 0, kgx = 0, kp = 0;
      for (int64_t k = 0; k < plan.K; ++k) {
        const int64_t i = c.channels_last ? (n * plan.K + k) * c.C + ch : (n * c.C + ch) * plan.K + k;
        kg += pg[i];
        kgx += pgx[i];
        kp += want_prelu ? pp[i] : 0.0;
      }
      const double tol = (std::is_same_v<acc_t, double> ? 1e-10 : 1e-5) * (1 + mag);
      const std::string where = "(n=" + std::to_string(n) + ", c=" + std::to_string(ch) + ")";
      cmp(kg, rg, tol, where + " sum g");
      cmp(kgx, rgx, tol, where + " sum g (x - mean)");
      if (want_prelu) {
        cmp(kp, rp, tol, where + " sum prelu");
      }
    }
  }
}

template <typename T>
void run_apply(const ChannelCase& c, std::mt19937& rng) {
  using acc_t = acc_of<T>;
  ChannelData<T> d(c, rng);
  const Act& a = activations()[c.act];
  const Buffer<T> x = device_copy(d.x, c.misalign), res = device_copy(d.residual, c.misalign),
                  dy = device_copy(d.grad_out, c.misalign);
  const Buffer<T> gi(d.x.size(), c.misalign), gr(d.x.size(), c.misalign);
  const Buffer<acc_t> scale = device_copy(d.scale), shift = device_copy(d.shift), mean = device_copy(d.mean),
                      prelu = device_copy(d.prelu), k1 = device_copy(d.k1), k2 = device_copy(d.k2),
                      k3 = device_copy(d.k3);
  fc::BackwardApplyArgs args;
  args.grad_out = dy.get();
  args.x = x.get();
  args.residual = c.residual ? res.get() : nullptr;
  args.scale = scale.get();
  args.shift = shift.get();
  args.mean = mean.get();
  args.k1 = k1.get();
  args.k2 = k2.get();
  args.k3 = k3.get();
  args.coef_n_stride = c.per_sample_coef ? c.C : 0;
  args.act = raw_activation(a, &prelu, c.prelu_per_channel);
  args.grad_input = gi.get();
  args.grad_residual = c.residual ? gr.get() : nullptr;
  EXPECT_EQ(fc::launch_backward_apply(geometry(c), dtype_of<T>(), args, nullptr), cudaSuccess);
  expect_clean_launch(c.str());
  const auto got_i = gi.download(), got_r = gr.download();
  Compare cmp{std::string("backward apply ") + dtype_name<T>() + " " + c.str() + " " + a.name};
  for (int64_t n = 0; n < c.N; ++n) {
    for (int64_t ch = 0; ch < c.C; ++ch) {
      const int64_t q = d.coef(n, ch);
      for (int64_t s = 0; s < c.S; ++s) {
        const int64_t o = offset_of(c, n, ch, s);
        const double z = d.z_at(n, ch, o);
        if (near_kink(a, z, 1e-4)) {
          continue;
        }
        const double xv = to_d(d.x[o]);
        const double gv = to_d(d.grad_out[o]) * act_derivative(a, z, d.prelu_at(ch));
        const double want = d.k1[q] * gv + d.k2[q] * (xv - d.mean[q]) + d.k3[q];
        const double mag = std::abs(d.k1[q] * gv) + std::abs(d.k2[q] * (xv - d.mean[q])) + std::abs(d.k3[q]);
        const double tol = (1e-5 + rel_tol<T>()) * (1 + mag);
        cmp(to_d(got_i[o]), want, tol, "grad_input offset " + std::to_string(o));
        if (c.residual) {
          cmp(to_d(got_r[o]), gv, (1e-5 + rel_tol<T>()) * (1 + std::abs(gv)),
              "grad_residual offset " + std::to_string(o));
        }
      }
    }
  }
}

template <typename F>
void for_dtypes(const F& f) {
  f(float{});
  f(double{});
  f(__half{});
  f(__nv_bfloat16{});
}

std::vector<ChannelCase> channel_cases_in(bool channels_last) {
  std::vector<ChannelCase> out;
  for (const ChannelCase& c : channel_cases()) {
    if (c.channels_last == channels_last) {
      out.push_back(c);
    }
  }
  return out;
}

// Runs run(case, rng) in every dtype for each case.
#define EMU_EVERY_DTYPE(cases, run, seed)                    \
  do {                                                       \
    std::mt19937 rng(seed);                                  \
    for (const auto& c : cases) {                            \
      for_dtypes([&](auto t) { run<decltype(t)>(c, rng); }); \
    }                                                        \
  } while (0)

TEST(ChannelKernels, MomentsFirst) { EMU_EVERY_DTYPE(channel_cases_in(false), run_moments, 1); }
TEST(ChannelKernels, MomentsLast) { EMU_EVERY_DTYPE(channel_cases_in(true), run_moments, 2); }
TEST(ChannelKernels, Normalize) { EMU_EVERY_DTYPE(channel_cases(), run_normalize, 3); }
TEST(ChannelKernels, SumsFirst) { EMU_EVERY_DTYPE(channel_cases_in(false), run_sums, 4); }
TEST(ChannelKernels, SumsLast) { EMU_EVERY_DTYPE(channel_cases_in(true), run_sums, 5); }
TEST(ChannelKernels, SumsEveryActivation) {
  std::mt19937 rng(6);
  for (int act = 0; act < static_cast<int>(activations().size()); ++act) {
    for (bool last : {false, true}) {
      ChannelCase c{2, 12, 40, last, 0, act % 2 == 0, act % 3 == 0, act, act % 2 == 1};
      run_sums<float>(c, rng);
    }
  }
}
TEST(ChannelKernels, Apply) { EMU_EVERY_DTYPE(channel_cases(), run_apply, 7); }

// ---------------------------------------------------------------------------
// Row engine.

struct RowCase {
  int64_t M, N;
  bool rms = false;
  bool residual = false;
  bool affine = true;
  int act = 0;
  int misalign = 0;
  bool prelu_along_rows = false;  // PReLU's channel is a row dim
  int64_t prelu_channels = 1;
  int64_t prelu_inner = 1;

  std::string str() const {
    char b[200];
    std::snprintf(b, sizeof(b), "M=%lld N=%lld %s residual=%d affine=%d act=%s misalign=%d prelu=%s/%lld/%lld",
                  static_cast<long long>(M), static_cast<long long>(N), rms ? "rms" : "layer", residual, affine,
                  activations()[act].name, misalign, prelu_along_rows ? "rows" : "cols",
                  static_cast<long long>(prelu_channels), static_cast<long long>(prelu_inner));
    return b;
  }
  int64_t prelu_channel(int64_t row, int64_t col) const {
    return ((prelu_along_rows ? row : col) / prelu_inner) % prelu_channels;
  }
};

// block: rows long enough for a block per row (more than 128 vectors).
std::vector<RowCase> row_cases(bool block) {
  std::vector<RowCase> cases;
  int act = 0;
  auto add = [&](int64_t M, int64_t N, bool rms, bool residual, bool affine, int misalign, bool rows, int64_t ch,
                 int64_t inner) {
    cases.push_back(RowCase{M, N, rms, residual, affine, act, misalign, rows, ch, inner});
    act = (act + 1) % static_cast<int>(activations().size());
  };
  if (!block) {
    add(16, 64, false, false, true, 0, false, 4, 16);
    add(13, 40, true, true, true, 0, true, 3, 2);
    add(9, 7, false, true, false, 0, false, 7, 1);
    add(33, 96, false, false, true, 1, false, 6, 16);  // misaligned
    add(64, 128, true, false, true, 0, true, 8, 8);
    add(5, 520, false, true, true, 0, false, 1, 1);  // scalar path, 520 elements per row
    add(300, 16, false, true, true, 0, true, 5, 4);  // many rows: several per block
  } else {
    add(3, 1536, false, true, true, 0, false, 3, 512);
    add(4, 2048, true, false, true, 0, true, 2, 1);
    add(2, 4100, false, false, true, 0, false, 1, 1);  // scalar path, block per row
    add(2, 1032, false, true, false, 1, false, 8, 129);
    add(5, 5000, true, true, true, 0, false, 4, 1250);
  }
  return cases;
}

template <typename T>
struct RowData {
  using acc_t = acc_of<T>;
  RowCase c;
  std::vector<T> x, residual, grad_out;
  std::vector<acc_t> weight, bias, prelu;
  RowData(const RowCase& cc, std::mt19937& rng) : c(cc) {
    const std::size_t n = c.M * c.N;
    x = random_values<T>(n, rng, 0.5, 2.0);
    residual = random_values<T>(n, rng, 0.0, 1.0);
    grad_out = random_values<T>(n, rng, 0.0, 1.0);
    weight = random_values<acc_t>(c.N, rng, 1.0, 0.3);
    bias = random_values<acc_t>(c.N, rng, 0.0, 0.3);
    std::uniform_real_distribution<double> u(0.05, 0.4);
    prelu.resize(c.prelu_channels);
    for (acc_t& p : prelu) {
      p = static_cast<acc_t>(u(rng));
    }
  }
  // Row statistics in double: mean (0 for RMS norm) and rstd.
  std::pair<double, double> stats(int64_t row, double eps) const {
    double s = 0, s2 = 0;
    for (int64_t j = 0; j < c.N; ++j) {
      s += to_d(x[row * c.N + j]);
    }
    const double mean = c.rms ? 0.0 : s / c.N;
    for (int64_t j = 0; j < c.N; ++j) {
      const double v = to_d(x[row * c.N + j]) - mean;
      s2 += v * v;
    }
    return {mean, 1.0 / std::sqrt(s2 / c.N + eps)};
  }
  double w(int64_t j) const { return c.affine ? weight[j] : 1.0; }
  double b(int64_t j) const { return c.affine && !c.rms ? bias[j] : 0.0; }
};

template <typename T>
fc::RowInputs row_inputs(const RowCase& c, const Buffer<T>& x, const Buffer<T>& res, const Buffer<acc_of<T>>& w,
                         const Buffer<acc_of<T>>& b, const Buffer<acc_of<T>>& prelu) {
  fc::RowInputs in;
  in.x = x.get();
  in.residual = c.residual ? res.get() : nullptr;
  in.weight = c.affine ? w.get() : nullptr;
  in.bias = c.affine && !c.rms ? b.get() : nullptr;
  in.rms = c.rms;
  in.act = raw_activation(activations()[c.act], &prelu, c.prelu_channels > 1);
  in.prelu = fusednorm::math::PReluChannelMap{c.prelu_along_rows, c.prelu_inner, c.prelu_channels};
  return in;
}

constexpr double kEps = 1e-5;

template <typename T>
void run_row_forward(const RowCase& c, std::mt19937& rng) {
  using acc_t = acc_of<T>;
  RowData<T> d(c, rng);
  const Act& a = activations()[c.act];
  const Buffer<T> x = device_copy(d.x, c.misalign), res = device_copy(d.residual, c.misalign);
  const Buffer<T> out(d.x.size(), c.misalign);
  const Buffer<acc_t> w = device_copy(d.weight), b = device_copy(d.bias), prelu = device_copy(d.prelu);
  const Buffer<acc_t> mean(c.M), rstd(c.M);
  fc::RowForwardArgs args;
  args.in = row_inputs(c, x, res, w, b, prelu);
  args.eps = kEps;
  args.out = out.get();
  args.mean = c.rms ? nullptr : mean.get();
  args.rstd = rstd.get();
  const fc::RowGeometry g{c.M, c.N};
  const fc::RowPlan plan = fc::plan_rows(g, dtype_of<T>(), {args.in.x, args.in.residual, args.out});
  EXPECT_EQ(fc::launch_row_norm_forward(g, dtype_of<T>(), plan, args, nullptr), cudaSuccess);
  expect_clean_launch(c.str());
  const auto got = out.download(), got_mean = mean.download(), got_rstd = rstd.download();
  Compare cmp{std::string("row forward ") + dtype_name<T>() + " " + c.str()};
  const double stat_tol = std::is_same_v<acc_t, double> ? 1e-10 : 2e-5;
  for (int64_t i = 0; i < c.M; ++i) {
    const auto [m, r] = d.stats(i, kEps);
    if (!c.rms) {
      cmp(got_mean[i], m, stat_tol * 4, "mean of row " + std::to_string(i));
    }
    cmp(got_rstd[i], r, stat_tol * r, "rstd of row " + std::to_string(i));
    for (int64_t j = 0; j < c.N; ++j) {
      const int64_t o = i * c.N + j;
      const double z = (to_d(d.x[o]) - m) * r * d.w(j) + d.b(j) + (c.residual ? to_d(d.residual[o]) : 0.0);
      if (near_kink(a, z, 1e-4)) {
        continue;
      }
      const double want = act_forward(a, z, d.prelu[c.prelu_channel(i, j)]);
      cmp(to_d(got[o]), want, (1e-5 + rel_tol<T>()) * (1 + std::abs(z)), "out offset " + std::to_string(o));
    }
  }
}

template <typename T>
void run_row_backward(const RowCase& c, std::mt19937& rng) {
  using acc_t = acc_of<T>;
  RowData<T> d(c, rng);
  const Act& a = activations()[c.act];
  const bool prelu = a.kind == ActivationKind::kPReLU;
  const Buffer<T> x = device_copy(d.x, c.misalign), res = device_copy(d.residual, c.misalign),
                  dy = device_copy(d.grad_out, c.misalign);
  const Buffer<T> gi(d.x.size(), c.misalign), gr(d.x.size(), c.misalign);
  const Buffer<acc_t> w = device_copy(d.weight), b = device_copy(d.bias), pw = device_copy(d.prelu);
  const Buffer<acc_t> prelu_rows(c.M);
  // The saved statistics, as the forward would have written them.
  std::vector<acc_t> hm(c.M), hr(c.M);
  for (int64_t i = 0; i < c.M; ++i) {
    const auto [m, r] = d.stats(i, kEps);
    hm[i] = static_cast<acc_t>(m);
    hr[i] = static_cast<acc_t>(r);
  }
  const Buffer<acc_t> mean = device_copy(hm), rstd = device_copy(hr);
  fc::RowBackwardArgs args;
  args.in = row_inputs(c, x, res, w, b, pw);
  args.grad_out = dy.get();
  args.mean = c.rms ? nullptr : mean.get();
  args.rstd = rstd.get();
  args.grad_input = gi.get();
  args.grad_residual = c.residual ? gr.get() : nullptr;
  const fc::RowGeometry g{c.M, c.N};
  const fc::RowPlan plan = fc::plan_rows(
      g, dtype_of<T>(), {args.grad_out, args.in.x, args.in.residual, args.grad_input, args.grad_residual});
  Buffer<acc_t> pwt(plan.partial_blocks * c.N), pb(plan.partial_blocks * c.N), pp(plan.partial_blocks * c.N);
  args.partial_weight = c.affine ? pwt.get() : nullptr;
  args.partial_bias = c.affine && !c.rms ? pb.get() : nullptr;
  if (prelu) {
    (c.prelu_along_rows ? args.prelu_rows : args.partial_prelu) = c.prelu_along_rows ? prelu_rows.get() : pp.get();
  }
  EXPECT_EQ(fc::launch_row_norm_backward(g, dtype_of<T>(), plan, args, nullptr), cudaSuccess);
  expect_clean_launch(c.str());
  const auto got_i = gi.download(), got_r = gr.download(), got_w = pwt.download(), got_b = pb.download(),
             got_p = pp.download(), got_pr = prelu_rows.download();
  Compare cmp{std::string("row backward ") + dtype_name<T>() + " " + c.str()};
  std::vector<double> rw(c.N, 0.0), rb(c.N, 0.0), rp_col(c.N, 0.0), mag_col(c.N, 0.0);
  for (int64_t i = 0; i < c.M; ++i) {
    const double m = hm[i], r = hr[i];
    std::vector<double> gv(c.N), xhat(c.N), z(c.N), dyv(c.N);
    bool skip = false;
    double s_gw = 0, s_gwx = 0, rp_row = 0, mag = 0;
    for (int64_t j = 0; j < c.N; ++j) {
      const int64_t o = i * c.N + j;
      xhat[j] = (to_d(d.x[o]) - m) * r;
      z[j] = xhat[j] * d.w(j) + d.b(j) + (c.residual ? to_d(d.residual[o]) : 0.0);
      skip = skip || near_kink(a, z[j], 1e-4);
      dyv[j] = to_d(d.grad_out[o]);
      gv[j] = dyv[j] * act_derivative(a, z[j], d.prelu[c.prelu_channel(i, j)]);
      s_gw += gv[j] * d.w(j);
      s_gwx += gv[j] * d.w(j) * xhat[j];
      mag += std::abs(gv[j] * d.w(j)) * (1 + std::abs(xhat[j]));
      const double pt = z[j] > 0 ? 0.0 : dyv[j] * z[j];
      rp_row += pt;
      rw[j] += gv[j] * xhat[j];
      rb[j] += gv[j];
      rp_col[j] += pt;
      mag_col[j] += std::abs(gv[j]) * (1 + std::abs(xhat[j])) + std::abs(pt);
    }
    if (skip) {
      std::fill(rw.begin(), rw.end(), std::nan(""));  // column sums through a kink: not compared
      continue;
    }
    const double mean_gw = c.rms ? 0.0 : s_gw / c.N, mean_gwx = s_gwx / c.N;
    for (int64_t j = 0; j < c.N; ++j) {
      const int64_t o = i * c.N + j;
      const double want = r * (gv[j] * d.w(j) - mean_gw - xhat[j] * mean_gwx);
      const double tol =
          (1e-5 + rel_tol<T>()) * r * (std::abs(gv[j] * d.w(j)) + mag / c.N * (1 + std::abs(xhat[j])) + 1);
      cmp(to_d(got_i[o]), want, tol, "grad_input offset " + std::to_string(o));
      if (c.residual) {
        cmp(to_d(got_r[o]), gv[j], (1e-5 + rel_tol<T>()) * (1 + std::abs(gv[j])), "grad_residual " + std::to_string(o));
      }
    }
    if (prelu && c.prelu_along_rows) {
      cmp(got_pr[i], rp_row, 1e-5 * (1 + mag), "prelu row sum " + std::to_string(i));
    }
  }
  if (std::isnan(rw[0])) {
    return;
  }
  for (int64_t j = 0; j < c.N; ++j) {
    double kw = 0, kb = 0, kp = 0;
    for (int64_t p = 0; p < plan.partial_blocks; ++p) {
      kw += got_w[p * c.N + j];
      kb += got_b[p * c.N + j];
      kp += got_p[p * c.N + j];
    }
    const double tol = (std::is_same_v<acc_t, double> ? 1e-10 : 1e-5) * (1 + mag_col[j]);
    if (c.affine) {
      cmp(kw, rw[j], tol, "weight column " + std::to_string(j));
      if (!c.rms) {
        cmp(kb, rb[j], tol, "bias column " + std::to_string(j));
      }
    }
    if (prelu && !c.prelu_along_rows) {
      cmp(kp, rp_col[j], tol, "prelu column " + std::to_string(j));
    }
  }
}

TEST(RowKernels, ForwardWarpPerRow) { EMU_EVERY_DTYPE(row_cases(false), run_row_forward, 11); }
TEST(RowKernels, ForwardBlockPerRow) { EMU_EVERY_DTYPE(row_cases(true), run_row_forward, 12); }
TEST(RowKernels, BackwardWarpPerRow) { EMU_EVERY_DTYPE(row_cases(false), run_row_backward, 13); }
TEST(RowKernels, BackwardBlockPerRow) { EMU_EVERY_DTYPE(row_cases(true), run_row_backward, 14); }
TEST(RowKernels, BackwardEveryActivation) {
  std::mt19937 rng(15);
  for (int act = 0; act < static_cast<int>(activations().size()); ++act) {
    RowCase c{24, 96, act % 2 == 1, act % 2 == 0, true, act, 0, act % 3 == 0, 4, 8};
    run_row_backward<float>(c, rng);
  }
}

}  // namespace
