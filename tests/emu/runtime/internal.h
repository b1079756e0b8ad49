// State shared by the emulator's runtime files: options, findings, the
// execution state of a launch (grid, resident blocks, fibers, warps), kernel and
// module information, and the hooks of the access checks.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda_emu.h"

namespace emu::detail {

// ---------------------------------------------------------------------------
// Options (environment variables, read once; README.md lists them).
struct Options {
  int sched = 0;  // 0 lowest thread first, 1 highest first, 2 random, 3 random warp priority
  unsigned seed = 1;
  std::size_t stack_bytes = 0;
  int sm_count = 132;
  int resident = 1;  // blocks of an ordinary launch interleaved at once
  bool strict = false;
  bool abort_on_error = false;
  bool verbose = false;
  bool unknown_memory_is_error = true;
  bool poison_allocations = true;
  int report_limit = 20;
};
const Options& options();
// For the emulator's own tests: change the options in-process (between launches).
Options& mutable_options();

// ---------------------------------------------------------------------------
// Findings: what the checks report. Fatal ones abandon the launch at once (the
// GPU would trap); the others let it finish and fail it afterwards.
enum class Check : int {
  kRace,
  kUninitialized,
  kOutOfBounds,
  kMisaligned,
  kUnknownMemory,
  kDivergentBarrier,
  kBadMask,
  kNoExchange,
  kDeadlock,
  kLaunchLimit,
  kGridSync,
  kTrap,
  kExitedBarrier,
  kCount
};
constexpr int kNumChecks = static_cast<int>(Check::kCount);
const char* check_name(Check c);

// Records a finding against the running launch (and the process totals) and
// prints it; a fatal finding inside a kernel does not return.
void report(Check c, bool fatal, const std::string& message);

// ---------------------------------------------------------------------------
// Modules, kernels and their shared variables (module.cpp).

struct SharedVar {
  std::size_t tls_offset = 0;  // in the module's TLS segment
  std::size_t size = 0;
  std::string name;   // demangled
  std::string owner;  // mangled name of the enclosing function ("" for the dynamic buffer)
  bool dynamic = false;
};

struct ModuleInfo {
  std::string path;
  uintptr_t bias = 0;
  std::size_t tls_modid = 0;
  std::size_t tls_size = 0;
  std::vector<std::pair<uintptr_t, uintptr_t>> segments;  // loaded [begin, end)
  struct Function {
    uintptr_t begin, end;
    std::string name;  // mangled
  };
  std::vector<Function> functions;  // sorted by begin
  std::vector<SharedVar> shared;
  int dynamic_var = -1;  // index in `shared` of the extern __shared__ buffer
};

struct KernelInfo {
  const void* address = nullptr;
  ModuleInfo* module = nullptr;
  std::string mangled;
  std::string name;               // demangled
  std::vector<int> own_shared;    // indices in module->shared declared in the kernel itself
  std::size_t static_shared = 0;  // bytes of own_shared
  int registers = 32;             // per thread: nvcc's number when known (EMU_PTXAS_CSV)
  bool registers_known = false;
  int max_dynamic_shared = 48 * 1024;  // cudaFuncAttributeMaxDynamicSharedMemorySize
};

// The kernel at `address` (cached; thread-safe).
KernelInfo& kernel_info(const void* address);
// function+offset, and file:line when addr2line is available.
std::string symbolize(uintptr_t pc);

// A shared variable's address range in the calling OS thread.
struct SharedRange {
  uintptr_t begin = 0;
  uintptr_t end = 0;
  int var = -1;
};
struct ThreadShared {
  std::vector<SharedRange> ranges;  // every shared variable of the module, sorted
  uintptr_t lo = 0, hi = 0;         // hull of the ranges (quick rejection)
  uintptr_t dynamic_begin = 0;
  uintptr_t tls_lo = 0, tls_hi = 0;  // the module's whole TLS block
};
const ThreadShared& thread_shared(ModuleInfo& module);
// The variable holding `address` (nullptr if none).
const SharedRange* find_shared(const ThreadShared& ts, uintptr_t address);

// ---------------------------------------------------------------------------
// Execution state of a launch (runtime.cpp).

enum class State : uint8_t { kReady, kRunning, kBarrier, kWarp, kGrid, kDone };

struct Block;
struct Grid;
struct FiberChecks;  // the access checks' per-thread state (checks.cpp)

struct Fiber {
  void* sp = nullptr;
  unsigned char* stack = nullptr;
  std::size_t stack_size = 0;
  Block* block = nullptr;
  uint3 tid{0, 0, 0};
  int linear = 0;
  int warp = 0;
  int lane = 0;
  State state = State::kReady;
  void* asan_fake_stack = nullptr;
  FiberChecks* checks = nullptr;
  int barrier_result = 0;
  // Inside the emulator's own code: standard-library templates instantiated in
  // both instrumented and plain objects may be the instrumented copy, and their
  // accesses are the emulator's, not the kernel's.
  bool in_runtime = false;
  unsigned gather_lanes = 0;                // lanes of the last gather round
  alignas(16) unsigned char xfer[32 * 16];  // results of warp collectives
};

// One round of a warp collective: the lanes of `mask` publish, the last to
// arrive hands every lane its result. Several rounds may collect at once in a
// warp when their masks are disjoint (tiles of a warp).
struct WarpRound {
  unsigned mask = 0;
  unsigned arrived = 0;
  const char* op = nullptr;
  Site site;
  bool gather = false;
  bool exchanged = false;
  std::size_t bytes = 0;
  std::array<int8_t, 32> src{};
  alignas(16) unsigned char slots[32 * 16];
};

struct Warp {
  unsigned exists = 0;  // lanes that exist (the block size need not be a multiple of 32)
  unsigned exited = 0;
  uint32_t syncs = 0;  // completed __syncwarp rounds (ordering for the race check)
  std::vector<WarpRound> rounds;
};

struct BlockChecks;  // checks.cpp

struct Block {
  Grid* grid = nullptr;
  uint3 idx{0, 0, 0};
  uint64_t serial = 0;  // unique over the process
  unsigned nthreads = 0;
  std::size_t stack_slot = 0;  // which of the OS thread's fiber stacks it uses
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<unsigned> ready;       // per warp: ready lanes
  std::vector<unsigned> warp_order;  // scheduling priority of the warps
  int nready = 0;
  int live = 0;
  // __syncthreads
  int bar_arrived = 0;
  Site bar_site;
  int bar_op = -1;
  int bar_acc = 0;
  int bar_result = 0;
  uint32_t epoch = 0;  // barrier interval, unique over the process
  // grid.sync()
  int grid_arrived = 0;
  bool at_grid_barrier = false;
  // shared memory image while another block is active
  std::vector<unsigned char> image;
  bool image_saved = false;
  BlockChecks* checks = nullptr;
};

struct LaunchRecord {
  std::string kernel;
  std::string mangled;
  dim3 grid, block;
  std::size_t dynamic_shared = 0;
  std::size_t static_shared = 0;
  int registers = 0;
  bool cooperative = false;
  uint64_t bytes_read = 0;  // what the lanes' accesses asked for
  uint64_t bytes_written = 0;
  uint64_t unique_bytes_read = 0;  // distinct bytes of device memory read (the footprint)
  uint64_t unique_bytes_written = 0;
  uint64_t requests = 0;
  uint64_t sectors = 0;
  uint64_t ideal_sectors = 0;
  uint64_t atomics = 0;
  int findings = 0;
  cudaError_t error = cudaSuccess;
};

struct Grid {
  LaunchConfig config;
  KernelInfo* kernel = nullptr;
  void (*entry)(void*) = nullptr;
  void* context = nullptr;
  uint64_t nblocks = 0;
  unsigned nthreads = 0;
  std::vector<Block*> resident;
  std::vector<std::size_t> free_stack_slots;
  std::size_t next_stack_slot = 0;
  Block* active = nullptr;  // the block whose shared memory is in place
  const ThreadShared* shared = nullptr;
  bool trapped = false;
  cudaError_t fatal_error = cudaSuccess;
  std::array<int, kNumChecks> findings{};
  int blocks_at_grid_barrier = 0;
  int blocks_exited = 0;
  Site grid_site;
  bool yield_requested = false;
  LaunchRecord record;
  void* sched_sp = nullptr;
  const void* sched_stack_bottom = nullptr;
  std::size_t sched_stack_size = 0;
  std::mt19937 rng;
};

// The running CUDA thread of this OS thread (null outside kernels), and the grid.
extern thread_local Fiber* t_fiber;
extern thread_local Grid* t_grid;

// Marks the running CUDA thread as inside the emulator for a scope (see Fiber::in_runtime).
class RuntimeScope {
 public:
  RuntimeScope() : fiber_(t_fiber), outer_(fiber_ != nullptr && fiber_->in_runtime) {
    if (fiber_ != nullptr) {
      fiber_->in_runtime = true;
    }
  }
  ~RuntimeScope() {
    if (fiber_ != nullptr) {
      fiber_->in_runtime = outer_;
    }
  }
  RuntimeScope(const RuntimeScope&) = delete;
  RuntimeScope& operator=(const RuntimeScope&) = delete;

 private:
  Fiber* fiber_;
  bool outer_;
};

// ---------------------------------------------------------------------------
// Device allocations (allocations.cpp): what kernels may touch in global memory.

struct Allocation {
  uintptr_t begin = 0;  // user range [begin, end)
  uintptr_t end = 0;
  std::size_t redzone = 0;  // bytes on each side
  std::string what;
};
// Registers [begin, begin + bytes) with `redzone` bytes on each side that the
// owner keeps unused.
void register_allocation_with_redzone(uintptr_t begin, std::size_t bytes, std::size_t redzone, const char* what);
// Allocates `bytes` with redzones, registered (and poisoned when options say so).
void* device_malloc(std::size_t bytes, const char* what);
void device_free(void* p);
constexpr std::size_t kRedzone = 64;
// The allocation whose user range or redzones hold `address`; false if none.
bool find_allocation(uintptr_t address, Allocation& out);

// ---------------------------------------------------------------------------
// Hooks of the access checks (checks.cpp; empty in builds without them).
void checks_launch_begin(Grid& g);
void checks_launch_end(Grid& g);
void checks_block_begin(Block& b);
void checks_block_end(Block& b);
void checks_fiber_begin(Fiber& f);
// The runtime filled shared variable `var` with poison for block `b`.
void checks_shared_poisoned(Block& b, int var);
// Atomics go through the runtime, not through the compiler's instrumentation.
void checks_atomic(void* address, std::size_t bytes, const Site& site);

// Process totals, for the test programs and the torch plugin.
struct Totals {
  uint64_t launches = 0;
  uint64_t failed_launches = 0;
  std::array<uint64_t, kNumChecks> findings{};
};
Totals totals();
void reset_totals();
// Launch records since the last take (moves them out).
std::vector<LaunchRecord> take_launch_log();
void set_launch_log_enabled(bool enabled);

}  // namespace emu::detail
