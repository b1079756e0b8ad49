// The emulator's own features, each proved by a small kernel written here:
// atomics on global and shared memory, __threadfence and the last-block-done
// reduction, cooperative launches with a grid-wide barrier (and what happens
// when not every block can be resident), the occupancy model, dynamic shared
// memory with its attribute, launch limits, warp intrinsics and tiles, the
// schedules, and the traffic counters on hand-checked access patterns.
#include <cooperative_groups.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "internal.h"

namespace cg = cooperative_groups;
using emu::detail::Check;

// Kernels with extern __shared__ arrays live in a named namespace: in an
// unnamed one the array would have internal linkage, and the emulator gives
// those arrays storage by their (external) symbol names.
namespace emu_test {

// Two extern __shared__ names: they alias, as on the GPU.
__global__ void dynamic_shared_kernel(float* out, int n) {
  extern __shared__ float dyn[];
  extern __shared__ unsigned char dyn_bytes[];
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    dyn[i] = static_cast<float>(i);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float f;
    std::memcpy(&f, dyn_bytes + 4 * (n - 1), 4);
    out[0] = f;
  }
}

}  // namespace emu_test

namespace {

// ---- helpers ----------------------------------------------------------------

template <typename T>
T* device_array(std::size_t n, const std::vector<T>& init = {}) {
  T* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  if (!init.empty()) {
    cudaMemcpy(p, init.data(), n * sizeof(T), cudaMemcpyHostToDevice);
  } else {
    cudaMemset(p, 0, n * sizeof(T));
  }
  return p;
}
template <typename T>
std::vector<T> host(const T* p, std::size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}

uint64_t findings(Check c) { return emu::detail::totals().findings[static_cast<int>(c)]; }
uint64_t all_findings() {
  uint64_t n = 0;
  for (uint64_t f : emu::detail::totals().findings) {
    n += f;
  }
  return n;
}

// Runs f under every schedule (and a few seeds), restoring the options.
template <typename F>
void for_schedules(const F& f) {
  emu::detail::Options& o = emu::detail::mutable_options();
  const emu::detail::Options saved = o;
  for (int sched = 0; sched < 4; ++sched) {
    for (unsigned seed : {1u, 7u}) {
      for (int resident : {1, 3}) {
        o.sched = sched;
        o.seed = seed;
        o.resident = resident;
        SCOPED_TRACE("sched " + std::to_string(sched) + " seed " + std::to_string(seed) + " resident " +
                     std::to_string(resident));
        f();
      }
    }
  }
  o = saved;
}

// ---- atomics ----------------------------------------------------------------

struct Counters {
  int i;
  unsigned u;
  unsigned long long ull;
  float f;
  double d;
  int max;
  int min;
  unsigned inc;
  int cas;
  int exch;
  __half h;
  __nv_bfloat16 b;
};

__global__ void atomics_kernel(Counters* c) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(&c->i, 1);
  atomicAdd(&c->u, 2u);
  atomicAdd(&c->ull, 3ull);
  atomicAdd(&c->f, 0.5f);
  atomicAdd(&c->d, 0.25);
  atomicMax(&c->max, t);
  atomicMin(&c->min, -t);
  atomicInc(&c->inc, 9u);  // wraps to 0 after 9
  // An increment by compare-and-swap, as code without a native atomic does.
  int old = c->cas, assumed;
  do {
    assumed = old;
    old = atomicCAS(&c->cas, assumed, assumed + 1);
  } while (old != assumed);
  atomicExch(&c->exch, 42);
  atomicAdd(&c->h, __float2half_rn(1.0f));
  atomicAdd(&c->b, __float2bfloat16_rn(1.0f));
}

TEST(Runtime, AtomicsOnGlobalMemory) {
  for_schedules([] {
    Counters init{};
    init.min = 1000;
    Counters* c = device_array<Counters>(1, {init});
    emu::launch(atomics_kernel, {dim3(3), dim3(96)}, c);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const Counters h = host(c, 1)[0];
    const int n = 3 * 96;
    EXPECT_EQ(h.i, n);
    EXPECT_EQ(h.u, 2u * n);
    EXPECT_EQ(h.ull, 3ull * n);
    EXPECT_FLOAT_EQ(h.f, 0.5f * n);
    EXPECT_DOUBLE_EQ(h.d, 0.25 * n);
    EXPECT_EQ(h.max, n - 1);
    EXPECT_EQ(h.min, -(n - 1));
    EXPECT_EQ(h.inc, static_cast<unsigned>(n % 10));
    EXPECT_EQ(h.cas, n);
    EXPECT_EQ(h.exch, 42);
    EXPECT_EQ(__half2float(h.h), static_cast<float>(n));
    // As on the GPU: from 256 on, bf16's spacing is 2 and 256 + 1 rounds back to 256.
    EXPECT_EQ(__bfloat162float(h.b), 256.0f);
    cudaFree(c);
  });
}

// A histogram in shared memory, merged into global memory with atomics.
__global__ void histogram_kernel(const int* values, int n, int* bins) {
  __shared__ int local[16];
  if (threadIdx.x < 16) {
    local[threadIdx.x] = 0;
  }
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    atomicAdd(&local[values[i] % 16], 1);
  }
  __syncthreads();
  if (threadIdx.x < 16) {
    atomicAdd(&bins[threadIdx.x], local[threadIdx.x]);
  }
}

TEST(Runtime, AtomicsOnSharedMemory) {
  const int n = 5000;
  std::vector<int> v(n);
  std::vector<int> want(16, 0);
  for (int i = 0; i < n; ++i) {
    v[i] = (i * 7919) % 1000;
    ++want[v[i] % 16];
  }
  for_schedules([&] {
    int* values = device_array<int>(n, v);
    int* bins = device_array<int>(16);
    emu::launch(histogram_kernel, {dim3(4), dim3(128)}, values, n, bins);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    EXPECT_EQ(host(bins, 16), want);
    cudaFree(values);
    cudaFree(bins);
  });
}

// ---- last block done -------------------------------------------------------

// Each block sums its part; the block that finishes last (ticket from an
// atomic counter, after a __threadfence) adds the partials up.
__global__ void last_block_sum(const float* x, int n, float* partials, unsigned* count, float* result) {
  __shared__ float warp_sums[32];
  __shared__ bool is_last;
  float s = 0;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    s += x[i];
  }
  for (int m = 16; m > 0; m /= 2) {
    s += __shfl_xor_sync(0xffffffffu, s, m);
  }
  if (threadIdx.x % 32 == 0) {
    warp_sums[threadIdx.x / 32] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float b = 0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) {
      b += warp_sums[w];
    }
    partials[blockIdx.x] = b;
    __threadfence();
    const unsigned ticket = atomicAdd(count, 1u);
    is_last = ticket == gridDim.x - 1;
  }
  __syncthreads();
  if (is_last && threadIdx.x == 0) {
    float total = 0;
    for (unsigned b = 0; b < gridDim.x; ++b) {
      total += partials[b];
    }
    *result = total;
    *count = 0;  // ready for the next launch
  }
}

TEST(Runtime, LastBlockDoneReduction) {
  const int n = 10000;
  std::vector<float> h(n);
  for (int i = 0; i < n; ++i) {
    h[i] = static_cast<float>(i % 13);
  }
  const float want = std::accumulate(h.begin(), h.end(), 0.0f);
  for_schedules([&] {
    float* x = device_array<float>(n, h);
    float* partials = device_array<float>(7);
    unsigned* count = device_array<unsigned>(1);
    float* result = device_array<float>(1);
    for (int rep = 0; rep < 2; ++rep) {
      emu::launch(last_block_sum, {dim3(7), dim3(128)}, x, n, partials, count, result);
      ASSERT_EQ(cudaGetLastError(), cudaSuccess);
      EXPECT_EQ(host(result, 1)[0], want);
      EXPECT_EQ(host(count, 1)[0], 0u);
    }
    cudaFree(x);
    cudaFree(partials);
    cudaFree(count);
    cudaFree(result);
  });
}

// ---- cooperative launch ------------------------------------------------------

// One pass over the data with two grid-wide barriers: partial sums, the total,
// then every element divided by it. Each block also keeps a value in shared
// memory across the barriers, which must survive the other blocks' turns.
__global__ void persistent_normalize(float* x, int n, float* partials, float* total, int* shared_ok) {
  cg::grid_group grid = cg::this_grid();
  __shared__ float block_sum;
  __shared__ unsigned mine;
  if (threadIdx.x == 0) {
    block_sum = 0;
    mine = blockIdx.x * 7919u + 1u;
  }
  __syncthreads();
  float s = 0;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    s += x[i];
  }
  atomicAdd(&block_sum, s);
  __syncthreads();
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = block_sum;
  }
  grid.sync();
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    float t = 0;
    for (unsigned b = 0; b < gridDim.x; ++b) {
      t += partials[b];
    }
    *total = t;
  }
  grid.sync();
  const float t = *total;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    x[i] /= t;
  }
  if (threadIdx.x == 0 && mine != blockIdx.x * 7919u + 1u) {
    atomicExch(shared_ok, 0);
  }
}

TEST(Runtime, CooperativeLaunchWithGridBarrier) {
  emu::detail::Options& o = emu::detail::mutable_options();
  const int saved_sms = o.sm_count;
  o.sm_count = 4;
  int per_sm = 0;
  ASSERT_EQ(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persistent_normalize, 256, 0), cudaSuccess);
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  ASSERT_EQ(sms, 4);
  ASSERT_EQ(per_sm, 8);  // 256 threads, 32 registers assumed, 8 bytes of shared memory
  const int n = 20000;
  std::vector<float> h(n);
  for (int i = 0; i < n; ++i) {
    h[i] = static_cast<float>(1 + i % 5);
  }
  const double total = std::accumulate(h.begin(), h.end(), 0.0);
  for_schedules([&] {
    float* x = device_array<float>(n, h);
    const int blocks = per_sm * sms;
    float* partials = device_array<float>(blocks);
    float* t = device_array<float>(1);
    int* ok = device_array<int>(1, {1});
    void* args[] = {&x, const_cast<int*>(&n), &partials, &t, &ok};
    ASSERT_EQ(cudaLaunchCooperativeKernel(persistent_normalize, dim3(blocks), dim3(256), args, 0, nullptr),
              cudaSuccess);
    EXPECT_EQ(host(ok, 1)[0], 1) << "a block's shared memory changed across grid.sync";
    const auto out = host(x, n);
    for (int i = 0; i < n; i += 997) {
      EXPECT_NEAR(out[i], h[i] / total, 1e-9);
    }
    cudaFree(x);
    cudaFree(partials);
    cudaFree(t);
    cudaFree(ok);
  });
  o.sm_count = saved_sms;
}

TEST(Runtime, CooperativeLaunchTooLargeIsRefused) {
  emu::detail::Options& o = emu::detail::mutable_options();
  const int saved_sms = o.sm_count;
  o.sm_count = 2;
  float* x = device_array<float>(16);
  float* partials = device_array<float>(64);
  float* t = device_array<float>(1);
  int* ok = device_array<int>(1, {1});
  int n = 16;
  void* args[] = {&x, &n, &partials, &t, &ok};
  // 8 blocks of 256 per SM fit; 17 on 2 SMs do not: no block may run.
  EXPECT_EQ(cudaLaunchCooperativeKernel(persistent_normalize, dim3(17), dim3(256), args, 0, nullptr),
            cudaErrorCooperativeLaunchTooLarge);
  EXPECT_EQ(cudaGetLastError(), cudaErrorCooperativeLaunchTooLarge);
  EXPECT_EQ(host(ok, 1)[0], 1);
  o.sm_count = saved_sms;
}

__global__ void early_exit_before_grid_sync(int* out) {
  if (blockIdx.x == 1) {
    return;  // never arrives: the others wait forever on the GPU
  }
  cg::this_grid().sync();
  out[blockIdx.x] = 1;
}

TEST(Runtime, GridBarrierDeadlockIsReported) {
  int* out = device_array<int>(4);
  void* args[] = {&out};
  const uint64_t before = findings(Check::kDeadlock);
  EXPECT_NE(cudaLaunchCooperativeKernel(early_exit_before_grid_sync, dim3(4), dim3(64), args, 0, nullptr), cudaSuccess);
  EXPECT_GT(findings(Check::kDeadlock), before);
  cudaGetLastError();
}

TEST(Runtime, GridSyncOutsideCooperativeLaunchIsReported) {
  int* out = device_array<int>(4);
  const uint64_t before = findings(Check::kGridSync);
  emu::launch(early_exit_before_grid_sync, {dim3(1), dim3(32)}, out);
  EXPECT_NE(cudaGetLastError(), cudaSuccess);
  EXPECT_GT(findings(Check::kGridSync), before);
}

// ---- occupancy, dynamic shared memory, limits ---------------------------------

__global__ void static_shared_20k(float* out) {
  __shared__ float buf[5 * 1024];
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned n = blockDim.x * blockDim.y * blockDim.z;
  buf[t] = 1.0f;
  __syncthreads();
  out[t] = buf[(t + 1) % n];
}

__global__ void static_shared_50k(float* out) {
  __shared__ float big[12800];
  big[threadIdx.x] = 1.0f;
  out[threadIdx.x] = big[threadIdx.x];
}

TEST(Runtime, OccupancyModel) {
  int blocks = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, static_shared_20k, 256, 0);
  EXPECT_EQ(blocks, 8);  // threads: 2048 / 256
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, static_shared_20k, 1024, 0);
  EXPECT_EQ(blocks, 2);
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, static_shared_20k, 128, 0);
  EXPECT_EQ(blocks, 10);  // shared memory: 228 KB / (20 KB + 1 KB reserved)
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, emu_test::dynamic_shared_kernel, 64, 100 * 1024);
  EXPECT_EQ(blocks, 2);
  cudaFuncAttributes a{};
  ASSERT_EQ(cudaFuncGetAttributes(&a, static_shared_20k), cudaSuccess);
  EXPECT_EQ(a.sharedSizeBytes, 20u * 1024);
  EXPECT_EQ(a.maxDynamicSharedSizeBytes, 28 * 1024);  // 48 KB - static, without the attribute
}

TEST(Runtime, DynamicSharedMemoryAndItsAttribute) {
  float* out = device_array<float>(1);
  emu::launch(emu_test::dynamic_shared_kernel, {dim3(2), dim3(64), 8 * 1024}, out, 2048);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(host(out, 1)[0], 2047.0f);
  // 64 KB needs the attribute.
  const uint64_t before = findings(Check::kLaunchLimit);
  EXPECT_EQ(emu::launch(emu_test::dynamic_shared_kernel, {dim3(1), dim3(64), 64 * 1024}, out, 16 * 1024),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_GT(findings(Check::kLaunchLimit), before);
  ASSERT_EQ(
      cudaFuncSetAttribute(emu_test::dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024),
      cudaSuccess);
  emu::launch(emu_test::dynamic_shared_kernel, {dim3(1), dim3(64), 64 * 1024}, out, 16 * 1024);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(host(out, 1)[0], 16383.0f);
  // 227 KB is the most a block can opt into.
  EXPECT_EQ(
      cudaFuncSetAttribute(emu_test::dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 * 1024),
      cudaErrorInvalidValue);
  cudaGetLastError();
  EXPECT_EQ(
      cudaFuncSetAttribute(emu_test::dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024),
      cudaSuccess);
  emu::launch(emu_test::dynamic_shared_kernel, {dim3(1), dim3(64), 227 * 1024}, out, 227 * 256);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(host(out, 1)[0], 227.0f * 256 - 1);
}

TEST(Runtime, LaunchLimitsOfSm90) {
  float* out = device_array<float>(2048);
  const uint64_t before = findings(Check::kLaunchLimit);
  EXPECT_EQ(emu::launch(static_shared_20k, {dim3(1), dim3(1025)}, out), cudaErrorInvalidConfiguration);
  EXPECT_EQ(emu::launch(static_shared_20k, {dim3(1), dim3(1, 1, 65)}, out), cudaErrorInvalidConfiguration);
  EXPECT_EQ(emu::launch(static_shared_20k, {dim3(1), dim3(2048, 1, 1)}, out), cudaErrorInvalidConfiguration);
  EXPECT_EQ(emu::launch(static_shared_20k, {dim3(1, 65536), dim3(32)}, out), cudaErrorInvalidConfiguration);
  EXPECT_EQ(emu::launch(static_shared_20k, {dim3(1, 1, 65536), dim3(32)}, out), cudaErrorInvalidConfiguration);
  EXPECT_EQ(emu::launch(static_shared_20k, {dim3(0), dim3(32)}, out), cudaErrorInvalidConfiguration);
  EXPECT_EQ(emu::launch(static_shared_50k, {dim3(1), dim3(32)}, out), cudaErrorInvalidValue);
  EXPECT_EQ(findings(Check::kLaunchLimit), before + 7);
  // The largest legal shapes run.
  EXPECT_EQ(emu::launch(static_shared_20k, {dim3(1), dim3(1024)}, out), cudaSuccess);
  EXPECT_EQ(emu::launch(static_shared_20k, {dim3(1), dim3(16, 1, 64)}, out), cudaSuccess);
  cudaGetLastError();
}

// ---- warp intrinsics, tiles, 3-d blocks --------------------------------------

__global__ void warp_intrinsics(int* out) {
  const unsigned lane = threadIdx.x % 32;
  const unsigned ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
  const int any = __any_sync(0xffffffffu, lane == 17);
  const int all = __all_sync(0xffffffffu, lane < 32);
  const int up = __shfl_up_sync(0xffffffffu, static_cast<int>(lane), 1);
  const int down = __shfl_down_sync(0xffffffffu, static_cast<int>(lane), 2, 8);
  const int idx = __shfl_sync(0xffffffffu, static_cast<int>(lane) * 10, 5, 16);
  const unsigned sum = __reduce_add_sync(0xffffffffu, lane);
  // Tiles of 16 lanes exchange at the same time with disjoint masks.
  auto tile = cg::tiled_partition<16>(cg::this_thread_block());
  int t = static_cast<int>(tile.thread_rank());
  for (int m = 8; m > 0; m /= 2) {
    t += tile.shfl_xor(t, m);
  }
  const int count = __syncthreads_count(lane < 5);
  const int all_block = __syncthreads_and(1);
  const int or_block = __syncthreads_or(threadIdx.x == 63);
  int* o = out + threadIdx.x * 10;
  o[0] = static_cast<int>(ballot);
  o[1] = any;
  o[2] = all;
  o[3] = up;
  o[4] = down;
  o[5] = idx;
  o[6] = static_cast<int>(sum);
  o[7] = t;
  o[8] = count;
  o[9] = all_block + 2 * or_block;
}

TEST(Runtime, WarpIntrinsicsAndTiles) {
  for_schedules([] {
    int* out = device_array<int>(64 * 10);
    emu::launch(warp_intrinsics, {dim3(1), dim3(64)}, out);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto h = host(out, 64 * 10);
    unsigned want_ballot = 0;
    for (int l = 0; l < 32; l += 3) {
      want_ballot |= 1u << l;
    }
    for (int tid = 0; tid < 64; ++tid) {
      const int lane = tid % 32;
      const int* o = h.data() + tid * 10;
      EXPECT_EQ(static_cast<unsigned>(o[0]), want_ballot);
      EXPECT_EQ(o[1], 1);
      EXPECT_EQ(o[2], 1);
      EXPECT_EQ(o[3], lane == 0 ? 0 : lane - 1);
      EXPECT_EQ(o[4], lane % 8 + 2 < 8 ? lane + 2 : lane);
      EXPECT_EQ(o[5], (lane / 16 * 16 + 5) * 10);
      EXPECT_EQ(o[6], 31 * 32 / 2);
      EXPECT_EQ(o[7], 15 * 16 / 2);
      EXPECT_EQ(o[8], 10);
      EXPECT_EQ(o[9], 3);
    }
    cudaFree(out);
  });
}

__global__ void thread_layout(int* out) {
  const int linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  // The warp is made of 32 consecutive linear thread indices.
  const int first = __shfl_sync(0xffffffffu, linear, 0);
  out[b * 512 + linear] = first;
}

TEST(Runtime, ThreeDimensionalBlocksAndWarps) {
  int* out = device_array<int>(6 * 512);
  emu::launch(thread_layout, {dim3(3, 2, 1), dim3(8, 4, 16)}, out);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const auto h = host(out, 6 * 512);
  for (int i = 0; i < 6 * 512; ++i) {
    EXPECT_EQ(h[i], i % 512 / 32 * 32);
  }
}

// ---- traffic counters, checked by hand ---------------------------------------

struct alignas(16) Float4 {
  float v[4];
};

__global__ void traffic_patterns(const float* x, float* y, int pattern) {
  const int t = threadIdx.x;
  switch (pattern) {
    case 0:  // coalesced: 32 lanes x 4 bytes, 4 sectors each way
      y[t] = x[t];
      break;
    case 1:  // stride 2: 8 sectors for 4 sectors' worth of bytes
      y[t] = x[2 * t];
      break;
    case 2:  // 16-byte vectors: 16 sectors, all used
      reinterpret_cast<Float4*>(y)[t] = reinterpret_cast<const Float4*>(x)[t];
      break;
    case 3:  // broadcast: one sector
      y[t] = x[0];
      break;
    case 4:  // shifted by one element: 5 sectors for 4 sectors' worth
      y[t] = x[t + 1];
      break;
  }
}

TEST(Runtime, TrafficCountersOnHandCheckedPatterns) {
  float* x = device_array<float>(256);
  float* y = device_array<float>(256);
  emu::detail::set_launch_log_enabled(true);
  struct Want {
    uint64_t read, written, unique_read, requests, sectors, ideal;
  };
  const Want want[] = {
      {128, 128, 128, 2, 4 + 4, 4 + 4},      // coalesced
      {128, 128, 128, 2, 8 + 4, 4 + 4},      // stride 2
      {512, 512, 512, 2, 16 + 16, 16 + 16},  // vectors
      {128, 128, 4, 2, 1 + 4, 1 + 4},        // broadcast: 4 distinct bytes read
      {128, 128, 128, 2, 5 + 4, 4 + 4},      // shifted
  };
  for (int p = 0; p < 5; ++p) {
    emu::launch(traffic_patterns, {dim3(1), dim3(32)}, x, y, p);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto log = emu::detail::take_launch_log();
    ASSERT_EQ(log.size(), 1u);
    const auto& r = log[0];
    SCOPED_TRACE("pattern " + std::to_string(p));
    EXPECT_EQ(r.bytes_read, want[p].read);
    EXPECT_EQ(r.bytes_written, want[p].written);
    EXPECT_EQ(r.unique_bytes_read, want[p].unique_read);
    EXPECT_EQ(r.unique_bytes_written, want[p].written);
    EXPECT_EQ(r.requests, want[p].requests);
    EXPECT_EQ(r.sectors, want[p].sectors);
    EXPECT_EQ(r.ideal_sectors, want[p].ideal);
  }
  emu::detail::set_launch_log_enabled(false);
}

TEST(Runtime, CorrectKernelsHaveNoFindings) {
  // Everything above that was meant to run cleanly did (findings are counted
  // over the process; the tests that plant problems check their own deltas).
  EXPECT_EQ(findings(Check::kRace) + findings(Check::kUninitialized) + findings(Check::kOutOfBounds) +
                findings(Check::kMisaligned) + findings(Check::kBadMask) + findings(Check::kNoExchange),
            0u);
  (void)all_findings;
}

}  // namespace
