// Planted bugs, in kernels written here for the purpose (the shipped kernels'
// planted bugs are mutants.py's): each check of the emulator fires on its bug,
// and stays quiet on the same kernel without it.
//
// Built twice: with the emulator's checks (the default), and with
// AddressSanitizer + UndefinedBehaviorSanitizer instead, where the
// out-of-bounds and misaligned accesses must kill the process with ASan's and
// UBSan's own reports (death tests).
#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include "internal.h"

using emu::detail::Check;

// extern __shared__ needs a named namespace (see test_runtime.cpp).
namespace emu_test {

// Bug: reads past the launch's dynamic shared memory.
template <bool Bug>
__global__ void dynamic_overrun(float* out) {
  extern __shared__ float dyn[];
  dyn[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = dyn[threadIdx.x + (Bug ? 1 : 0)];
}

}  // namespace emu_test

namespace {

template <typename T>
T* device_array(std::size_t n) {
  T* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  cudaMemset(p, 0, n * sizeof(T));
  return p;
}

uint64_t findings(Check c) { return emu::detail::totals().findings[static_cast<int>(c)]; }

// Runs a launch and returns how many findings of `c` it added and its error.
template <typename Launch>
std::pair<uint64_t, cudaError_t> run(Check c, const Launch& launch) {
  cudaGetLastError();
  const uint64_t before = findings(c);
  launch();
  const cudaError_t e = cudaGetLastError();
  return {findings(c) - before, e};
}

// ---- the kernels (template flag: with the planted bug) -----------------------

// A block reduction; Bug: without the barrier between the warps' writes and the
// final reads.
template <bool Bug>
__global__ void block_reduce(const float* x, float* out) {
  __shared__ float partial[8];
  float v = x[blockIdx.x * blockDim.x + threadIdx.x];
  for (int m = 16; m > 0; m /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, m);
  }
  if (threadIdx.x % 32 == 0) {
    partial[threadIdx.x / 32] = v;
  }
  if (!Bug) {
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    float s = 0;
    for (int w = 0; w < 8; ++w) {
      s += partial[w];
    }
    out[blockIdx.x] = s;
  }
}

// A warp sum; Bug: a lane mask of 0, every lane reads itself.
template <bool Bug>
__global__ void warp_sum(const float* x, float* out) {
  float v = x[threadIdx.x];
  for (int m = 16; m > 0; m /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, Bug ? 0 : m);
  }
  out[threadIdx.x] = v;
}

// A copy with a tail loop; Bug: i <= n.
template <bool Bug>
__global__ void tail_copy(const float* x, float* y, int n) {
  for (int i = threadIdx.x; Bug ? i <= n : i < n; i += blockDim.x) {
    y[i] = x[i];
  }
}

// Bug: every thread of a warp writes the same shared slot.
template <bool Bug>
__global__ void shared_slot(float* out) {
  __shared__ float slot[64];
  const int i = Bug ? static_cast<int>(threadIdx.x / 32) : static_cast<int>(threadIdx.x);
  slot[i] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = slot[i];
}

struct alignas(16) Pack4 {
  float v[4];
};

// 16-byte vector loads; Bug: from an address off by one element.
template <bool Bug>
__global__ void pack_copy(const float* x, float* y) {
  const Pack4 p = *reinterpret_cast<const Pack4*>(x + 4 * threadIdx.x + (Bug ? 1 : 0));
  *reinterpret_cast<Pack4*>(y + 4 * threadIdx.x) = p;
}

// Bug: half the block waits at one __syncthreads, half at another.
template <bool Bug>
__global__ void divergent_barrier(float* out) {
  __shared__ float s[64];
  s[threadIdx.x] = 1.0f;
  if (Bug && threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = s[63 - threadIdx.x];
}

// A warp-synchronous sum; Bug picks a bad mask (see BadMask below).
template <int Bug>
__global__ void masked_sum(float* out) {
  float v = 1.0f;
  const unsigned lane = threadIdx.x % 32;
  if (Bug == 2 && lane >= 16) {
    return;  // lanes 16..31 exit, the mask still names them
  }
  unsigned mask = 0xffffffffu;
  if (Bug == 3) {
    mask = lane < 16 ? 0x0000ffffu : 0xffffffffu;  // lanes disagree
  }
  int src_mask = 1;
  if (Bug == 4) {
    mask = 0x0000ffffu;  // lanes 0..15 only, but they read lanes 16..31
    src_mask = 16;
  }
  if (Bug == 4 && lane >= 16) {
    out[threadIdx.x] = v;
    return;
  }
  v += __shfl_xor_sync(mask, v, src_mask);
  out[threadIdx.x] = v;
}

// Bug: reads slots no thread wrote.
template <bool Bug>
__global__ void uninitialised_read(float* out) {
  __shared__ float s[64];
  if (!Bug || threadIdx.x < 16) {
    s[threadIdx.x] = 2.0f;
  }
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

// Bug: lane 5 goes to a __syncthreads while its warp waits for it in __syncwarp.
template <bool Bug>
__global__ void deadlock(float* out) {
  if (Bug && threadIdx.x == 5) {
    __syncthreads();
  } else {
    __syncwarp();
  }
  out[threadIdx.x] = 1.0f;
}

__global__ void host_pointer(const float* p, float* out) { out[threadIdx.x] = p[threadIdx.x]; }

__global__ void trapping(float* out) {
  if (threadIdx.x == 3) {
    __trap();
  }
  out[threadIdx.x] = 1.0f;
}

#if !defined(__SANITIZE_ADDRESS__)

// ---- the emulator's checks ---------------------------------------------------

TEST(PlantedBugs, RemovedSyncthreads) {
  float* x = device_array<float>(256);
  float* out = device_array<float>(1);
  EXPECT_EQ(run(Check::kRace,
                [&] {
                  emu::launch(block_reduce<false>, {dim3(1), dim3(256)}, x, out);
                }),
            std::make_pair(uint64_t{0}, cudaSuccess));
  const auto [n, e] = run(Check::kRace, [&] { emu::launch(block_reduce<true>, {dim3(1), dim3(256)}, x, out); });
  EXPECT_GT(n, 0u);
  EXPECT_EQ(e, cudaErrorLaunchFailure);
}

// The warp-priority schedule lets a warp run ahead: without the barrier,
// thread 0 then reads partials that are not written yet (the poison: NaN).
TEST(PlantedBugs, RemovedSyncthreadsGivesWrongResultsUnderWarpPriority) {
  emu::detail::Options& o = emu::detail::mutable_options();
  const emu::detail::Options saved = o;
  std::vector<float> h(256, 1.0f);
  float* x = device_array<float>(256);
  cudaMemcpy(x, h.data(), sizeof(float) * 256, cudaMemcpyHostToDevice);
  float* out = device_array<float>(1);
  int wrong = 0;
  for (unsigned seed = 1; seed <= 20; ++seed) {
    o.sched = 3;
    o.seed = seed;
    emu::launch(block_reduce<true>, {dim3(1), dim3(256)}, x, out);
    cudaGetLastError();
    float r;
    cudaMemcpy(&r, out, 4, cudaMemcpyDeviceToHost);
    wrong += r != 256.0f;
    emu::launch(block_reduce<false>, {dim3(1), dim3(256)}, x, out);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    cudaMemcpy(&r, out, 4, cudaMemcpyDeviceToHost);
    ASSERT_EQ(r, 256.0f);
  }
  o = saved;
  std::printf("warp-priority schedule: the missing barrier gave a wrong sum in %d of 20 seeds\n", wrong);
  EXPECT_GT(wrong, 15) << "the warp-priority schedule should expose the missing barrier in most seeds";
}

TEST(PlantedBugs, ShuffleExchangingNothing) {
  float* x = device_array<float>(32);
  float* out = device_array<float>(32);
  EXPECT_EQ(run(Check::kNoExchange, [&] { emu::launch(warp_sum<false>, {dim3(1), dim3(32)}, x, out); }).first, 0u);
  EXPECT_GT(run(Check::kNoExchange, [&] { emu::launch(warp_sum<true>, {dim3(1), dim3(32)}, x, out); }).first, 0u);
}

TEST(PlantedBugs, OffByOneInTailLoop) {
  float* x = device_array<float>(100);
  float* y = device_array<float>(100);
  EXPECT_EQ(run(Check::kOutOfBounds,
                [&] {
                  emu::launch(tail_copy<false>, {dim3(1), dim3(32)}, x, y, 100);
                }),
            std::make_pair(uint64_t{0}, cudaSuccess));
  EXPECT_EQ(run(Check::kOutOfBounds,
                [&] {
                  emu::launch(tail_copy<true>, {dim3(1), dim3(32)}, x, y, 100);
                }),
            std::make_pair(uint64_t{1}, cudaErrorIllegalAddress));
}

TEST(PlantedBugs, RaceOnSharedMemory) {
  float* out = device_array<float>(64);
  EXPECT_EQ(run(Check::kRace, [&] { emu::launch(shared_slot<false>, {dim3(1), dim3(64)}, out); }).first, 0u);
  EXPECT_GT(run(Check::kRace, [&] { emu::launch(shared_slot<true>, {dim3(1), dim3(64)}, out); }).first, 0u);
}

TEST(PlantedBugs, MisalignedPackAccess) {
  float* x = device_array<float>(4 * 32 + 4);
  float* y = device_array<float>(4 * 32);
  EXPECT_EQ(run(Check::kMisaligned,
                [&] {
                  emu::launch(pack_copy<false>, {dim3(1), dim3(32)}, x, y);
                }),
            std::make_pair(uint64_t{0}, cudaSuccess));
  EXPECT_EQ(run(Check::kMisaligned,
                [&] {
                  emu::launch(pack_copy<true>, {dim3(1), dim3(32)}, x, y);
                }),
            std::make_pair(uint64_t{1}, cudaErrorMisalignedAddress));
}

TEST(PlantedBugs, DivergentSyncthreads) {
  float* out = device_array<float>(64);
  EXPECT_EQ(run(Check::kDivergentBarrier,
                [&] {
                  emu::launch(divergent_barrier<false>, {dim3(1), dim3(64)}, out);
                }),
            std::make_pair(uint64_t{0}, cudaSuccess));
  EXPECT_GT(run(Check::kDivergentBarrier,
                [&] {
                  emu::launch(divergent_barrier<true>, {dim3(1), dim3(64)}, out);
                })
                .first,
            0u);
}

TEST(PlantedBugs, BadShuffleMasks) {
  float* out = device_array<float>(64);
  EXPECT_EQ(run(Check::kBadMask,
                [&] {
                  emu::launch(masked_sum<0>, {dim3(1), dim3(64)}, out);
                }),
            std::make_pair(uint64_t{0}, cudaSuccess));
  // A full mask in a block of 48 threads names 16 lanes that do not exist.
  EXPECT_GT(run(Check::kBadMask, [&] { emu::launch(masked_sum<0>, {dim3(1), dim3(48)}, out); }).first, 0u);
  EXPECT_GT(run(Check::kBadMask, [&] { emu::launch(masked_sum<2>, {dim3(1), dim3(32)}, out); }).first, 0u);
  EXPECT_GT(run(Check::kBadMask, [&] { emu::launch(masked_sum<3>, {dim3(1), dim3(32)}, out); }).first, 0u);
  EXPECT_GT(run(Check::kBadMask, [&] { emu::launch(masked_sum<4>, {dim3(1), dim3(32)}, out); }).first, 0u);
}

TEST(PlantedBugs, UninitialisedSharedRead) {
  float* out = device_array<float>(64);
  EXPECT_EQ(run(Check::kUninitialized,
                [&] {
                  emu::launch(uninitialised_read<false>, {dim3(2), dim3(64)}, out);
                }),
            std::make_pair(uint64_t{0}, cudaSuccess));
  EXPECT_GT(run(Check::kUninitialized,
                [&] {
                  emu::launch(uninitialised_read<true>, {dim3(2), dim3(64)}, out);
                })
                .first,
            0u);
}

TEST(PlantedBugs, Deadlock) {
  float* out = device_array<float>(64);
  EXPECT_EQ(run(Check::kDeadlock,
                [&] {
                  emu::launch(deadlock<false>, {dim3(1), dim3(64)}, out);
                }),
            std::make_pair(uint64_t{0}, cudaSuccess));
  EXPECT_EQ(run(Check::kDeadlock, [&] { emu::launch(deadlock<true>, {dim3(1), dim3(64)}, out); }).first, 1u);
}

TEST(PlantedBugs, DynamicSharedOverrun) {
  float* out = device_array<float>(64);
  EXPECT_EQ(run(Check::kOutOfBounds,
                [&] {
                  emu::launch(emu_test::dynamic_overrun<false>, {dim3(1), dim3(64), 64 * sizeof(float)}, out);
                }),
            std::make_pair(uint64_t{0}, cudaSuccess));
  EXPECT_EQ(run(Check::kOutOfBounds,
                [&] {
                  emu::launch(emu_test::dynamic_overrun<true>, {dim3(1), dim3(64), 64 * sizeof(float)}, out);
                }),
            std::make_pair(uint64_t{1}, cudaErrorIllegalAddress));
}

TEST(PlantedBugs, HostPointerInAKernel) {
  std::vector<float> host(32, 1.0f);
  float* out = device_array<float>(32);
  EXPECT_EQ(run(Check::kUnknownMemory,
                [&] {
                  emu::launch(host_pointer, {dim3(1), dim3(32)}, host.data(), out);
                }),
            std::make_pair(uint64_t{1}, cudaErrorIllegalAddress));
}

TEST(PlantedBugs, Trap) {
  float* out = device_array<float>(32);
  EXPECT_EQ(run(Check::kTrap,
                [&] {
                  emu::launch(trapping, {dim3(1), dim3(32)}, out);
                }),
            std::make_pair(uint64_t{1}, cudaErrorIllegalInstruction));
}

#else

// ---- AddressSanitizer and UndefinedBehaviorSanitizer -------------------------

TEST(PlantedBugsAsan, CorrectKernelsRunClean) {
  float* x = device_array<float>(4 * 32 + 4);
  float* y = device_array<float>(4 * 32 + 4);
  emu::launch(tail_copy<false>, {dim3(1), dim3(32)}, x, y, 100);
  emu::launch(pack_copy<false>, {dim3(1), dim3(32)}, x, y);
  emu::launch(block_reduce<false>, {dim3(1), dim3(128)}, x, y);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(PlantedBugsAsanDeathTest, OffByOneInTailLoop) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* x = device_array<float>(100);
        float* y = device_array<float>(100);
        emu::launch(tail_copy<true>, {dim3(1), dim3(32)}, x, y, 100);
      },
      "heap-buffer-overflow");
}

TEST(PlantedBugsAsanDeathTest, MisalignedPackAccess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* x = device_array<float>(4 * 32 + 4);
        float* y = device_array<float>(4 * 32);
        emu::launch(pack_copy<true>, {dim3(1), dim3(32)}, x, y);
      },
      "misaligned address");
}

#endif

}  // namespace
