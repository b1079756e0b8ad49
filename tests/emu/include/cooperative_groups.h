// The part of <cooperative_groups.h> the emulator provides (it shadows the
// toolkit's header, which is device-only): the grid group of a cooperative
// launch with its grid-wide barrier, the thread block, and warp tiles.
#pragma once

#include "cuda_emu.h"

namespace cooperative_groups {

class grid_group {
 public:
  // A real grid-wide barrier; only valid in a cudaLaunchCooperativeKernel
  // launch (the emulator reports it anywhere else).
  void sync(const emu::Site& site = emu::Site::current()) const { emu::grid_sync(site); }
  bool is_valid() const { return emu::grid_is_cooperative(); }
  unsigned long long size() const { return num_threads(); }
  unsigned long long num_threads() const {
    const dim3 g = gridDim, b = blockDim;
    return 1ull * g.x * g.y * g.z * b.x * b.y * b.z;
  }
  unsigned long long thread_rank() const {
    const dim3 b = blockDim;
    return block_rank() * b.x * b.y * b.z + threadIdx.x + b.x * (threadIdx.y + 1ull * b.y * threadIdx.z);
  }
  unsigned long long num_blocks() const {
    const dim3 g = gridDim;
    return 1ull * g.x * g.y * g.z;
  }
  unsigned long long block_rank() const {
    const dim3 g = gridDim;
    return blockIdx.x + g.x * (blockIdx.y + 1ull * g.y * blockIdx.z);
  }
  dim3 group_dim() const { return gridDim; }
  dim3 dim_blocks() const { return gridDim; }
  dim3 block_index() const {
    const uint3 b = blockIdx;
    return dim3(b.x, b.y, b.z);
  }
};

inline grid_group this_grid() { return grid_group(); }

class thread_block {
 public:
  void sync(const emu::Site& site = emu::Site::current()) const { emu::block_barrier(site); }
  unsigned size() const { return num_threads(); }
  unsigned num_threads() const {
    const dim3 b = blockDim;
    return b.x * b.y * b.z;
  }
  unsigned thread_rank() const {
    const dim3 b = blockDim;
    return threadIdx.x + b.x * (threadIdx.y + b.y * threadIdx.z);
  }
  dim3 group_index() const {
    const uint3 b = blockIdx;
    return dim3(b.x, b.y, b.z);
  }
  dim3 thread_index() const {
    const uint3 t = threadIdx;
    return dim3(t.x, t.y, t.z);
  }
  dim3 group_dim() const { return blockDim; }
};

inline thread_block this_thread_block() { return thread_block(); }

// A tile of Size consecutive threads of a warp (Size a power of two <= 32).
template <unsigned Size>
class thread_block_tile {
  static_assert(Size >= 1 && Size <= 32 && (Size & (Size - 1)) == 0, "tile size must be a power of two <= 32");

 public:
  unsigned mask() const {
    const unsigned lane = static_cast<unsigned>(emu::lane_id());
    return Size == 32 ? 0xffffffffu : ((1u << Size) - 1u) << (lane / Size * Size);
  }
  void sync(const emu::Site& site = emu::Site::current()) const { emu::warp_sync(mask(), site); }
  unsigned size() const { return Size; }
  unsigned num_threads() const { return Size; }
  unsigned thread_rank() const { return static_cast<unsigned>(emu::lane_id()) % Size; }
  unsigned meta_group_rank() const { return thread_block().thread_rank() / Size; }
  template <typename T>
  T shfl(T v, int src, const emu::Site& site = emu::Site::current()) const {
    return __shfl_sync(mask(), v, src, Size, site);
  }
  template <typename T>
  T shfl_xor(T v, int m, const emu::Site& site = emu::Site::current()) const {
    return __shfl_xor_sync(mask(), v, m, Size, site);
  }
  template <typename T>
  T shfl_down(T v, unsigned d, const emu::Site& site = emu::Site::current()) const {
    return __shfl_down_sync(mask(), v, d, Size, site);
  }
  template <typename T>
  T shfl_up(T v, unsigned d, const emu::Site& site = emu::Site::current()) const {
    return __shfl_up_sync(mask(), v, d, Size, site);
  }
  unsigned ballot(int p, const emu::Site& site = emu::Site::current()) const {
    return __ballot_sync(mask(), p, site) >> (static_cast<unsigned>(emu::lane_id()) / Size * Size);
  }
  bool any(int p, const emu::Site& site = emu::Site::current()) const { return ballot(p, site) != 0; }
  bool all(int p, const emu::Site& site = emu::Site::current()) const {
    return ballot(p, site) == (Size == 32 ? 0xffffffffu : (1u << Size) - 1u);
  }
};

template <unsigned Size>
thread_block_tile<Size> tiled_partition(const thread_block&) {
  return thread_block_tile<Size>();
}

inline void sync(const grid_group& g, const emu::Site& site = emu::Site::current()) { g.sync(site); }
inline void sync(const thread_block& b, const emu::Site& site = emu::Site::current()) { b.sync(site); }

}  // namespace cooperative_groups
