// The emulator's scheduler: fibers per CUDA thread, blocks resident on the
// launching OS thread, barriers (__syncthreads, grid.sync), warp collectives,
// atomics, findings, launch limits and the CUDA runtime API the launchers call.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <numeric>

#include "internal.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

// x86-64 SysV context switch without the signal-mask system call of
// swapcontext: saves the callee-saved registers, MXCSR and the x87 control word
// on the old stack, stores its rsp in *save, then loads `next` and restores the
// same from there.
extern "C" void emu_switch(void** save, void* next);
asm(R"(
  .text
  .globl emu_switch
  .hidden emu_switch
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch, .-emu_switch
)");

namespace emu::detail {

thread_local Fiber* t_fiber = nullptr;
thread_local Grid* t_grid = nullptr;

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

}  // namespace

Options& mutable_options() {
  static Options o = [] {
    Options r;
    r.sched = env_int("EMU_SCHED", 0);
    r.seed = static_cast<unsigned>(env_int("EMU_SEED", 1));
#if defined(EMU_ASAN)
    const int default_stack_kb = 512;
#else
    const int default_stack_kb = 64;
#endif
    r.stack_bytes = static_cast<std::size_t>(std::max(16, env_int("EMU_STACK_KB", default_stack_kb))) * 1024;
    r.sm_count = std::max(1, env_int("EMU_SM_COUNT", 132));
    r.resident = std::max(1, env_int("EMU_RESIDENT", 1));
    r.strict = env_int("EMU_STRICT", 0) != 0;
    r.abort_on_error = env_int("EMU_ABORT", 0) != 0;
    r.verbose = env_int("EMU_VERBOSE", 0) != 0;
    const char* unknown = std::getenv("EMU_UNKNOWN_MEMORY");
    r.unknown_memory_is_error = unknown == nullptr || std::string(unknown) != "ignore";
    r.poison_allocations = env_int("EMU_POISON", 1) != 0;
    r.report_limit = env_int("EMU_REPORT_LIMIT", 20);
    return r;
  }();
  return o;
}

const Options& options() { return mutable_options(); }

const char* check_name(Check c) {
  switch (c) {
    case Check::kRace:
      return "shared-memory race";
    case Check::kUninitialized:
      return "uninitialised shared-memory read";
    case Check::kOutOfBounds:
      return "out-of-bounds global access";
    case Check::kMisaligned:
      return "misaligned access";
    case Check::kUnknownMemory:
      return "access outside device memory";
    case Check::kDivergentBarrier:
      return "divergent barrier";
    case Check::kBadMask:
      return "bad warp mask";
    case Check::kNoExchange:
      return "shuffle exchanging nothing";
    case Check::kDeadlock:
      return "deadlock";
    case Check::kLaunchLimit:
      return "launch limit";
    case Check::kGridSync:
      return "grid.sync outside a cooperative launch";
    case Check::kTrap:
      return "trap";
    case Check::kExitedBarrier:
      return "barrier completed by exited threads";
    case Check::kCount:
      break;
  }
  return "?";
}

namespace {

std::mutex g_state_mutex;  // last error, totals, launch log
cudaError_t g_last_error = cudaSuccess;
Totals g_totals;
std::vector<LaunchRecord> g_log;
bool g_log_enabled = false;
int g_printed = 0;
std::atomic<uint64_t> g_block_serial{1};
std::atomic<uint32_t> g_epoch{1};
// Launches run one at a time: the kernels' shared memory and the checks'
// state belong to the OS thread that runs the launch.
std::recursive_mutex g_launch_mutex;

void set_last_error(cudaError_t e) {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  if (g_last_error == cudaSuccess) {
    g_last_error = e;
  }
}

cudaError_t error_of(Check c) {
  switch (c) {
    case Check::kOutOfBounds:
    case Check::kUnknownMemory:
      return cudaErrorIllegalAddress;
    case Check::kMisaligned:
      return cudaErrorMisalignedAddress;
    case Check::kTrap:
      return cudaErrorIllegalInstruction;
    case Check::kLaunchLimit:
      return cudaErrorInvalidConfiguration;
    default:
      return cudaErrorLaunchFailure;
  }
}

std::string where(const Site& s) { return std::string(s.file_name()) + ":" + std::to_string(s.line()); }
bool same_site(const Site& a, const Site& b) {
  return a.line() == b.line() && std::strcmp(a.file_name(), b.file_name()) == 0;
}

void yield_to_scheduler(Fiber* f);

}  // namespace

void report(Check c, bool fatal, const std::string& message) {
  Grid* g = t_grid;
  Fiber* f = t_fiber;
  {
    std::lock_guard<std::mutex> lock(g_state_mutex);
    ++g_totals.findings[static_cast<int>(c)];
    if (g_printed++ < options().report_limit) {
      if (g != nullptr) {
        const uint3 b = f != nullptr ? f->block->idx : uint3{0, 0, 0};
        const uint3 t = f != nullptr ? f->tid : uint3{0, 0, 0};
        std::fprintf(stderr, "emu: %s: %s: block (%u,%u,%u) thread (%u,%u,%u): %s\n", g->kernel->name.c_str(),
                     check_name(c), b.x, b.y, b.z, t.x, t.y, t.z, message.c_str());
      } else {
        std::fprintf(stderr, "emu: %s: %s\n", check_name(c), message.c_str());
      }
    }
  }
  if (options().abort_on_error) {
    std::abort();
  }
  if (g == nullptr) {
    return;
  }
  ++g->findings[static_cast<int>(c)];
  if (fatal && g->fatal_error == cudaSuccess) {
    g->fatal_error = error_of(c);
  }
  if (fatal && f != nullptr) {
    // The GPU would trap: abandon the launch (this fiber never resumes).
    g->trapped = true;
    yield_to_scheduler(f);
    std::abort();
  }
}

namespace {

// ---------------------------------------------------------------------------
// Fiber stacks, reused across blocks and launches by each OS thread.
struct StackPool {
  std::vector<unsigned char*> stacks;
  std::size_t bytes = 0;
  ~StackPool() {
    for (unsigned char* s : stacks) {
      munmap(s, bytes);
    }
  }
  unsigned char* get(std::size_t i) {
    const std::size_t size = options().stack_bytes;
    if (bytes != size) {
      for (unsigned char* s : stacks) {
        munmap(s, bytes);
      }
      stacks.clear();
      bytes = size;
    }
    while (stacks.size() <= i) {
      void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) {
        std::perror("emu: mmap of a fiber stack");
        std::abort();
      }
      mprotect(p, static_cast<std::size_t>(sysconf(_SC_PAGESIZE)), PROT_NONE);  // overflow -> SIGSEGV
      stacks.push_back(static_cast<unsigned char*>(p));
    }
    return stacks[i];
  }
};
thread_local StackPool t_stacks;
thread_local std::vector<std::unique_ptr<Block>> t_free_blocks;

// ---------------------------------------------------------------------------
// Context switches (with AddressSanitizer's fiber annotations in ASan builds).

void switch_into(Grid& g, Fiber* f) {
  t_fiber = f;
  f->state = State::kRunning;
#if defined(EMU_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f->stack, f->stack_size);
  emu_switch(&g.sched_sp, f->sp);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  emu_switch(&g.sched_sp, f->sp);
#endif
  t_fiber = nullptr;
}

void yield_to_scheduler(Fiber* f) {
  Grid& g = *f->block->grid;
#if defined(EMU_ASAN)
  const bool exiting = f->state == State::kDone || g.trapped;
  __sanitizer_start_switch_fiber(exiting ? nullptr : &f->asan_fake_stack, g.sched_stack_bottom, g.sched_stack_size);
  emu_switch(&f->sp, g.sched_sp);
  __sanitizer_finish_switch_fiber(f->asan_fake_stack, nullptr, nullptr);
#else
  emu_switch(&f->sp, g.sched_sp);
#endif
}

void make_ready(Block& b, Fiber& f) {
  f.state = State::kReady;
  b.ready[f.warp] |= 1u << f.lane;
  ++b.nready;
}

void release_barrier(Block& b) {
  b.bar_arrived = 0;
  b.bar_result = b.bar_acc;
  b.bar_acc = 0;
  b.bar_op = -1;
  b.epoch = g_epoch.fetch_add(1);
  for (Fiber& f : b.fibers) {
    if (f.state == State::kBarrier) {
      f.barrier_result = b.bar_result;
      make_ready(b, f);
    }
  }
  if (options().resident > 1 && b.grid->resident.size() > 1) {
    b.grid->yield_requested = true;  // let another resident block run
  }
}

void complete_round(Block& b, int warp_index, std::size_t round_index) {
  Warp& w = b.warps[warp_index];
  WarpRound r = std::move(w.rounds[round_index]);
  w.rounds.erase(w.rounds.begin() + static_cast<std::ptrdiff_t>(round_index));
  if (!r.gather && !r.exchanged && __builtin_popcount(r.arrived) > 1 && std::strcmp(r.op, "__syncwarp") != 0) {
    report(Check::kNoExchange, false,
           std::string(r.op) + " at " + where(r.site) + ": no lane received another lane's value");
  }
  if (std::strcmp(r.op, "__syncwarp") == 0) {
    ++w.syncs;
  }
  for (int lane = 0; lane < 32; ++lane) {
    if (((r.arrived >> lane) & 1u) == 0) {
      continue;
    }
    Fiber& f = b.fibers[warp_index * 32 + lane];
    f.gather_lanes = r.arrived;
    if (r.gather) {
      if (r.bytes > 0) {
        std::memcpy(f.xfer, r.slots, sizeof(r.slots));
      }
    } else {
      const int src = r.src[lane] >= 0 ? r.src[lane] : lane;
      std::memcpy(f.xfer, r.slots + 16 * src, r.bytes);
    }
    if (f.state == State::kWarp) {
      make_ready(b, f);
    }
  }
}

void on_exit(Fiber& f) {
  Block& b = *f.block;
  f.state = State::kDone;
  --b.live;
  Warp& w = b.warps[f.warp];
  w.exited |= 1u << f.lane;
  for (std::size_t i = 0; i < w.rounds.size();) {
    WarpRound& r = w.rounds[i];
    if ((r.mask >> f.lane) & 1u) {
      report(Check::kBadMask, false,
             std::string(r.op) + " at " + where(r.site) + ": its mask names lane " + std::to_string(f.lane) +
                 ", which exited without calling it");
      r.mask &= ~(1u << f.lane);
      if ((r.arrived & r.mask) == r.mask) {
        complete_round(b, f.warp, i);  // let the others go on (undefined on a GPU)
        continue;
      }
    }
    ++i;
  }
  if (b.bar_arrived > 0 && b.bar_arrived == b.live) {
    if (options().strict) {
      report(Check::kExitedBarrier, false,
             "__syncthreads at " + where(b.bar_site) + " completed only because other threads exited");
    }
    release_barrier(b);
  }
  if (!b.at_grid_barrier && b.grid_arrived > 0 && b.grid_arrived == b.live) {
    b.at_grid_barrier = true;
    ++b.grid->blocks_at_grid_barrier;
  }
}

void trampoline() {
  Fiber* f = t_fiber;
  Grid& g = *f->block->grid;
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &g.sched_stack_bottom, &g.sched_stack_size);
#endif
  f->in_runtime = true;
  checks_fiber_begin(*f);
  f->in_runtime = false;
  g.entry(g.context);
  f->in_runtime = true;
  on_exit(*f);
  yield_to_scheduler(f);
  std::abort();  // never resumed
}

// ---------------------------------------------------------------------------
// Blocks.

// Shared memory starts undefined: a fresh block's own variables and the
// launch's dynamic bytes are filled with 0xff (NaN for floats), so that a read
// before any write gives garbage. The access checks poison the variables of
// __device__ helpers lazily, at their first touch in the block, and track
// initialisation byte by byte.
void poison_shared_for_block(Grid& g, Block& b) {
  const ThreadShared& ts = *g.shared;
  for (int v : g.kernel->own_shared) {
    for (const SharedRange& r : ts.ranges) {
      if (r.var == v) {
        std::memset(reinterpret_cast<void*>(r.begin), 0xff, r.end - r.begin);
        checks_shared_poisoned(b, v);
      }
    }
  }
  if (g.config.shared_bytes > 0 && ts.dynamic_begin != 0) {
    std::memset(reinterpret_cast<void*>(ts.dynamic_begin), 0xff, g.config.shared_bytes);
    checks_shared_poisoned(b, g.kernel->module->dynamic_var);
  }
}

// The shared memory of every variable of the module (and the dynamic bytes
// of this launch): what a block switch saves and restores.
std::size_t image_bytes(const Grid& g) {
  std::size_t n = g.config.shared_bytes;
  for (const SharedRange& r : g.shared->ranges) {
    if (r.begin != g.shared->dynamic_begin) {
      n += r.end - r.begin;
    }
  }
  return n;
}

void copy_image(const Grid& g, Block& b, bool save) {
  b.image.resize(image_bytes(g));
  unsigned char* p = b.image.data();
  auto move = [&](uintptr_t addr, std::size_t n) {
    if (save) {
      std::memcpy(p, reinterpret_cast<const void*>(addr), n);
    } else {
      std::memcpy(reinterpret_cast<void*>(addr), p, n);
    }
    p += n;
  };
  for (const SharedRange& r : g.shared->ranges) {
    if (r.begin != g.shared->dynamic_begin) {
      move(r.begin, r.end - r.begin);
    }
  }
  if (g.config.shared_bytes > 0) {
    move(g.shared->dynamic_begin, g.config.shared_bytes);
  }
  b.image_saved = save;
}

void activate(Grid& g, Block& b) {
  if (g.active == &b) {
    return;
  }
  if (g.active != nullptr) {
    copy_image(g, *g.active, true);
  }
  g.active = &b;
  if (b.image_saved) {
    copy_image(g, b, false);
  } else {
    poison_shared_for_block(g, b);
  }
}

Block* admit_block(Grid& g, uint64_t linear) {
  const Options& opt = options();
  std::unique_ptr<Block> owned;
  if (!t_free_blocks.empty()) {
    owned = std::move(t_free_blocks.back());
    t_free_blocks.pop_back();
  } else {
    owned = std::make_unique<Block>();
  }
  Block& b = *owned.release();
  const dim3 gd = g.config.grid, bd = g.config.block;
  b.grid = &g;
  b.idx = {static_cast<unsigned>(linear % gd.x), static_cast<unsigned>((linear / gd.x) % gd.y),
           static_cast<unsigned>(linear / (static_cast<uint64_t>(gd.x) * gd.y))};
  b.serial = g_block_serial.fetch_add(1);
  b.nthreads = g.nthreads;
  b.fibers.resize(g.nthreads);
  const unsigned nwarps = (g.nthreads + 31) / 32;
  b.warps.assign(nwarps, Warp{});
  b.ready.assign(nwarps, 0);
  b.nready = 0;
  b.live = static_cast<int>(g.nthreads);
  b.bar_arrived = 0;
  b.bar_op = -1;
  b.bar_acc = 0;
  b.epoch = g_epoch.fetch_add(1);
  b.grid_arrived = 0;
  b.at_grid_barrier = false;
  b.image_saved = false;
  b.warp_order.resize(nwarps);
  std::iota(b.warp_order.begin(), b.warp_order.end(), 0u);
  if (opt.sched == 1) {
    std::reverse(b.warp_order.begin(), b.warp_order.end());
  } else if (opt.sched == 3) {
    std::shuffle(b.warp_order.begin(), b.warp_order.end(), g.rng);
  }
  // Stacks: the resident blocks use disjoint ranges of this OS thread's pool.
  std::size_t slot = g.next_stack_slot;
  if (!g.free_stack_slots.empty()) {
    slot = g.free_stack_slots.back();
    g.free_stack_slots.pop_back();
  } else {
    ++g.next_stack_slot;
  }
  b.stack_slot = slot;
  for (unsigned i = 0; i < g.nthreads; ++i) {
    Fiber& f = b.fibers[i];
    f.block = &b;
    f.linear = static_cast<int>(i);
    f.tid = {i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
    f.warp = static_cast<int>(i / 32);
    f.lane = static_cast<int>(i % 32);
    f.state = State::kReady;
    f.asan_fake_stack = nullptr;
    f.barrier_result = 0;
    f.in_runtime = false;
    b.warps[f.warp].exists |= 1u << f.lane;
    f.stack_size = opt.stack_bytes;
    f.stack = t_stacks.get(slot * g.nthreads + i);
    // Initial frame popped by emu_switch: the control words, r15..rbp = 0, then
    // `ret` into trampoline with rsp = 8 mod 16, as after a call.
    auto* sp = reinterpret_cast<std::uint64_t*>(f.stack + f.stack_size);
    *--sp = 0;  // trampoline's return address (never used)
    *--sp = reinterpret_cast<std::uint64_t>(&trampoline);
    for (int r = 0; r < 6; ++r) {
      *--sp = 0;
    }
    *--sp = 0x1F80ull | (0x037Full << 32);  // default MXCSR and x87 control word
    f.sp = sp;
    make_ready(b, f);
  }
  g.resident.push_back(&b);
  checks_block_begin(b);
  return &b;
}

void retire_block(Grid& g, Block* b) {
  checks_block_end(*b);
  if (g.active == b) {
    g.active = nullptr;
  }
  g.resident.erase(std::find(g.resident.begin(), g.resident.end(), b));
  g.free_stack_slots.push_back(b->stack_slot);
  ++g.blocks_exited;
  t_free_blocks.emplace_back(b);
}

Fiber* pick(Grid& g, Block& b) {
  const int sched = options().sched;
  int w = -1;
  int lane = 0;
  if (sched == 2) {
    int k = std::uniform_int_distribution<int>(0, b.nready - 1)(g.rng);
    for (std::size_t i = 0; i < b.ready.size(); ++i) {
      const int n = __builtin_popcount(b.ready[i]);
      if (k < n) {
        unsigned m = b.ready[i];
        for (; k > 0; --k) {
          m &= m - 1;
        }
        w = static_cast<int>(i);
        lane = __builtin_ctz(m);
        break;
      }
      k -= n;
    }
  } else {
    for (unsigned i : b.warp_order) {
      if (b.ready[i] != 0) {
        w = static_cast<int>(i);
        lane = sched == 1 ? 31 - __builtin_clz(b.ready[i]) : __builtin_ctz(b.ready[i]);
        break;
      }
    }
  }
  b.ready[w] &= ~(1u << lane);
  --b.nready;
  return &b.fibers[w * 32 + lane];
}

void run_block(Grid& g, Block& b) {
  activate(g, b);
  while (b.nready > 0 && !g.trapped) {
    switch_into(g, pick(g, b));
    if (g.yield_requested) {
      g.yield_requested = false;
      break;
    }
  }
}

std::string blocked_threads(const Block& b) {
  std::string msg;
  int shown = 0;
  for (const Fiber& f : b.fibers) {
    if (f.state == State::kDone || shown++ >= 8) {
      continue;
    }
    msg += " (" + std::to_string(f.tid.x) + "," + std::to_string(f.tid.y) + "," + std::to_string(f.tid.z) + ")";
    switch (f.state) {
      case State::kBarrier:
        msg += " at __syncthreads " + where(b.bar_site);
        break;
      case State::kGrid:
        msg += " at grid.sync " + where(b.grid->grid_site);
        break;
      case State::kWarp:
        for (const WarpRound& r : b.warps[f.warp].rounds) {
          if ((r.arrived >> f.lane) & 1u) {
            msg += std::string(" in ") + r.op + " " + where(r.site);
          }
        }
        break;
      default:
        msg += " ready";
    }
  }
  return msg;
}

void release_grid_barrier(Grid& g) {
  g.blocks_at_grid_barrier = 0;
  for (Block* b : g.resident) {
    b->grid_arrived = 0;
    b->at_grid_barrier = false;
    b->epoch = g_epoch.fetch_add(1);
    for (Fiber& f : b->fibers) {
      if (f.state == State::kGrid) {
        make_ready(*b, f);
      }
    }
  }
}

void run_grid(Grid& g) {
  const Options& opt = options();
  std::vector<uint64_t> order(g.nblocks);
  std::iota(order.begin(), order.end(), uint64_t{0});
  if (opt.sched == 1) {
    std::reverse(order.begin(), order.end());
  } else if (opt.sched >= 2) {
    std::shuffle(order.begin(), order.end(), g.rng);
  }
  const std::size_t limit = g.config.cooperative ? order.size() : static_cast<std::size_t>(opt.resident);
  std::size_t next = 0;
  while (!g.trapped) {
    while (g.resident.size() < limit && next < order.size()) {
      admit_block(g, order[next++]);
    }
    if (g.resident.empty()) {
      break;
    }
    // Prefer the active block (no shared-memory swap), else the first ready one.
    Block* b = nullptr;
    if (g.active != nullptr && g.active->nready > 0) {
      b = g.active;
    } else {
      std::vector<Block*> ready;
      for (Block* r : g.resident) {
        if (r->nready > 0) {
          ready.push_back(r);
        }
      }
      if (!ready.empty()) {
        b = opt.sched >= 2 ? ready[std::uniform_int_distribution<std::size_t>(0, ready.size() - 1)(g.rng)]
                           : ready.front();
      }
    }
    if (b == nullptr) {
      const bool grid_waiting = g.blocks_at_grid_barrier > 0;
      if (grid_waiting && g.blocks_exited == 0 && static_cast<uint64_t>(g.blocks_at_grid_barrier) == g.nblocks) {
        release_grid_barrier(g);
        continue;
      }
      // Nobody can run: a deadlock. Name what the blocks wait for.
      std::string msg;
      if (grid_waiting && g.blocks_exited > 0) {
        msg = std::to_string(g.blocks_exited) + " block(s) exited without reaching grid.sync at " + where(g.grid_site) +
              "; ";
      }
      for (Block* r : g.resident) {
        if (r->live > 0 && !r->at_grid_barrier) {
          msg += "block (" + std::to_string(r->idx.x) + "," + std::to_string(r->idx.y) + "," +
                 std::to_string(r->idx.z) + "): " + std::to_string(r->live) +
                 " threads blocked:" + blocked_threads(*r) + "; ";
          break;
        }
      }
      if (msg.empty()) {
        msg = "every block waits at grid.sync";
      }
      report(Check::kDeadlock, false, msg);
      g.trapped = true;
      break;
    }
    run_block(g, *b);
    if (b->live == 0) {
      retire_block(g, b);
    }
  }
  // Abandoned blocks (trap, deadlock) go back to the pool as they are.
  while (!g.resident.empty()) {
    retire_block(g, g.resident.back());
  }
}

// ---------------------------------------------------------------------------
// Launch limits of sm_90 and the occupancy model.

constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kMaxThreadsPerSm = 2048;
constexpr int kMaxBlocksPerSm = 32;
constexpr int kRegistersPerSm = 65536;
constexpr int kMaxRegistersPerThread = 255;
constexpr int kRegisterUnit = 256;  // per warp
constexpr std::size_t kStaticSharedLimit = 48 * 1024;
constexpr std::size_t kDynamicSharedOptIn = 227 * 1024;  // per block, with the attribute
constexpr std::size_t kSharedPerSm = 228 * 1024;
constexpr std::size_t kSharedReservedPerBlock = 1024;
constexpr std::size_t kSharedUnit = 128;

int max_active_blocks(const KernelInfo& k, int block_size, std::size_t dynamic_shared) {
  if (block_size <= 0 || block_size > kMaxThreadsPerBlock) {
    return 0;
  }
  const int warps = (block_size + 31) / 32;
  const int by_threads = kMaxThreadsPerSm / (warps * 32);
  const int regs = std::min(std::max(k.registers, 1), kMaxRegistersPerThread);
  const int regs_per_warp = (regs * 32 + kRegisterUnit - 1) / kRegisterUnit * kRegisterUnit;
  const int warps_by_regs = kRegistersPerSm / regs_per_warp;
  const int by_regs = warps_by_regs / warps;
  const std::size_t smem = k.static_shared + dynamic_shared;
  int by_smem = kMaxBlocksPerSm;
  if (smem > 0) {
    const std::size_t per_block = (smem + kSharedReservedPerBlock + kSharedUnit - 1) / kSharedUnit * kSharedUnit;
    by_smem = static_cast<int>(kSharedPerSm / per_block);
  }
  return std::max(0, std::min({by_threads, by_regs, by_smem, kMaxBlocksPerSm}));
}

std::string dims(dim3 d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

// The GPU's checks at launch time; returns the error the launch fails with.
cudaError_t check_launch(const KernelInfo& k, const LaunchConfig& c) {
  const uint64_t threads = uint64_t{c.block.x} * c.block.y * c.block.z;
  std::string why;
  cudaError_t err = cudaErrorInvalidConfiguration;
  if (threads == 0 || c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0) {
    why = "empty grid or block";
  } else if (threads > kMaxThreadsPerBlock || c.block.x > 1024 || c.block.y > 1024 || c.block.z > 64) {
    why = "block " + dims(c.block) + " exceeds 1024 threads (or 1024 x 1024 x 64)";
  } else if (c.grid.x > 2147483647u || c.grid.y > 65535 || c.grid.z > 65535) {
    why = "grid " + dims(c.grid) + " exceeds 2^31-1 x 65535 x 65535";
  } else if (k.static_shared > kStaticSharedLimit) {
    why = std::to_string(k.static_shared) + " bytes of static shared memory exceed 48 KB";
    err = cudaErrorInvalidValue;
  } else if (c.shared_bytes > static_cast<std::size_t>(k.max_dynamic_shared)) {
    why = std::to_string(c.shared_bytes) + " bytes of dynamic shared memory exceed the kernel's limit of " +
          std::to_string(k.max_dynamic_shared) +
          (k.max_dynamic_shared <= 48 * 1024 ? " (raise it with cudaFuncAttributeMaxDynamicSharedMemorySize)" : "");
    err = cudaErrorInvalidValue;
  } else if (k.registers_known && threads * static_cast<uint64_t>(k.registers) > kRegistersPerSm) {
    why = "block of " + std::to_string(threads) + " threads needs more than 65536 registers";
    err = cudaErrorLaunchOutOfResources;
  } else if (c.cooperative) {
    const int per_sm = max_active_blocks(k, static_cast<int>(threads), c.shared_bytes);
    const uint64_t blocks = uint64_t{c.grid.x} * c.grid.y * c.grid.z;
    if (blocks > static_cast<uint64_t>(per_sm) * options().sm_count) {
      why = "cooperative grid of " + std::to_string(blocks) + " blocks cannot be resident at once (" +
            std::to_string(per_sm) + " per SM x " + std::to_string(options().sm_count) + " SMs)";
      err = cudaErrorCooperativeLaunchTooLarge;
    }
  }
  if (why.empty()) {
    return cudaSuccess;
  }
  report(Check::kLaunchLimit, false, k.name + ": grid " + dims(c.grid) + " block " + dims(c.block) + ": " + why);
  return err;
}

}  // namespace

// ---------------------------------------------------------------------------
// Totals and the launch log.

Totals totals() {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  return g_totals;
}
void reset_totals() {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  g_totals = Totals{};
  g_printed = 0;
}
std::vector<LaunchRecord> take_launch_log() {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  return std::move(g_log);
}
void set_launch_log_enabled(bool enabled) {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  g_log_enabled = enabled;
  g_log.clear();
}

}  // namespace emu::detail

// ---------------------------------------------------------------------------
// What cuda_emu.h declares.

namespace emu {
using namespace detail;

uint3 thread_idx() { return t_fiber->tid; }
uint3 block_idx() { return t_fiber->block->idx; }
dim3 block_dim() { return t_grid->config.block; }
dim3 grid_dim() { return t_grid->config.grid; }
int lane_id() { return t_fiber->lane; }

unsigned active_mask() {
  const RuntimeScope scope;
  const Warp& w = t_fiber->block->warps[t_fiber->warp];
  return w.exists & ~w.exited;
}

void trap(const char* what, const Site& site) {
  const RuntimeScope scope;
  report(Check::kTrap, true, std::string(what) + " at " + where(site));
  std::abort();  // outside a kernel
}

namespace {

void barrier_arrive(Fiber* f, int op, int predicate, const Site& site) {
  Block& b = *f->block;
  if (b.bar_arrived == 0) {
    b.bar_site = site;
    b.bar_op = op;
  } else if (!same_site(site, b.bar_site)) {
    report(Check::kDivergentBarrier, false,
           "divergent __syncthreads: " + where(site) + " and " + where(b.bar_site) + " in one barrier round");
  }
  if (op >= 0) {
    const int p = predicate != 0;
    if (b.bar_arrived == 0) {
      b.bar_acc = p;
    } else {
      b.bar_acc = op == 0 ? b.bar_acc + p : op == 1 ? (b.bar_acc & p) : (b.bar_acc | p);
    }
  }
  ++b.bar_arrived;
  if (b.bar_arrived == b.live) {
    if (b.live < static_cast<int>(b.nthreads) && options().strict) {
      report(Check::kExitedBarrier, false, "__syncthreads at " + where(site) + " reached after some threads exited");
    }
    release_barrier(b);
    f->barrier_result = b.bar_result;
    return;
  }
  f->state = State::kBarrier;
  yield_to_scheduler(f);
}

}  // namespace

void block_barrier(const Site& site) {
  const RuntimeScope scope;
  barrier_arrive(t_fiber, -1, 0, site);
}

int block_barrier_reduce(int predicate, int op, const Site& site) {
  const RuntimeScope scope;
  Fiber* f = t_fiber;
  barrier_arrive(f, op, predicate, site);
  return f->barrier_result;
}

namespace {

// Joins (or opens) the round of `mask` in the caller's warp; returns once every
// lane of the mask has arrived, with the caller's result in its xfer buffer.
void warp_round(unsigned mask, const void* in, std::size_t n, int src, bool gather, const char* op, const Site& site) {
  Fiber* f = t_fiber;
  Block& b = *f->block;
  Warp& w = b.warps[f->warp];
  const unsigned me = 1u << f->lane;
  if ((mask & me) == 0) {
    report(
        Check::kBadMask, false,
        std::string(op) + " at " + where(site) + ": calling lane " + std::to_string(f->lane) + " is not in its mask");
    mask |= me;
  }
  if ((mask & ~w.exists) != 0) {
    report(Check::kBadMask, false,
           std::string(op) + " at " + where(site) + ": mask names lanes beyond the block's last thread");
    mask &= w.exists;
  }
  if ((mask & w.exited) != 0) {
    report(Check::kBadMask, false, std::string(op) + " at " + where(site) + ": mask names lanes that already exited");
    mask &= ~w.exited;
  }
  std::size_t ri = 0;
  for (; ri < w.rounds.size(); ++ri) {
    if ((w.rounds[ri].mask & mask) != 0) {
      break;
    }
  }
  if (ri == w.rounds.size()) {
    WarpRound r;
    r.mask = mask;
    r.op = op;
    r.site = site;
    r.gather = gather;
    r.bytes = n;
    r.src.fill(-1);
    if (gather) {
      std::memset(r.slots, 0, sizeof(r.slots));
    }
    w.rounds.push_back(r);
  } else {
    WarpRound& r = w.rounds[ri];
    if (r.mask != mask) {
      report(Check::kBadMask, false, std::string(op) + " at " + where(site) + ": lanes disagree on the mask");
      r.mask |= mask;
    }
    if (!same_site(site, r.site) || std::strcmp(op, r.op) != 0) {
      report(Check::kDivergentBarrier, false,
             std::string("divergent warp collective: ") + op + " at " + where(site) + " meets " + r.op + " at " +
                 where(r.site));
    }
  }
  WarpRound& r = w.rounds[ri];
  if ((r.arrived & me) != 0) {
    report(Check::kBadMask, false, std::string(op) + " at " + where(site) + ": lane arrived twice in one round");
  }
  std::memcpy(r.slots + 16 * f->lane, in, n);
  r.src[f->lane] = static_cast<int8_t>(src);
  if (src >= 0 && src != f->lane) {
    if (((r.mask >> src) & 1u) == 0) {
      report(Check::kBadMask, false,
             std::string(op) + " at " + where(site) + ": lane " + std::to_string(f->lane) + " reads lane " +
                 std::to_string(src) + ", which is not in the mask (undefined on the GPU)");
    } else {
      r.exchanged = true;
    }
  }
  r.arrived |= me;
  if ((r.arrived & r.mask) == r.mask) {
    complete_round(b, f->warp, ri);
    return;
  }
  f->state = State::kWarp;
  yield_to_scheduler(f);
}

}  // namespace

void warp_shuffle(unsigned mask, const void* in, void* out, std::size_t n, int src, const char* op, const Site& site) {
  const RuntimeScope scope;
  warp_round(mask, in, n, src, false, op, site);
  std::memcpy(out, t_fiber->xfer, n);
}

unsigned warp_gather(unsigned mask, const void* in, std::size_t n, unsigned char* all, const char* op,
                     const Site& site) {
  const RuntimeScope scope;
  unsigned char zero[16] = {};
  warp_round(mask, n > 0 ? in : zero, n, -1, true, op, site);
  std::memcpy(all, t_fiber->xfer, 32 * 16);
  return t_fiber->gather_lanes;
}

void warp_sync(unsigned mask, const Site& site) {
  const RuntimeScope scope;
  warp_round(mask, nullptr, 0, -1, true, "__syncwarp", site);
}

bool grid_is_cooperative() { return t_grid != nullptr && t_grid->config.cooperative; }

void grid_sync(const Site& site) {
  const RuntimeScope scope;
  Fiber* f = t_fiber;
  Grid& g = *t_grid;
  if (!g.config.cooperative) {
    report(Check::kGridSync, true,
           "grid.sync() at " + where(site) + " in a launch that is not cudaLaunchCooperativeKernel");
  }
  Block& b = *f->block;
  if (g.blocks_at_grid_barrier == 0 && b.grid_arrived == 0) {
    bool any = false;
    for (Block* r : g.resident) {
      any = any || r->grid_arrived > 0;
    }
    if (!any) {
      g.grid_site = site;
    }
  }
  if (!same_site(site, g.grid_site)) {
    report(Check::kDivergentBarrier, false,
           "divergent grid.sync: " + where(site) + " and " + where(g.grid_site) + " in one round");
  }
  f->state = State::kGrid;
  ++b.grid_arrived;
  if (b.grid_arrived == b.live) {
    b.at_grid_barrier = true;
    ++g.blocks_at_grid_barrier;
  }
  yield_to_scheduler(f);
}

void atomic(void* address, AtomicType type, AtomicOp op, const void* value, const void* compare, void* old,
            const Site& site) {
  const RuntimeScope scope;
  const std::size_t bytes = type == AtomicType::kI64 || type == AtomicType::kU64 || type == AtomicType::kF64 ? 8
                            : type == AtomicType::kF16 || type == AtomicType::kBF16                          ? 2
                                                                                                             : 4;
  if (t_fiber != nullptr) {
    checks_atomic(address, bytes, site);
  }
  auto apply = [&](auto* p, auto v) {
    using T = std::remove_reference_t<decltype(*p)>;
    std::atomic_ref<T> a(*p);
    T cur = a.load();
    T next{};
    for (;;) {
      switch (op) {
        case AtomicOp::kAdd:
          next = static_cast<T>(cur + v);
          break;
        case AtomicOp::kSub:
          next = static_cast<T>(cur - v);
          break;
        case AtomicOp::kExch:
          next = v;
          break;
        case AtomicOp::kMin:
          next = v < cur ? v : cur;
          break;
        case AtomicOp::kMax:
          next = cur < v ? v : cur;
          break;
        case AtomicOp::kInc:
          if constexpr (std::is_integral_v<T>) {
            next = cur >= v ? T(0) : static_cast<T>(cur + 1);
          }
          break;
        case AtomicOp::kDec:
          if constexpr (std::is_integral_v<T>) {
            next = (cur == 0 || cur > v) ? v : static_cast<T>(cur - 1);
          }
          break;
        case AtomicOp::kCAS: {
          T expected;
          std::memcpy(&expected, compare, sizeof(T));
          next = std::memcmp(&cur, &expected, sizeof(T)) == 0 ? v : cur;
          break;
        }
        case AtomicOp::kAnd:
          if constexpr (std::is_integral_v<T>) {
            next = cur & v;
          }
          break;
        case AtomicOp::kOr:
          if constexpr (std::is_integral_v<T>) {
            next = cur | v;
          }
          break;
        case AtomicOp::kXor:
          if constexpr (std::is_integral_v<T>) {
            next = cur ^ v;
          }
          break;
      }
      if (a.compare_exchange_weak(cur, next)) {
        break;
      }
    }
    std::memcpy(old, &cur, sizeof(T));
  };
  // 16-bit floats: a CAS loop on the bits, arithmetic in float (as the GPU rounds once).
  auto apply16 = [&](auto tag) {
    using H = decltype(tag);
    using Raw = std::conditional_t<std::is_same_v<H, __half>, __half_raw, __nv_bfloat16_raw>;
    auto to_float = [](uint16_t bits) {
      Raw r;
      r.x = bits;
      if constexpr (std::is_same_v<H, __half>) {
        return __half2float(__half(r));
      } else {
        return __bfloat162float(__nv_bfloat16(r));
      }
    };
    auto to_bits = [](float f) {
      Raw r;
      if constexpr (std::is_same_v<H, __half>) {
        r = __half_raw(__float2half_rn(f));
      } else {
        r = __nv_bfloat16_raw(__float2bfloat16_rn(f));
      }
      return static_cast<uint16_t>(r.x);
    };
    auto* p = static_cast<uint16_t*>(address);
    std::atomic_ref<uint16_t> a(*p);
    uint16_t cur = a.load();
    uint16_t vbits;
    std::memcpy(&vbits, value, 2);
    const float fv = to_float(vbits);
    for (;;) {
      const float fc = to_float(cur);
      uint16_t next = vbits;
      switch (op) {
        case AtomicOp::kAdd:
          next = to_bits(fc + fv);
          break;
        case AtomicOp::kSub:
          next = to_bits(fc - fv);
          break;
        case AtomicOp::kMin:
          next = fv < fc ? vbits : cur;
          break;
        case AtomicOp::kMax:
          next = fc < fv ? vbits : cur;
          break;
        case AtomicOp::kCAS: {
          uint16_t expected;
          std::memcpy(&expected, compare, 2);
          next = cur == expected ? vbits : cur;
          break;
        }
        default:
          break;
      }
      if (a.compare_exchange_weak(cur, next)) {
        break;
      }
    }
    std::memcpy(old, &cur, 2);
  };
  switch (type) {
    case AtomicType::kI32:
      apply(static_cast<int32_t*>(address), *static_cast<const int32_t*>(value));
      break;
    case AtomicType::kU32:
      apply(static_cast<uint32_t*>(address), *static_cast<const uint32_t*>(value));
      break;
    case AtomicType::kI64:
      apply(static_cast<int64_t*>(address), *static_cast<const int64_t*>(value));
      break;
    case AtomicType::kU64:
      apply(static_cast<uint64_t*>(address), *static_cast<const uint64_t*>(value));
      break;
    case AtomicType::kF32:
      apply(static_cast<float*>(address), *static_cast<const float*>(value));
      break;
    case AtomicType::kF64:
      apply(static_cast<double*>(address), *static_cast<const double*>(value));
      break;
    case AtomicType::kF16:
      apply16(__half());
      break;
    case AtomicType::kBF16:
      apply16(__nv_bfloat16());
      break;
  }
}

cudaError_t launch_erased(const void* kernel, const LaunchConfig& config, void (*entry)(void*), void* context) {
  const Options& opt = options();
  if (t_fiber != nullptr) {
    report(Check::kLaunchLimit, true, "kernel launch from device code (dynamic parallelism) is not emulated");
  }
  std::lock_guard<std::recursive_mutex> launch_lock(g_launch_mutex);
  KernelInfo& info = kernel_info(kernel);
  const cudaError_t limit_error = check_launch(info, config);
  if (limit_error != cudaSuccess) {
    set_last_error(limit_error);
    std::lock_guard<std::mutex> lock(g_state_mutex);
    ++g_totals.launches;
    ++g_totals.failed_launches;
    return limit_error;
  }
  Grid g;
  g.config = config;
  g.kernel = &info;
  g.entry = entry;
  g.context = context;
  g.nblocks = uint64_t{config.grid.x} * config.grid.y * config.grid.z;
  g.nthreads = config.block.x * config.block.y * config.block.z;
  g.shared = &thread_shared(*info.module);
  g.rng.seed(opt.seed);
  g.record.kernel = info.name;
  g.record.mangled = info.mangled;
  g.record.static_shared = info.static_shared;
  g.record.registers = info.registers_known ? info.registers : 0;
  g.record.grid = config.grid;
  g.record.block = config.block;
  g.record.dynamic_shared = config.shared_bytes;
  g.record.cooperative = config.cooperative;
  if (config.shared_bytes > 0 && g.shared->dynamic_begin == 0) {
    report(Check::kLaunchLimit, false, info.name + ": dynamic shared memory requested but the module has no buffer");
    set_last_error(cudaErrorInvalidValue);
    return cudaErrorInvalidValue;
  }
  if (opt.verbose) {
    std::fprintf(stderr, "emu: launch %s grid %s block %s shared %zu%s\n", info.name.c_str(), dims(config.grid).c_str(),
                 dims(config.block).c_str(), config.shared_bytes, config.cooperative ? " cooperative" : "");
  }
  Grid* outer = t_grid;
  t_grid = &g;
  checks_launch_begin(g);
  run_grid(g);
  checks_launch_end(g);
  t_grid = outer;
  int findings = 0;
  for (int n : g.findings) {
    findings += n;
  }
  cudaError_t err = g.fatal_error;
  if (err == cudaSuccess && findings > 0) {
    err = cudaErrorLaunchFailure;
  }
  g.record.findings = findings;
  g.record.error = err;
  {
    std::lock_guard<std::mutex> lock(g_state_mutex);
    ++g_totals.launches;
    if (err != cudaSuccess) {
      ++g_totals.failed_launches;
    }
    if (g_log_enabled) {
      g_log.push_back(g.record);
    }
  }
  if (err != cudaSuccess) {
    set_last_error(err);
  }
  return err;
}

cudaError_t func_get_attributes(cudaFuncAttributes* a, const void* kernel) {
  const KernelInfo& k = kernel_info(kernel);
  *a = cudaFuncAttributes{};
  a->sharedSizeBytes = k.static_shared;
  a->numRegs = k.registers;
  a->maxThreadsPerBlock = std::min(kMaxThreadsPerBlock, kRegistersPerSm / std::max(1, k.registers) / 32 * 32);
  a->maxDynamicSharedSizeBytes = k.max_dynamic_shared;
  a->ptxVersion = 90;
  a->binaryVersion = 90;
  return cudaSuccess;
}

cudaError_t func_set_attribute(const void* kernel, cudaFuncAttribute attribute, int value) {
  KernelInfo& k = kernel_info(kernel);
  if (attribute == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || static_cast<std::size_t>(value) + k.static_shared > kDynamicSharedOptIn) {
      report(Check::kLaunchLimit, false,
             k.name + ": cudaFuncAttributeMaxDynamicSharedMemorySize " + std::to_string(value) + " + " +
                 std::to_string(k.static_shared) + " static bytes exceed 227 KB");
      set_last_error(cudaErrorInvalidValue);
      return cudaErrorInvalidValue;
    }
    k.max_dynamic_shared = value;
    return cudaSuccess;
  }
  if (attribute == cudaFuncAttributePreferredSharedMemoryCarveout) {
    return cudaSuccess;
  }
  set_last_error(cudaErrorInvalidValue);
  return cudaErrorInvalidValue;
}

cudaError_t occupancy(int* blocks, const void* kernel, int block_size, std::size_t dynamic_shared) {
  *blocks = max_active_blocks(kernel_info(kernel), block_size, dynamic_shared);
  return cudaSuccess;
}

}  // namespace emu

// ---------------------------------------------------------------------------
// The runtime API calls (renamed by cuda_emu.h).

cudaError_t emu_cudaGetLastError() {
  std::lock_guard<std::mutex> lock(emu::detail::g_state_mutex);
  const cudaError_t e = emu::detail::g_last_error;
  emu::detail::g_last_error = cudaSuccess;
  return e;
}
cudaError_t emu_cudaPeekAtLastError() {
  std::lock_guard<std::mutex> lock(emu::detail::g_state_mutex);
  return emu::detail::g_last_error;
}
const char* emu_cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
    case cudaErrorMisalignedAddress:
      return "cudaErrorMisalignedAddress";
    case cudaErrorIllegalInstruction:
      return "cudaErrorIllegalInstruction";
    case cudaErrorLaunchOutOfResources:
      return "cudaErrorLaunchOutOfResources";
    case cudaErrorCooperativeLaunchTooLarge:
      return "cudaErrorCooperativeLaunchTooLarge";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    default:
      return "cudaError (emulated)";
  }
}
const char* emu_cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error (emulated)";
    case cudaErrorInvalidValue:
      return "invalid argument (emulated: see the emu: line on stderr)";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument (emulated: see the emu: line on stderr)";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure (emulated: the emulator's checks failed, see stderr)";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered (emulated: see stderr)";
    case cudaErrorMisalignedAddress:
      return "misaligned address (emulated: see stderr)";
    case cudaErrorIllegalInstruction:
      return "an illegal instruction was encountered (emulated: __trap, see stderr)";
    case cudaErrorLaunchOutOfResources:
      return "too many resources requested for launch (emulated)";
    case cudaErrorCooperativeLaunchTooLarge:
      return "too many blocks in cooperative launch (emulated)";
    case cudaErrorMemoryAllocation:
      return "out of memory (emulated)";
    default:
      return "error (emulated)";
  }
}
cudaError_t emu_cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t emu_cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t emu_cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t emu_cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t emu_cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t emu_cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  using namespace emu::detail;
  if (device != 0) {
    return cudaErrorInvalidDevice;
  }
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      *value = options().sm_count;
      break;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = kMaxThreadsPerBlock;
      break;
    case cudaDevAttrMaxBlockDimX:
    case cudaDevAttrMaxBlockDimY:
      *value = 1024;
      break;
    case cudaDevAttrMaxBlockDimZ:
      *value = 64;
      break;
    case cudaDevAttrMaxGridDimX:
      *value = 2147483647;
      break;
    case cudaDevAttrMaxGridDimY:
    case cudaDevAttrMaxGridDimZ:
      *value = 65535;
      break;
    case cudaDevAttrWarpSize:
      *value = 32;
      break;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = static_cast<int>(kStaticSharedLimit);
      break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(kDynamicSharedOptIn);
      break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
      *value = static_cast<int>(kSharedPerSm);
      break;
    case cudaDevAttrMaxRegistersPerBlock:
    case cudaDevAttrMaxRegistersPerMultiprocessor:
      *value = kRegistersPerSm;
      break;
    case cudaDevAttrMaxThreadsPerMultiProcessor:
      *value = kMaxThreadsPerSm;
      break;
    case cudaDevAttrMaxBlocksPerMultiprocessor:
      *value = kMaxBlocksPerSm;
      break;
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      break;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      break;
    case cudaDevAttrCooperativeLaunch:
      *value = 1;
      break;
    case cudaDevAttrL2CacheSize:
      *value = 50 * 1024 * 1024;
      break;
    default:
      *value = 0;
      return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
cudaError_t emu_cudaMalloc(void** ptr, std::size_t bytes) {
  *ptr = emu::detail::device_malloc(bytes, "cudaMalloc");
  return *ptr != nullptr || bytes == 0 ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t emu_cudaFree(void* ptr) {
  emu::detail::device_free(ptr);
  return cudaSuccess;
}
cudaError_t emu_cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind) {
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t emu_cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return emu_cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t emu_cudaMemset(void* dst, int value, std::size_t bytes) {
  std::memset(dst, value, bytes);
  return cudaSuccess;
}
cudaError_t emu_cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t) {
  return emu_cudaMemset(dst, value, bytes);
}
