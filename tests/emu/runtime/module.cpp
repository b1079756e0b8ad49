// What the emulator learns from the ELF symbol table of the module that holds
// a kernel: the kernel's name, and every `__shared__` variable (a function-local
// thread_local, see cuda_emu.h) with its offset in the module's TLS segment,
// so that shared memory can be poisoned, tracked and swapped between blocks,
// and a kernel's static shared memory counted. Also symbolises addresses.
#include <cxxabi.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "internal.h"

extern "C" {
struct emu_tls_index {
  unsigned long module;
  unsigned long offset;
};
void* __tls_get_addr(emu_tls_index*);
}

namespace emu::detail {
namespace {

std::mutex g_module_mutex;
std::map<std::string, std::unique_ptr<ModuleInfo>> g_modules;  // by path
std::unordered_map<const void*, std::unique_ptr<KernelInfo>> g_kernels;

std::string demangle(const std::string& symbol) {
  // Clones (foo.isra.0, foo.constprop.1) demangle without their suffix.
  const std::string mangled = symbol.substr(0, symbol.find('.'));
  int status = 0;
  char* d = abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status);
  if (status != 0 || d == nullptr) {
    return symbol;
  }
  std::string out(d);
  std::free(d);
  return out;
}

struct Found {
  uintptr_t address = 0;
  std::string path;
  uintptr_t bias = 0;
  std::size_t tls_modid = 0;
  std::size_t tls_size = 0;
  std::vector<std::pair<uintptr_t, uintptr_t>> segments;
  bool ok = false;
};

int find_module(dl_phdr_info* info, std::size_t, void* data) {
  auto* f = static_cast<Found*>(data);
  bool holds = false;
  std::vector<std::pair<uintptr_t, uintptr_t>> segments;
  std::size_t tls_size = 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD) {
      const uintptr_t begin = info->dlpi_addr + ph.p_vaddr, end = begin + ph.p_memsz;
      segments.emplace_back(begin, end);
      holds = holds || (f->address >= begin && f->address < end);
    } else if (ph.p_type == PT_TLS) {
      tls_size = ph.p_memsz;
    }
  }
  if (!holds) {
    return 0;
  }
  if (info->dlpi_name != nullptr && info->dlpi_name[0] != '\0') {
    f->path = info->dlpi_name;
  } else {
    char exe[4096];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    f->path = n > 0 ? std::string(exe, static_cast<std::size_t>(n)) : "/proc/self/exe";
  }
  f->bias = info->dlpi_addr;
  f->tls_modid = info->dlpi_tls_modid;
  f->tls_size = tls_size;
  f->segments = std::move(segments);
  f->ok = true;
  return 1;
}

// Reads the symbol table (.symtab, else .dynsym) of the module's file.
void read_symbols(ModuleInfo& m) {
  const int fd = open(m.path.c_str(), O_RDONLY);
  if (fd < 0) {
    return;
  }
  struct stat st {};
  fstat(fd, &st);
  void* map = mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) {
    return;
  }
  const auto* base = static_cast<const unsigned char*>(map);
  const auto* eh = reinterpret_cast<const ElfW(Ehdr)*>(base);
  const auto* sh = reinterpret_cast<const ElfW(Shdr)*>(base + eh->e_shoff);
  const ElfW(Shdr)* symtab = nullptr;
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type == SHT_SYMTAB) {
      symtab = &sh[i];
    }
  }
  for (int i = 0; i < eh->e_shnum && symtab == nullptr; ++i) {
    if (sh[i].sh_type == SHT_DYNSYM) {
      symtab = &sh[i];
    }
  }
  if (symtab != nullptr) {
    const auto* syms = reinterpret_cast<const ElfW(Sym)*>(base + symtab->sh_offset);
    const std::size_t n = symtab->sh_size / sizeof(ElfW(Sym));
    const char* strtab = reinterpret_cast<const char*>(base + sh[symtab->sh_link].sh_offset);
    std::size_t dynamic_offset = ~std::size_t{0};
    for (std::size_t i = 0; i < n; ++i) {
      if (ELF64_ST_TYPE(syms[i].st_info) == STT_TLS &&
          std::strcmp(strtab + syms[i].st_name, "emu_dynamic_shared") == 0) {
        dynamic_offset = syms[i].st_value;
      }
    }
    std::map<std::size_t, bool> seen_tls;
    for (std::size_t i = 0; i < n; ++i) {
      const ElfW(Sym)& s = syms[i];
      const char* name = strtab + s.st_name;
      const int type = ELF64_ST_TYPE(s.st_info);
      if (type == STT_FUNC && s.st_size > 0 && s.st_shndx != SHN_UNDEF) {
        m.functions.push_back({m.bias + s.st_value, m.bias + s.st_value + s.st_size, name});
      } else if (type == STT_TLS && s.st_shndx != SHN_UNDEF) {
        if (s.st_value == dynamic_offset) {
          if (std::strcmp(name, "emu_dynamic_shared") == 0) {
            SharedVar v;
            v.tls_offset = s.st_value;
            v.size = s.st_size;
            v.name = "extern __shared__ (dynamic shared memory)";
            v.dynamic = true;
            m.dynamic_var = static_cast<int>(m.shared.size());
            m.shared.push_back(v);
          }
          continue;  // an extern __shared__ name aliased to the buffer
        }
        // __shared__ variables are function-local thread_locals: "_ZZ<function>E<name>".
        if (std::strncmp(name, "_ZZ", 3) != 0 || std::strncmp(name, "_ZZN3emu", 8) == 0 || s.st_size == 0 ||
            seen_tls[s.st_value]) {
          continue;
        }
        seen_tls[s.st_value] = true;
        SharedVar v;
        v.tls_offset = s.st_value;
        v.size = s.st_size;
        v.owner = name;
        v.name = demangle(name);
        m.shared.push_back(v);
      }
    }
  }
  munmap(map, static_cast<std::size_t>(st.st_size));
  std::sort(m.functions.begin(), m.functions.end(),
            [](const ModuleInfo::Function& a, const ModuleInfo::Function& b) { return a.begin < b.begin; });
}

ModuleInfo* module_for(uintptr_t address) {
  Found f;
  f.address = address;
  dl_iterate_phdr(find_module, &f);
  if (!f.ok) {
    return nullptr;
  }
  auto& slot = g_modules[f.path];
  if (!slot) {
    slot = std::make_unique<ModuleInfo>();
    slot->path = f.path;
    slot->bias = f.bias;
    slot->tls_modid = f.tls_modid;
    slot->tls_size = f.tls_size;
    slot->segments = f.segments;
    read_symbols(*slot);
  }
  return slot.get();
}

const ModuleInfo::Function* function_at(const ModuleInfo& m, uintptr_t address) {
  auto it = std::upper_bound(m.functions.begin(), m.functions.end(), address,
                             [](uintptr_t a, const ModuleInfo::Function& f) { return a < f.begin; });
  if (it == m.functions.begin()) {
    return nullptr;
  }
  --it;
  return address < it->end ? &*it : nullptr;
}

// nvcc's register counts, from the CSV that tests/emu/ptxas_report.py writes
// (columns kernel_mangled,registers,...), when EMU_PTXAS_CSV names it.
const std::unordered_map<std::string, int>& ptxas_registers() {
  static const std::unordered_map<std::string, int> table = [] {
    std::unordered_map<std::string, int> t;
    const char* path = std::getenv("EMU_PTXAS_CSV");
    if (path == nullptr) {
      return t;
    }
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::istringstream row(line);
      std::string mangled, regs;
      if (std::getline(row, mangled, ',') && std::getline(row, regs, ',')) {
        t[mangled] = std::atoi(regs.c_str());
      }
    }
    return t;
  }();
  return table;
}

}  // namespace

KernelInfo& kernel_info(const void* address) {
  std::lock_guard<std::mutex> lock(g_module_mutex);
  auto& slot = g_kernels[address];
  if (slot) {
    return *slot;
  }
  slot = std::make_unique<KernelInfo>();
  KernelInfo& k = *slot;
  k.address = address;
  k.module = module_for(reinterpret_cast<uintptr_t>(address));
  if (k.module == nullptr) {
    std::fprintf(stderr, "emu: no loaded module holds kernel %p\n", address);
    std::abort();
  }
  const ModuleInfo::Function* f = function_at(*k.module, reinterpret_cast<uintptr_t>(address));
  k.mangled = f != nullptr ? f->name : "kernel@" + std::to_string(reinterpret_cast<uintptr_t>(address));
  k.name = demangle(k.mangled);
  if (k.mangled.rfind("_Z", 0) == 0) {
    const std::string prefix = "_ZZ" + k.mangled.substr(2) + "E";
    for (std::size_t i = 0; i < k.module->shared.size(); ++i) {
      const SharedVar& v = k.module->shared[i];
      if (!v.dynamic && v.owner.rfind(prefix, 0) == 0) {
        k.own_shared.push_back(static_cast<int>(i));
        k.static_shared += v.size;
      }
    }
  }
  // Without cudaFuncAttributeMaxDynamicSharedMemorySize, static plus dynamic
  // shared memory must stay within 48 KB.
  k.max_dynamic_shared = static_cast<int>(k.static_shared >= 48 * 1024 ? 0 : 48 * 1024 - k.static_shared);
  const auto& regs = ptxas_registers();
  if (auto it = regs.find(k.mangled); it != regs.end()) {
    k.registers = it->second;
    k.registers_known = true;
  }
  return k;
}

const ThreadShared& thread_shared(ModuleInfo& m) {
  thread_local std::unordered_map<const ModuleInfo*, ThreadShared> cache;
  auto it = cache.find(&m);
  if (it != cache.end()) {
    return it->second;
  }
  ThreadShared ts;
  if (m.tls_size > 0) {
    emu_tls_index base{m.tls_modid, 0};
    ts.tls_lo = reinterpret_cast<uintptr_t>(__tls_get_addr(&base));
    ts.tls_hi = ts.tls_lo + m.tls_size;
    for (std::size_t i = 0; i < m.shared.size(); ++i) {
      const SharedVar& v = m.shared[i];
      const uintptr_t begin = ts.tls_lo + v.tls_offset;
      ts.ranges.push_back({begin, begin + v.size, static_cast<int>(i)});
      if (v.dynamic) {
        ts.dynamic_begin = begin;
      }
    }
  }
  std::sort(ts.ranges.begin(), ts.ranges.end(),
            [](const SharedRange& a, const SharedRange& b) { return a.begin < b.begin; });
  if (!ts.ranges.empty()) {
    ts.lo = ts.ranges.front().begin;
    for (const SharedRange& r : ts.ranges) {
      ts.hi = std::max(ts.hi, r.end);
    }
  }
  return cache.emplace(&m, std::move(ts)).first->second;
}

const SharedRange* find_shared(const ThreadShared& ts, uintptr_t address) {
  if (address < ts.lo || address >= ts.hi) {
    return nullptr;
  }
  auto it = std::upper_bound(ts.ranges.begin(), ts.ranges.end(), address,
                             [](uintptr_t a, const SharedRange& r) { return a < r.begin; });
  if (it == ts.ranges.begin()) {
    return nullptr;
  }
  --it;
  return address < it->end ? &*it : nullptr;
}

std::string symbolize(uintptr_t pc) {
  static std::mutex mutex;
  static std::unordered_map<uintptr_t, std::string> cache;
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(pc); it != cache.end()) {
    return it->second;
  }
  std::string out;
  ModuleInfo* m = nullptr;
  {
    std::lock_guard<std::mutex> modules(g_module_mutex);
    m = module_for(pc);
  }
  if (m == nullptr) {
    out = "0x" + std::to_string(pc);
  } else {
    const ModuleInfo::Function* f = function_at(*m, pc);
    char off[32];
    std::snprintf(off, sizeof(off), "+0x%lx", static_cast<unsigned long>(f != nullptr ? pc - f->begin : pc - m->bias));
    out = (f != nullptr ? demangle(f->name) : m->path) + off;
    // Source line: addr2line, when present (the message stays useful without it).
    char cmd[4096];
    std::snprintf(cmd, sizeof(cmd), "addr2line -i -e '%s' 0x%lx 2>/dev/null", m->path.c_str(),
                  static_cast<unsigned long>(pc - m->bias - 1));
    if (FILE* p = popen(cmd, "r")) {
      char line[2048];
      std::string lines;
      while (std::fgets(line, sizeof(line), p) != nullptr) {
        std::string l(line);
        while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) {
          l.pop_back();
        }
        if (!l.empty() && l.find("??") == std::string::npos) {
          lines += (lines.empty() ? "" : " <- ") + l;
        }
      }
      pclose(p);
      if (!lines.empty()) {
        out = lines + " (" + out + ")";
      }
    }
  }
  cache[pc] = out;
  return out;
}

}  // namespace emu::detail
