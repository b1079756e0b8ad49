// The CUDA emulator as a torch backend (build/emu/libfusednorm_emu.so): loaded
// into a process after fusednorm's library, it makes the CPU take the CUDA
// path. The CUDA launch adapters compiled into this library (with
// FUSEDNORM_CUDA_EMULATION) register the CUDA kernel tables for the CPU device
// type in place of the CPU kernels; this file turns off the CPU-only host-loop
// shortcuts of the combine step, puts the CPU allocator's tensors under the
// access checks (redzones, poisoned contents), and gives Python the counters.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "internal.h"
#include "ops/kernel_registry.h"

namespace {

using namespace emu::detail;

// Keeps c10's 64-byte alignment and gives every tensor redzones.
constexpr std::size_t kPad = 64;
static_assert(kPad >= kRedzone);

c10::Allocator* g_base = nullptr;

void delete_tracked(void* user) {
  emu::unregister_allocation(user);
  g_base->raw_deleter()(static_cast<unsigned char*>(user) - kPad);
}

class TrackingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(std::size_t n) override {
    auto* raw = static_cast<unsigned char*>(g_base->raw_allocate(n + 2 * kPad));
    unsigned char* user = raw + kPad;
    if (options().poison_allocations && n > 0) {
      std::memset(user, 0xff, n);
    }
    register_allocation_with_redzone(reinterpret_cast<uintptr_t>(user), n, kRedzone, "tensor");
    return {user, user, &delete_tracked, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &delete_tracked; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
};

TrackingAllocator g_tracking;

const bool g_installed = [] {
  g_base = c10::GetAllocator(c10::DeviceType::CPU);
  c10::SetAllocator(c10::DeviceType::CPU, &g_tracking, /*priority=*/100);
  fusednorm::detail::set_host_combine_enabled(false);
  return true;
}();

std::string g_json;

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
    }
    out += c;
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// C API for tests/python (ctypes): totals and the per-launch records.
extern "C" {

int emu_num_checks() { return kNumChecks; }
const char* emu_check_name(int i) { return check_name(static_cast<Check>(i)); }

// out[0] launches, out[1] failed launches, out[2 + i] findings of check i.
void emu_totals(uint64_t* out) {
  const Totals t = totals();
  out[0] = t.launches;
  out[1] = t.failed_launches;
  for (int i = 0; i < kNumChecks; ++i) {
    out[2 + i] = t.findings[i];
  }
}

void emu_reset_totals() { reset_totals(); }

void emu_set_launch_log(int enabled) { set_launch_log_enabled(enabled != 0); }

// The launches since the last call, as a JSON list (valid until the next call).
const char* emu_take_launch_log() {
  g_json = "[";
  bool first = true;
  for (const LaunchRecord& r : take_launch_log()) {
    char buf[640];
    std::snprintf(buf, sizeof(buf),
                  "\"grid\": [%u, %u, %u], \"block\": [%u, %u, %u], \"dynamic_shared\": %zu, \"static_shared\": %zu, "
                  "\"registers\": %d, \"cooperative\": %s, "
                  "\"bytes_read\": %llu, \"bytes_written\": %llu, \"unique_bytes_read\": %llu, "
                  "\"unique_bytes_written\": %llu, \"requests\": %llu, \"sectors\": %llu, "
                  "\"ideal_sectors\": %llu, \"atomics\": %llu, \"findings\": %d, \"error\": %d",
                  r.grid.x, r.grid.y, r.grid.z, r.block.x, r.block.y, r.block.z, r.dynamic_shared, r.static_shared,
                  r.registers, r.cooperative ? "true" : "false", static_cast<unsigned long long>(r.bytes_read),
                  static_cast<unsigned long long>(r.bytes_written),
                  static_cast<unsigned long long>(r.unique_bytes_read),
                  static_cast<unsigned long long>(r.unique_bytes_written), static_cast<unsigned long long>(r.requests),
                  static_cast<unsigned long long>(r.sectors), static_cast<unsigned long long>(r.ideal_sectors),
                  static_cast<unsigned long long>(r.atomics), r.findings, static_cast<int>(r.error));
    g_json += std::string(first ? "" : ", ") + "{\"kernel\": \"" + json_escape(r.kernel) + "\", \"mangled\": \"" +
              json_escape(r.mangled) + "\", " + buf + "}";
    first = false;
  }
  g_json += "]";
  return g_json.c_str();
}

int emu_installed() { return g_installed ? 1 : 0; }

}  // extern "C"
