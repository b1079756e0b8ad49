// Device memory as the access checks see it: every allocation a kernel may
// touch, with redzones on both sides (an access there is out of bounds).
// cudaMalloc allocates here; the torch plugin registers the CPU allocator's
// tensors; emu::register_allocation takes memory a test allocated itself.
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <shared_mutex>

#include "internal.h"

namespace emu::detail {
namespace {

std::shared_mutex g_mutex;
std::map<uintptr_t, Allocation> g_allocations;  // by user begin

void add(uintptr_t begin, std::size_t bytes, std::size_t redzone, const char* what) {
  std::unique_lock<std::shared_mutex> lock(g_mutex);
  g_allocations[begin] = Allocation{begin, begin + bytes, redzone, what != nullptr ? what : ""};
}

}  // namespace

void register_allocation_with_redzone(uintptr_t begin, std::size_t bytes, std::size_t redzone, const char* what) {
  add(begin, bytes, redzone, what);
}

bool find_allocation(uintptr_t address, Allocation& out) {
  std::shared_lock<std::shared_mutex> lock(g_mutex);
  auto next = g_allocations.upper_bound(address);
  if (next != g_allocations.begin()) {
    const Allocation& a = std::prev(next)->second;
    if (address < a.end + a.redzone) {
      out = a;
      return true;
    }
  }
  if (next != g_allocations.end() && address + next->second.redzone >= next->second.begin) {
    out = next->second;  // in its front redzone
    return true;
  }
  return false;
}

void* device_malloc(std::size_t bytes, const char* what) {
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer's own redzones guard the exact size.
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes == 0 ? 1 : bytes) != 0) {
    return nullptr;
  }
  if (options().poison_allocations) {
    std::memset(p, 0xff, bytes);
  }
  add(reinterpret_cast<uintptr_t>(p), bytes, 0, what);
  return p;
#else
  // 256-byte alignment, as cudaMalloc's: the user range starts 256 bytes into
  // the block, the last kRedzone bytes of that padding being the front redzone.
  static_assert(kRedzone <= 256, "the redzone must fit the alignment padding");
  const std::size_t padded = (256 + bytes + kRedzone + 255) / 256 * 256;
  auto* raw = static_cast<unsigned char*>(std::aligned_alloc(256, padded));
  if (raw == nullptr) {
    return nullptr;
  }
  unsigned char* user = raw + 256;
  if (options().poison_allocations) {
    std::memset(user, 0xff, bytes);
  }
  add(reinterpret_cast<uintptr_t>(user), bytes, kRedzone, what);
  return user;
#endif
}

void device_free(void* p) {
  if (p == nullptr) {
    return;
  }
  const auto user = reinterpret_cast<uintptr_t>(p);
  {
    std::unique_lock<std::shared_mutex> lock(g_mutex);
    g_allocations.erase(user);
  }
#if defined(__SANITIZE_ADDRESS__)
  std::free(p);
#else
  std::free(static_cast<unsigned char*>(p) - 256);
#endif
}

}  // namespace emu::detail

namespace emu {

void register_allocation(const void* base, std::size_t bytes, const char* what) {
  detail::add(reinterpret_cast<uintptr_t>(base), bytes, 0, what);
}

void unregister_allocation(const void* base) {
  std::unique_lock<std::shared_mutex> lock(detail::g_mutex);
  detail::g_allocations.erase(reinterpret_cast<uintptr_t>(base));
}

}  // namespace emu
