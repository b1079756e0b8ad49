// The access checks: compute-sanitizer and Nsight Compute stand-ins.
//
// Kernel translation units are compiled with gcc's
//   -fsanitize=thread --param tsan-instrument-func-entry-exit=0
// which makes every load and store call __tsan_{read,write}N(address) before it
// happens; this file implements those callbacks (no sanitizer runtime is
// involved). Each access of a running CUDA thread is classified:
//   its own stack (local memory)      ignored;
//   a __shared__ variable             race check (racecheck), uninitialised-read
//                                     check (shared memory is poisoned per block),
//                                     bounds of the dynamic buffer, alignment;
//   a device allocation               bounds (redzones), alignment, traffic:
//                                     bytes, and warp requests -> 32-byte sectors;
//   the module's own data             ignored (constant tables, the emulator);
//   anything else                     an access outside device memory.
// Warp requests: the k-th execution of one instruction (return address) by the
// lanes of a warp is one request, as the lanes of a converged warp issue it
// together.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <set>
#include <unordered_map>

#include "internal.h"

namespace emu::detail {

namespace {

// ---- Per-thread instruction counts (for grouping lanes into warp requests) ----
struct SiteTable {
  struct Entry {
    uintptr_t pc = 0;
    uint32_t generation = 0;
    uint32_t count = 0;
  };
  std::vector<Entry> entries = std::vector<Entry>(64);
  uint32_t generation = 1;
  std::size_t used = 0;

  void reset() {
    ++generation;
    used = 0;
  }
  uint32_t next(uintptr_t pc) {
    if (used * 2 >= entries.size()) {
      grow();
    }
    std::size_t mask = entries.size() - 1;
    for (std::size_t i = (pc >> 2) * 0x9E3779B97F4A7C15ull >> 40 & mask;; i = (i + 1) & mask) {
      Entry& e = entries[i];
      if (e.generation != generation) {
        e = {pc, generation, 1};
        ++used;
        return 0;
      }
      if (e.pc == pc) {
        return e.count++;
      }
    }
  }
  void grow() {
    std::vector<Entry> old;
    old.swap(entries);
    entries.assign(old.size() * 2, Entry{});
    const std::size_t mask = entries.size() - 1;
    for (const Entry& e : old) {
      if (e.generation != generation) {
        continue;
      }
      for (std::size_t i = (e.pc >> 2) * 0x9E3779B97F4A7C15ull >> 40 & mask;; i = (i + 1) & mask) {
        if (entries[i].generation != generation) {
          entries[i] = e;
          break;
        }
      }
    }
  }
};

// ---- Shared-memory shadow: per byte, the last writer and reader of the
// current barrier interval and the block that initialised it. ----
struct ByteShadow {
  uint32_t w_epoch = 0;
  uint32_t r_epoch = 0;
  uint64_t init_serial = 0;
  uintptr_t w_pc = 0;
  uintptr_t r_pc = 0;
  uint16_t w_tid = 0;
  uint16_t r_tid = 0;
  uint32_t w_wsync = 0;
  uint32_t r_wsync = 0;
  bool r_multi = false;
};
constexpr std::size_t kChunk = 64;
using Chunk = std::array<ByteShadow, kChunk>;

struct VarShadow {
  std::vector<std::unique_ptr<Chunk>> chunks;
  uint64_t poisoned_serial = 0;  // block that last poisoned the variable
};

// A warp request being collected: the lanes' addresses of one instruction's k-th execution.
struct RequestKey {
  uintptr_t pc;
  uint32_t warp;
  uint32_t k;
  bool operator==(const RequestKey& o) const { return pc == o.pc && warp == o.warp && k == o.k; }
};
struct RequestKeyHash {
  std::size_t operator()(const RequestKey& k) const {
    return std::hash<uintptr_t>()(k.pc) ^ (std::size_t{k.warp} << 40) ^ (std::size_t{k.k} * 0x9E3779B97F4A7C15ull);
  }
};
struct Request {
  uint32_t lanes = 0;
  uint32_t size = 0;
  std::array<uintptr_t, 32> address{};
};

}  // namespace

struct FiberChecks {
  SiteTable sites;
};

struct BlockChecks {
  std::vector<VarShadow> vars;  // by module shared-variable index
  std::unordered_map<RequestKey, Request, RequestKeyHash> requests;
};

namespace {

// The distinct bytes of one allocation a launch reads and writes.
struct Footprint {
  std::vector<uint64_t> read, written;  // one bit per byte
  static void mark(std::vector<uint64_t>& bits, std::size_t from, std::size_t n) {
    for (std::size_t i = from; i < from + n; ++i) {
      bits[i / 64] |= uint64_t{1} << (i % 64);
    }
  }
  static uint64_t count(const std::vector<uint64_t>& bits) {
    uint64_t n = 0;
    for (uint64_t w : bits) {
      n += static_cast<uint64_t>(__builtin_popcountll(w));
    }
    return n;
  }
};

// Per launch: deduplication of reports, the cached allocation, footprints.
struct LaunchChecks {
  std::set<std::tuple<int, uintptr_t, uintptr_t>> reported;
  Allocation last{};
  bool has_last = false;
  std::unordered_map<uintptr_t, Footprint> footprints;  // by allocation begin
};
thread_local LaunchChecks t_launch;

bool first_report(Check c, uintptr_t a, uintptr_t b) {
  return t_launch.reported.emplace(static_cast<int>(c), a, b).second;
}

std::string hex(uintptr_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%" PRIxPTR, v);
  return buf;
}

bool lookup_allocation(uintptr_t address, Allocation& out) {
  LaunchChecks& lc = t_launch;
  if (lc.has_last && address >= lc.last.begin - lc.last.redzone && address < lc.last.end + lc.last.redzone) {
    out = lc.last;
    return true;
  }
  if (!find_allocation(address, out)) {
    return false;
  }
  lc.last = out;
  lc.has_last = true;
  return true;
}

bool in_module(const ModuleInfo& m, const ThreadShared& ts, uintptr_t address) {
  if (address >= ts.tls_lo && address < ts.tls_hi) {
    return true;
  }
  for (const auto& [begin, end] : m.segments) {
    if (address >= begin && address < end) {
      return true;
    }
  }
  return false;
}

std::string tid_string(const Block& b, int linear) {
  const uint3 t = b.fibers[linear].tid;
  return "(" + std::to_string(t.x) + "," + std::to_string(t.y) + "," + std::to_string(t.z) + ")";
}

ByteShadow& shadow_byte(Block& b, int var, std::size_t offset) {
  BlockChecks& bc = *b.checks;
  if (bc.vars.size() <= static_cast<std::size_t>(var)) {
    bc.vars.resize(var + 1);
  }
  VarShadow& vs = bc.vars[var];
  const std::size_t ci = offset / kChunk;
  if (vs.chunks.size() <= ci) {
    vs.chunks.resize(ci + 1);
  }
  if (!vs.chunks[ci]) {
    vs.chunks[ci] = std::make_unique<Chunk>();
  }
  return (*vs.chunks[ci])[offset % kChunk];
}

void shared_access(Fiber& f, const SharedRange& r, uintptr_t address, std::size_t size, bool write, uintptr_t pc,
                   bool atomic, bool unaligned) {
  Block& b = *f.block;
  Grid& g = *b.grid;
  const SharedVar& var = g.kernel->module->shared[r.var];
  std::size_t limit = r.end - r.begin;
  if (var.dynamic) {
    limit = g.config.shared_bytes;
  }
  const std::size_t offset = address - r.begin;
  if (offset + size > limit) {
    report(Check::kOutOfBounds, true,
           std::string(write ? "write" : "read") + " of " + std::to_string(size) + " bytes at byte " +
               std::to_string(offset) + " of " + var.name + " (" + std::to_string(limit) + " bytes" +
               (var.dynamic ? " requested at launch" : "") + ") at " + symbolize(pc));
  }
  if (!unaligned && size > 1 && size <= 16 && (size & (size - 1)) == 0 && address % size != 0) {
    report(Check::kMisaligned, true,
           std::to_string(size) + "-byte shared access at " + hex(address) + " (" + var.name + " + " +
               std::to_string(offset) + ") at " + symbolize(pc));
  }
  // Variables of __device__ helpers are poisoned at their first touch in a
  // block (the kernel's own ones and the dynamic bytes were at its start).
  BlockChecks& bc = *b.checks;
  if (bc.vars.size() <= static_cast<std::size_t>(r.var)) {
    bc.vars.resize(r.var + 1);
  }
  if (bc.vars[r.var].poisoned_serial != b.serial) {
    std::memset(reinterpret_cast<void*>(r.begin), 0xff, limit);
    bc.vars[r.var].poisoned_serial = b.serial;
  }
  const uint32_t epoch = b.epoch;
  const auto tid = static_cast<uint16_t>(f.linear);
  const uint32_t wsync = b.warps[f.warp].syncs;
  // A __syncwarp of the warp since the other access orders it before this one.
  auto ordered = [&](uint16_t other, uint32_t other_wsync) {
    return other / 32 == f.linear / 32 && b.warps[f.warp].syncs != other_wsync;
  };
  for (std::size_t i = 0; i < size; ++i) {
    ByteShadow& s = shadow_byte(b, r.var, offset + i);
    if (atomic) {
      // Atomics neither race with each other nor count as plain accesses.
      if (s.init_serial != b.serial && first_report(Check::kUninitialized, pc, 0)) {
        report(Check::kUninitialized, false,
               "atomic on uninitialised " + var.name + " byte " + std::to_string(offset + i) + " at " + symbolize(pc));
      }
      s.init_serial = b.serial;
      continue;
    }
    if (write) {
      if (s.w_epoch == epoch && s.w_tid != tid && !ordered(s.w_tid, s.w_wsync) &&
          first_report(Check::kRace, pc, s.w_pc)) {
        report(Check::kRace, false,
               "write-after-write hazard on " + var.name + " byte " + std::to_string(offset + i) + ": thread " +
                   tid_string(b, tid) + " writes at " + symbolize(pc) + ", thread " + tid_string(b, s.w_tid) +
                   " wrote at " + symbolize(s.w_pc) + " in the same barrier interval");
      }
      if (s.r_epoch == epoch && (s.r_tid != tid || s.r_multi) && !ordered(s.r_tid, s.r_wsync) &&
          first_report(Check::kRace, pc, s.r_pc)) {
        report(Check::kRace, false,
               "write-after-read hazard on " + var.name + " byte " + std::to_string(offset + i) + ": thread " +
                   tid_string(b, tid) + " writes at " + symbolize(pc) + ", thread " + tid_string(b, s.r_tid) +
                   " read at " + symbolize(s.r_pc) + " in the same barrier interval");
      }
      s.w_epoch = epoch;
      s.w_tid = tid;
      s.w_wsync = wsync;
      s.w_pc = pc;
      s.init_serial = b.serial;
    } else {
      if (s.init_serial != b.serial && first_report(Check::kUninitialized, pc, 0)) {
        report(Check::kUninitialized, false,
               "read of uninitialised " + var.name + " byte " + std::to_string(offset + i) + " by thread " +
                   tid_string(b, tid) + " at " + symbolize(pc));
      }
      if (s.w_epoch == epoch && s.w_tid != tid && !ordered(s.w_tid, s.w_wsync) &&
          first_report(Check::kRace, pc, s.w_pc)) {
        report(Check::kRace, false,
               "read-after-write hazard on " + var.name + " byte " + std::to_string(offset + i) + ": thread " +
                   tid_string(b, tid) + " reads at " + symbolize(pc) + ", thread " + tid_string(b, s.w_tid) +
                   " wrote at " + symbolize(s.w_pc) + " in the same barrier interval");
      }
      if (s.r_epoch != epoch) {
        s.r_epoch = epoch;
        s.r_tid = tid;
        s.r_multi = false;
      } else if (s.r_tid != tid) {
        s.r_multi = true;
        s.r_tid = tid;
      }
      s.r_wsync = wsync;
      s.r_pc = pc;
    }
  }
}

void global_access(Fiber& f, const Allocation& a, uintptr_t address, std::size_t size, bool write, uintptr_t pc,
                   bool atomic, bool unaligned) {
  if (address < a.begin || address + size > a.end) {
    const bool before = address < a.begin;
    report(Check::kOutOfBounds, true,
           std::string(write ? "write" : "read") + " of " + std::to_string(size) + " bytes at " + hex(address) + ", " +
               std::to_string(before ? a.begin - address : address + size - a.end) + " bytes " +
               (before ? "before" : "past the end of") + " a " + std::to_string(a.end - a.begin) +
               "-byte allocation (" + a.what + ") at " + symbolize(pc));
  }
  if (!unaligned && size > 1 && size <= 16 && (size & (size - 1)) == 0 && address % size != 0) {
    report(Check::kMisaligned, true,
           std::to_string(size) + "-byte global access at " + hex(address) + " (offset " +
               std::to_string(address - a.begin) + " in its allocation) at " + symbolize(pc));
  }
  Grid& g = *f.block->grid;
  LaunchRecord& rec = g.record;
  (write || atomic ? rec.bytes_written : rec.bytes_read) += size;
  Footprint& fp = t_launch.footprints[a.begin];
  if (fp.read.empty()) {
    const std::size_t words = (a.end - a.begin + 63) / 64 + 1;
    fp.read.assign(words, 0);
    fp.written.assign(words, 0);
  }
  if (write || atomic) {
    Footprint::mark(fp.written, address - a.begin, size);
  }
  if (!write || atomic) {
    Footprint::mark(fp.read, address - a.begin, size);
  }
  if (atomic) {
    rec.bytes_read += size;
    ++rec.atomics;
  }
  const uint32_t k = f.checks->sites.next(pc);
  Request& req = f.block->checks->requests[RequestKey{pc, static_cast<uint32_t>(f.warp), k}];
  req.lanes |= 1u << f.lane;
  req.size = static_cast<uint32_t>(size);
  req.address[f.lane] = address;
}

void access(uintptr_t address, std::size_t size, bool write, uintptr_t pc, bool atomic = false,
            bool unaligned = false) {
  Fiber* f = t_fiber;
  if (f == nullptr || f->in_runtime) {
    return;  // host code of a kernel translation unit, or the emulator's own
  }
  const RuntimeScope scope;
  if (address - reinterpret_cast<uintptr_t>(f->stack) < f->stack_size) {
    return;  // the thread's local memory
  }
  Grid& g = *f->block->grid;
  const ThreadShared& ts = *g.shared;
  if (const SharedRange* r = find_shared(ts, address)) {
    shared_access(*f, *r, address, size, write, pc, atomic, unaligned);
    return;
  }
  Allocation a;
  if (lookup_allocation(address, a)) {
    global_access(*f, a, address, size, write, pc, atomic, unaligned);
    return;
  }
  if (in_module(*g.kernel->module, ts, address)) {
    return;
  }
  if (options().unknown_memory_is_error) {
    report(Check::kUnknownMemory, true,
           std::string(write ? "write" : "read") + " of " + std::to_string(size) + " bytes at " + hex(address) +
               ", which is neither shared memory, nor a device allocation, nor the thread's stack, at " +
               symbolize(pc));
  }
}

}  // namespace

void checks_launch_begin(Grid&) { t_launch = LaunchChecks{}; }

void checks_launch_end(Grid& g) {
  for (const auto& [begin, fp] : t_launch.footprints) {
    g.record.unique_bytes_read += Footprint::count(fp.read);
    g.record.unique_bytes_written += Footprint::count(fp.written);
  }
  t_launch.footprints.clear();
}

void checks_block_begin(Block& b) {
  if (b.checks == nullptr) {
    b.checks = new BlockChecks;
  }
  b.checks->requests.clear();
}

void checks_shared_poisoned(Block& b, int var) {
  BlockChecks& bc = *b.checks;
  if (bc.vars.size() <= static_cast<std::size_t>(var)) {
    bc.vars.resize(var + 1);
  }
  bc.vars[var].poisoned_serial = b.serial;
}

void checks_fiber_begin(Fiber& f) {
  if (f.checks == nullptr) {
    f.checks = new FiberChecks;
  }
  f.checks->sites.reset();
}

// Sectors of the block's warp requests: distinct 32-byte sectors the lanes
// touch, against the fewest that could hold the distinct bytes they ask for.
void checks_block_end(Block& b) {
  if (b.checks == nullptr) {
    return;
  }
  LaunchRecord& rec = b.grid->record;
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  std::vector<uintptr_t> sectors;
  for (const auto& [key, req] : b.checks->requests) {
    ranges.clear();
    sectors.clear();
    for (int lane = 0; lane < 32; ++lane) {
      if ((req.lanes >> lane) & 1u) {
        const uintptr_t a = req.address[lane];
        ranges.emplace_back(a, a + req.size);
        for (uintptr_t s = a >> 5; s <= (a + req.size - 1) >> 5; ++s) {
          sectors.push_back(s);
        }
      }
    }
    std::sort(ranges.begin(), ranges.end());
    uint64_t unique = 0;
    uintptr_t covered = 0;
    for (const auto& [lo, hi] : ranges) {
      const uintptr_t from = std::max(lo, covered);
      if (hi > from) {
        unique += hi - from;
      }
      covered = std::max(covered, hi);
    }
    std::sort(sectors.begin(), sectors.end());
    const uint64_t touched = static_cast<uint64_t>(std::unique(sectors.begin(), sectors.end()) - sectors.begin());
    rec.requests += 1;
    rec.sectors += touched;
    rec.ideal_sectors += (unique + 31) / 32;
  }
  b.checks->requests.clear();
}

void checks_atomic(void* address, std::size_t bytes, const Site& site) {
  // Atomics are grouped into requests by their source line.
  const uintptr_t pc = reinterpret_cast<uintptr_t>(site.file_name()) ^ (uintptr_t{site.line()} << 1);
  t_fiber->in_runtime = false;  // the atomic itself is the kernel's access
  access(reinterpret_cast<uintptr_t>(address), bytes, true, pc, true);
  t_fiber->in_runtime = true;
}

}  // namespace emu::detail

// ---------------------------------------------------------------------------
// The callbacks of gcc's -fsanitize=thread instrumentation (no TSan runtime is
// linked: these are the whole of it). ThreadSanitizer's instrumentation is the
// one used because it instruments every access to a static or thread_local
// variable, where AddressSanitizer's skips those it can prove in bounds (a
// __shared__ scalar, or an array at a constant index).

#define EMU_ACCESS(N)                                                                                     \
  extern "C" void __tsan_read##N(void* a) {                                                               \
    emu::detail::access(reinterpret_cast<uintptr_t>(a), N, false,                                         \
                        reinterpret_cast<uintptr_t>(__builtin_return_address(0)));                        \
  }                                                                                                       \
  extern "C" void __tsan_write##N(void* a) {                                                              \
    emu::detail::access(reinterpret_cast<uintptr_t>(a), N, true,                                          \
                        reinterpret_cast<uintptr_t>(__builtin_return_address(0)));                        \
  }                                                                                                       \
  /* Accesses the compiler cannot prove aligned (memcpy of bytes, packed data): not alignment-checked. */ \
  extern "C" void __tsan_unaligned_read##N(void* a) {                                                     \
    emu::detail::access(reinterpret_cast<uintptr_t>(a), N, false,                                         \
                        reinterpret_cast<uintptr_t>(__builtin_return_address(0)), false, true);           \
  }                                                                                                       \
  extern "C" void __tsan_unaligned_write##N(void* a) {                                                    \
    emu::detail::access(reinterpret_cast<uintptr_t>(a), N, true,                                          \
                        reinterpret_cast<uintptr_t>(__builtin_return_address(0)), false, true);           \
  }

EMU_ACCESS(1)
EMU_ACCESS(2)
EMU_ACCESS(4)
EMU_ACCESS(8)
EMU_ACCESS(16)

extern "C" void __tsan_read_range(void* a, unsigned long n) {
  emu::detail::access(reinterpret_cast<uintptr_t>(a), n, false,
                      reinterpret_cast<uintptr_t>(__builtin_return_address(0)), false, true);
}
extern "C" void __tsan_write_range(void* a, unsigned long n) {
  emu::detail::access(reinterpret_cast<uintptr_t>(a), n, true, reinterpret_cast<uintptr_t>(__builtin_return_address(0)),
                      false, true);
}
extern "C" void __tsan_init() {}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}
extern "C" void __tsan_vptr_update(void**, void*) {}
extern "C" void __tsan_vptr_read(void**) {}

// Atomics outside kernels (host code in instrumented files: std::atomic in the
// launchers, libstdc++'s reference counts): performed, not checked. Kernels'
// atomics go through emu::atomic.
#define EMU_TSAN_ATOMICS(BITS, T)                                                                                    \
  extern "C" T __tsan_atomic##BITS##_load(const volatile T* a, int) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); } \
  extern "C" void __tsan_atomic##BITS##_store(volatile T* a, T v, int) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); } \
  extern "C" T __tsan_atomic##BITS##_exchange(volatile T* a, T v, int) {                                             \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                                              \
  }                                                                                                                  \
  extern "C" T __tsan_atomic##BITS##_fetch_add(volatile T* a, T v, int) {                                            \
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                                                               \
  }                                                                                                                  \
  extern "C" T __tsan_atomic##BITS##_fetch_sub(volatile T* a, T v, int) {                                            \
    return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);                                                               \
  }                                                                                                                  \
  extern "C" T __tsan_atomic##BITS##_fetch_and(volatile T* a, T v, int) {                                            \
    return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST);                                                               \
  }                                                                                                                  \
  extern "C" T __tsan_atomic##BITS##_fetch_or(volatile T* a, T v, int) {                                             \
    return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);                                                                \
  }                                                                                                                  \
  extern "C" T __tsan_atomic##BITS##_fetch_xor(volatile T* a, T v, int) {                                            \
    return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST);                                                               \
  }                                                                                                                  \
  extern "C" T __tsan_atomic##BITS##_fetch_nand(volatile T* a, T v, int) {                                           \
    return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST);                                                              \
  }                                                                                                                  \
  extern "C" int __tsan_atomic##BITS##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) {                 \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                          \
  }                                                                                                                  \
  extern "C" int __tsan_atomic##BITS##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) {                   \
    return __atomic_compare_exchange_n(a, c, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                           \
  }                                                                                                                  \
  extern "C" T __tsan_atomic##BITS##_compare_exchange_val(volatile T* a, T c, T v, int, int) {                       \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                                \
    return c;                                                                                                        \
  }

EMU_TSAN_ATOMICS(8, unsigned char)
EMU_TSAN_ATOMICS(16, unsigned short)
EMU_TSAN_ATOMICS(32, unsigned int)
EMU_TSAN_ATOMICS(64, unsigned long long)
extern "C" void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
extern "C" void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
