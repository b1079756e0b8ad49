// Host launchers of the channel-norm kernels: dtype dispatch, vectorisation
// choice, launch configuration. Torch-free (see channel_norm_launch.h).
#include <algorithm>
#include <atomic>
#include <cstdint>

#include "channel_norm_kernel.cuh"
#include "channel_norm_launch.h"
#include "launch_utils.cuh"

namespace fusednorm::cuda {
namespace {

// Work sizing. A full SM runs 64 warps (8 blocks of 256); aiming at two waves'
// worth of warps/blocks keeps every SM busy without making the partials (and
// so the ATen combine) large.
constexpr int64_t kWarpsPerSm = 64;
constexpr int64_t kBlocksPerSm = kWarpsPerSm / kWarpsPerBlock;
constexpr int64_t kWaves = 2;
// Slices stay below this many positions so that float counts stay exact.
constexpr int64_t kMaxSlice = int64_t{1} << 22;
// Channels-last slices have at least this many rows: each slice writes two (or
// three) accumulator values per channel, which must stay small next to its input.
constexpr int64_t kMinRowsPerSlice = 32;

int floor_log2(int64_t v) {
  int l = 0;
  while ((int64_t{2} << l) <= v) {
    ++l;
  }
  return l;
}

int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) {
    p *= 2;
  }
  return p;
}

ReduceParams reduce_params(const Geometry& g, const ReductionPlan& plan) {
  ReduceParams p;
  p.N = g.N;
  p.C = g.C;
  p.S = g.S;
  p.K = plan.K;
  p.slice = plan.slice;
  p.units = g.N * g.C * plan.K;
  p.c_tiles = plan.c_tiles;
  p.block_x = plan.block_x;
  p.log2_block_x = floor_log2(plan.block_x);
  p.div_K = FastDiv(plan.K);
  p.div_C = FastDiv(g.C);
  p.div_c_tiles = FastDiv(plan.c_tiles);
  return p;
}

int64_t reduce_blocks(const Geometry& g, const ReductionPlan& plan) {
  return g.channels_last ? g.N * plan.K * plan.c_tiles : ceil_div(g.N * g.C * plan.K, kWarpsPerBlock);
}

// gridDim.x limit.
constexpr int64_t kMaxBlocks = (int64_t{1} << 31) - 1;

ElementwiseParams elementwise_params(const Geometry& g) {
  ElementwiseParams p;
  p.C = g.C;
  p.numel = g.N * g.C * g.S;
  p.channels_last = g.channels_last;
  p.small_index = p.numel < (int64_t{1} << 31);
  p.div_inner = FastDiv(g.channels_last ? g.C : g.S);
  p.div_outer = FastDiv(g.channels_last ? g.S : g.C);
  return p;
}

// One resident wave of a grid-stride kernel: more blocks would only add
// per-block setup, fewer would leave SMs idle.
template <typename Kernel>
unsigned elementwise_grid(Kernel kernel, int64_t nvec, std::atomic<int>& resident_per_sm) {
  int per_sm = resident_per_sm.load(std::memory_order_relaxed);
  if (per_sm == 0) {
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0) != cudaSuccess || per_sm <= 0) {
      (void)cudaGetLastError();  // not fatal: fall back to the full-occupancy count
      per_sm = static_cast<int>(kBlocksPerSm);
    }
    resident_per_sm.store(per_sm, std::memory_order_relaxed);
  }
  const int64_t wave = static_cast<int64_t>(per_sm) * multiprocessor_count();
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(ceil_div(nvec, kThreads), wave)));
}

template <typename scalar_t, typename acc_t, int VEC>
cudaError_t moments_impl(const Geometry& g, const ReductionPlan& plan, const MomentsArgs& a, cudaStream_t stream) {
  const int64_t blocks = reduce_blocks(g, plan);
  if (blocks > kMaxBlocks) {
    return cudaErrorInvalidConfiguration;
  }
  const unsigned grid = static_cast<unsigned>(blocks);
  const ReduceParams p = reduce_params(g, plan);
  const auto* x = static_cast<const scalar_t*>(a.x);
  auto* mean = static_cast<acc_t*>(a.mean);
  auto* m2 = static_cast<acc_t*>(a.m2);
  auto* count = static_cast<acc_t*>(a.count);
  if (g.channels_last) {
    launch_kernel(moments_cl_kernel<scalar_t, acc_t, VEC>, grid, kThreads, 0, stream, p, x, mean, m2, count);
  } else {
    launch_kernel(moments_cf_kernel<scalar_t, acc_t, VEC>, grid, kThreads, 0, stream, p, x, mean, m2, count);
  }
  return cudaGetLastError();
}

template <typename scalar_t, typename acc_t, int VEC>
cudaError_t normalize_impl(const Geometry& g, const NormalizeArgs& a, cudaStream_t stream) {
  static std::atomic<int> resident_per_sm{0};  // per kernel; racing writers store the same value
  const ElementwiseParams p = elementwise_params(g);
  const NormalizePtrs<scalar_t, acc_t> ptrs{
      .x = static_cast<const scalar_t*>(a.x),
      .residual = static_cast<const scalar_t*>(a.residual),
      .scale = static_cast<const acc_t*>(a.scale),
      .shift = static_cast<const acc_t*>(a.shift),
      .out = static_cast<scalar_t*>(a.out),
      .coef_n_stride = a.coef_n_stride,
  };
  const auto kernel = normalize_kernel<scalar_t, acc_t, VEC>;
  const unsigned grid = elementwise_grid(kernel, p.numel / VEC, resident_per_sm);
  launch_kernel(kernel, grid, kThreads, 0, stream, p, ptrs, DeviceActivation<acc_t>(a.act));
  return cudaGetLastError();
}

template <typename scalar_t, typename acc_t, int VEC>
cudaError_t sums_impl(const Geometry& g, const ReductionPlan& plan, const BackwardSumsArgs& a, cudaStream_t stream) {
  const int64_t blocks = reduce_blocks(g, plan);
  if (blocks > kMaxBlocks) {
    return cudaErrorInvalidConfiguration;
  }
  const unsigned grid = static_cast<unsigned>(blocks);
  const ReduceParams p = reduce_params(g, plan);
  const SumsPtrs<scalar_t, acc_t> ptrs{
      .grad_out = static_cast<const scalar_t*>(a.grad_out),
      .x = static_cast<const scalar_t*>(a.x),
      .residual = static_cast<const scalar_t*>(a.residual),
      .scale = static_cast<const acc_t*>(a.scale),
      .shift = static_cast<const acc_t*>(a.shift),
      .mean = static_cast<const acc_t*>(a.mean),
      .sum_g = static_cast<acc_t*>(a.sum_g),
      .sum_g_xmu = static_cast<acc_t*>(a.sum_g_xmu),
      .sum_prelu = static_cast<acc_t*>(a.sum_prelu),
      .coef_n_stride = a.coef_n_stride,
  };
  const DeviceActivation<acc_t> act(a.act);
  if (g.channels_last) {
    launch_kernel(sums_cl_kernel<scalar_t, acc_t, VEC>, grid, kThreads, 0, stream, p, ptrs, act);
  } else {
    launch_kernel(sums_cf_kernel<scalar_t, acc_t, VEC>, grid, kThreads, 0, stream, p, ptrs, act);
  }
  return cudaGetLastError();
}

template <typename scalar_t, typename acc_t, int VEC>
cudaError_t apply_impl(const Geometry& g, const BackwardApplyArgs& a, cudaStream_t stream) {
  static std::atomic<int> resident_per_sm{0};
  const ElementwiseParams p = elementwise_params(g);
  const ApplyPtrs<scalar_t, acc_t> ptrs{
      .grad_out = static_cast<const scalar_t*>(a.grad_out),
      .x = static_cast<const scalar_t*>(a.x),
      .residual = static_cast<const scalar_t*>(a.residual),
      .scale = static_cast<const acc_t*>(a.scale),
      .shift = static_cast<const acc_t*>(a.shift),
      .mean = static_cast<const acc_t*>(a.mean),
      .k1 = static_cast<const acc_t*>(a.k1),
      .k2 = static_cast<const acc_t*>(a.k2),
      .k3 = static_cast<const acc_t*>(a.k3),
      .grad_input = static_cast<scalar_t*>(a.grad_input),
      .grad_residual = static_cast<scalar_t*>(a.grad_residual),
      .coef_n_stride = a.coef_n_stride,
  };
  const auto kernel = apply_kernel<scalar_t, acc_t, VEC>;
  const unsigned grid = elementwise_grid(kernel, p.numel / VEC, resident_per_sm);
  launch_kernel(kernel, grid, kThreads, 0, stream, p, ptrs, DeviceActivation<acc_t>(a.act));
  return cudaGetLastError();
}

// Vectorised when every vector stays inside one plane (channels-first) or row
// (channels-last) and every tensor the pass touches is 16-byte aligned.
bool can_vectorize(const Geometry& g, DType dtype, std::initializer_list<const void*> ptrs) {
  const int64_t run = g.channels_last ? g.C : g.S;
  return run % vector_width(dtype) == 0 && aligned16(ptrs);
}

}  // namespace

ReductionPlan plan_reduction(const Geometry& g, DType dtype, std::initializer_list<const void*> tensors) {
  ReductionPlan plan;
  plan.vec = can_vectorize(g, dtype, tensors) ? vector_width(dtype) : 1;
  if (g.S <= 0) {
    return plan;  // K = 1 slice of 0 elements
  }
  const int64_t sms = multiprocessor_count();
  int64_t K = 1;
  if (!g.channels_last) {
    // A warp per (plane, slice): split planes only until there are enough warps,
    // and never below one full tile of loads per lane.
    const int64_t planes = g.N * g.C;
    const int64_t tile = int64_t{kWarpSize} * kMomentsUnroll * plan.vec;
    const int64_t target = sms * kWarpsPerSm * kWaves;
    if (planes > 0 && planes < target) {
      K = std::min(ceil_div(target, planes), std::max<int64_t>(1, g.S / tile));
    }
    K = std::max(K, ceil_div(g.S, kMaxSlice));
    int64_t slice = ceil_div(g.S, K);
    // Whole tiles (or at least whole vectors) per slice, so only a plane's last
    // slice has a ragged end and vectors never straddle slices.
    const int64_t quantum = slice > tile ? tile : plan.vec;
    slice = ceil_div(slice, quantum) * quantum;
    plan.slice = slice;
    plan.K = ceil_div(g.S, slice);
  } else {
    const int64_t cvecs = g.C / plan.vec;
    plan.block_x = static_cast<int>(std::min<int64_t>(kThreads, next_pow2(std::max<int64_t>(cvecs, 1))));
    plan.c_tiles = ceil_div(cvecs, plan.block_x);
    const int64_t rows_step = kThreads / plan.block_x;
    const int64_t min_rows = std::max<int64_t>(rows_step * kMomentsUnroll, kMinRowsPerSlice);
    const int64_t tiles = g.N * plan.c_tiles;
    const int64_t target = sms * kBlocksPerSm * kWaves;
    if (tiles > 0 && tiles < target) {
      K = std::min(ceil_div(target, tiles), std::max<int64_t>(1, g.S / min_rows));
    }
    K = std::max(K, ceil_div(g.S, kMaxSlice));
    plan.slice = ceil_div(g.S, K);
    plan.K = ceil_div(g.S, plan.slice);
  }
  return plan;
}

cudaError_t launch_partial_moments(const Geometry& g, DType dtype, const ReductionPlan& plan, const MomentsArgs& args,
                                   cudaStream_t stream) {
  if (g.N * g.C == 0) {
    return cudaSuccess;
  }
  return dispatch_dtype(dtype, [&](auto types) {
    using T = decltype(types);
    constexpr int kVec = 16 / sizeof(typename T::scalar_t);
    return plan.vec > 1 ? moments_impl<typename T::scalar_t, typename T::acc_t, kVec>(g, plan, args, stream)
                        : moments_impl<typename T::scalar_t, typename T::acc_t, 1>(g, plan, args, stream);
  });
}

cudaError_t launch_normalize_activate(const Geometry& g, DType dtype, const NormalizeArgs& args, cudaStream_t stream) {
  if (g.N * g.C * g.S == 0) {
    return cudaSuccess;
  }
  const bool vec = can_vectorize(g, dtype, {args.x, args.residual, args.out});
  return dispatch_dtype(dtype, [&](auto types) {
    using T = decltype(types);
    constexpr int kVec = 16 / sizeof(typename T::scalar_t);
    return vec ? normalize_impl<typename T::scalar_t, typename T::acc_t, kVec>(g, args, stream)
               : normalize_impl<typename T::scalar_t, typename T::acc_t, 1>(g, args, stream);
  });
}

cudaError_t launch_backward_partial_sums(const Geometry& g, DType dtype, const ReductionPlan& plan,
                                         const BackwardSumsArgs& args, cudaStream_t stream) {
  if (g.N * g.C == 0) {
    return cudaSuccess;
  }
  return dispatch_dtype(dtype, [&](auto types) {
    using T = decltype(types);
    constexpr int kVec = 16 / sizeof(typename T::scalar_t);
    return plan.vec > 1 ? sums_impl<typename T::scalar_t, typename T::acc_t, kVec>(g, plan, args, stream)
                        : sums_impl<typename T::scalar_t, typename T::acc_t, 1>(g, plan, args, stream);
  });
}

cudaError_t launch_backward_apply(const Geometry& g, DType dtype, const BackwardApplyArgs& args, cudaStream_t stream) {
  if (g.N * g.C * g.S == 0 || (args.grad_input == nullptr && args.grad_residual == nullptr)) {
    return cudaSuccess;
  }
  const bool vec = can_vectorize(g, dtype, {args.grad_out, args.x, args.residual, args.grad_input, args.grad_residual});
  return dispatch_dtype(dtype, [&](auto types) {
    using T = decltype(types);
    constexpr int kVec = 16 / sizeof(typename T::scalar_t);
    return vec ? apply_impl<typename T::scalar_t, typename T::acc_t, kVec>(g, args, stream)
               : apply_impl<typename T::scalar_t, typename T::acc_t, 1>(g, args, stream);
  });
}

}  // namespace fusednorm::cuda
