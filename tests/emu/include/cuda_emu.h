// cuda_emu.h: CUDA C++ device code compiled as host C++ and run on the CPU
// (correctness and memory-traffic checks, not speed). The build force-includes
// it (g++ -include cuda_emu.h) into every translation unit that holds kernels
// or launches them; tests/emu/README.md describes the design.
//
// In short: each CUDA thread is a fiber, switched only at barriers and warp
// collectives; all blocks of a launch run on the launching OS thread, so
// `__shared__` is `thread_local` and the runtime swaps shared memory between
// blocks when several are resident at once (cooperative launches). Warp
// collectives exchange values through per-warp slots and check their masks.
#pragma once

// The toolkit's headers give the host types (dim3, uint3, cudaError_t,
// cudaStream_t, cudaFuncAttributes) and the host implementations of __half
// and __nv_bfloat16.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------------------
// Execution- and memory-space qualifiers. host_defines.h makes them empty for
// a host compiler; an empty __shared__ would silently turn shared arrays into
// per-thread ones.
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __constant__
#undef __managed__
#undef __forceinline__
#undef __launch_bounds__
#undef __grid_constant__
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __launch_bounds__(...)
// Always inlined, as nvcc does, so that a memory access is attributed to the
// kernel instruction that makes it (the traffic counters group warp requests
// by instruction address).
#define __forceinline__ inline __attribute__((always_inline))
// Block-scope thread_local is static: one instance per OS thread, and a
// launch runs all its blocks on one OS thread (see above). `extern __shared__`
// arrays become undefined thread_local symbols that the build aliases to one
// dynamic shared-memory buffer (gen_dynamic_shared.py), as all of them alias
// on the GPU.
#define __shared__ thread_local

#define FUSEDNORM_CUDA_EMULATION 1

// Functions of this header that are instantiated in kernel translation units
// but must not be seen by the access checks (they move the emulator's own data).
#define EMU_UNCHECKED __attribute__((no_sanitize("thread", "address"), noinline))

namespace emu {

using Site = std::source_location;

// ---- Built-in variables of the running CUDA thread (runtime.cpp). ----
uint3 thread_idx();
uint3 block_idx();
dim3 block_dim();
dim3 grid_dim();
int lane_id();

// ---- Synchronisation. ----
void block_barrier(const Site& site);
// __syncthreads_count / _and / _or: op 0 = count, 1 = and, 2 = or.
int block_barrier_reduce(int predicate, int op, const Site& site);
void warp_sync(unsigned mask, const Site& site);
void grid_sync(const Site& site);
bool grid_is_cooperative();
[[noreturn]] void trap(const char* what, const Site& site);

// ---- Warp collectives. ----
// Publishes `n` bytes at `in` for the lanes of `mask` and waits for them; then
// copies lane `src`'s value to `out` (src < 0: the caller's own). `op` names
// the intrinsic in reports.
void warp_shuffle(unsigned mask, const void* in, void* out, std::size_t n, int src, const char* op, const Site& site);
// Every lane of `mask` contributes `n` bytes; `all` receives 32 slots of 16
// bytes (lanes outside the mask zero). Returns the mask of contributing lanes.
unsigned warp_gather(unsigned mask, const void* in, std::size_t n, unsigned char* all, const char* op,
                     const Site& site);
unsigned active_mask();

template <typename T>
T shuffle(unsigned mask, T var, int src, const char* op, const Site& site) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 16, "shuffle of a type the emulator cannot move");
  T out;
  warp_shuffle(mask, &var, &out, sizeof(T), src, op, site);
  return out;
}

// ---- Atomics (performed and recorded by the runtime). ----
enum class AtomicType : int { kI32, kU32, kI64, kU64, kF32, kF64, kF16, kBF16 };
enum class AtomicOp : int { kAdd, kSub, kExch, kMin, kMax, kInc, kDec, kCAS, kAnd, kOr, kXor };
void atomic(void* address, AtomicType type, AtomicOp op, const void* value, const void* compare, void* old,
            const Site& site);

template <typename T>
constexpr AtomicType atomic_type() {
  if constexpr (std::is_same_v<T, float>) {
    return AtomicType::kF32;
  } else if constexpr (std::is_same_v<T, double>) {
    return AtomicType::kF64;
  } else if constexpr (std::is_same_v<T, __half>) {
    return AtomicType::kF16;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return AtomicType::kBF16;
  } else if constexpr (std::is_integral_v<T> && sizeof(T) == 4) {
    return std::is_signed_v<T> ? AtomicType::kI32 : AtomicType::kU32;
  } else {
    static_assert(std::is_integral_v<T> && sizeof(T) == 8, "atomic on a type CUDA has no atomic for");
    return std::is_signed_v<T> ? AtomicType::kI64 : AtomicType::kU64;
  }
}

template <typename T>
T atomic_apply(T* address, AtomicOp op, T value, const Site& site, const T* compare = nullptr) {
  T old;
  atomic(address, atomic_type<T>(), op, &value, compare, &old, site);
  return old;
}

// ---- Launches. ----
struct LaunchConfig {
  dim3 grid;
  dim3 block;
  std::size_t shared_bytes = 0;
  cudaStream_t stream = nullptr;
  bool cooperative = false;
};

// Runs entry(context) once per CUDA thread of the grid; returns the launch's
// error (also left for cudaGetLastError). `kernel` identifies the kernel
// (name, static shared memory, attributes).
cudaError_t launch_erased(const void* kernel, const LaunchConfig& config, void (*entry)(void*), void* context);

template <typename Kernel, typename Params>
struct KernelCall {
  Kernel kernel;
  const Params* params;
  // Copies the parameters into the kernel's by-value arguments on the fiber's
  // stack, as the GPU gives every thread its own copy.
  template <std::size_t... I>
  EMU_UNCHECKED static void call(const KernelCall* self, std::index_sequence<I...>) {
    self->kernel(std::get<I>(*self->params)...);
  }
  EMU_UNCHECKED static void run(void* self) {
    call(static_cast<const KernelCall*>(self), std::make_index_sequence<std::tuple_size_v<Params>>{});
  }
};

// kernel<<<config>>>(args...): the arguments are converted to the parameter
// types once, at the launch, as CUDA does.
template <typename... P, typename... A>
cudaError_t launch(void (*kernel)(P...), const LaunchConfig& config, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  using Params = std::tuple<std::decay_t<P>...>;
  const Params params(std::forward<A>(args)...);
  KernelCall<void (*)(P...), Params> call{kernel, &params};
  return launch_erased(reinterpret_cast<const void*>(kernel), config, &decltype(call)::run, &call);
}

// cudaLaunchKernel / cudaLaunchCooperativeKernel: args[i] points at parameter i.
template <typename... P, std::size_t... I>
cudaError_t launch_packed(void (*kernel)(P...), const LaunchConfig& config, void** args, std::index_sequence<I...>) {
  return launch(kernel, config, *static_cast<std::decay_t<P>*>(args[I])...);
}

// ---- Kernel attributes (occupancy model, limits). ----
cudaError_t func_get_attributes(cudaFuncAttributes* attributes, const void* kernel);
cudaError_t func_set_attribute(const void* kernel, cudaFuncAttribute attribute, int value);
cudaError_t occupancy(int* blocks, const void* kernel, int block_size, std::size_t dynamic_shared);

// ---- Device memory: allocations the access checks know (with redzones). ----
void register_allocation(const void* base, std::size_t bytes, const char* what);
void unregister_allocation(const void* base);

}  // namespace emu

// ---------------------------------------------------------------------------
// Built-in variables.
#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())
inline constexpr int warpSize = 32;

// ---------------------------------------------------------------------------
// Synchronisation (the source location is the caller's line, so divergence is
// judged at source level whatever the optimiser duplicates).
inline void __syncthreads(const emu::Site& site = emu::Site::current()) { emu::block_barrier(site); }
inline int __syncthreads_count(int p, const emu::Site& site = emu::Site::current()) {
  return emu::block_barrier_reduce(p, 0, site);
}
inline int __syncthreads_and(int p, const emu::Site& site = emu::Site::current()) {
  return emu::block_barrier_reduce(p, 1, site);
}
inline int __syncthreads_or(int p, const emu::Site& site = emu::Site::current()) {
  return emu::block_barrier_reduce(p, 2, site);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const emu::Site& site = emu::Site::current()) {
  emu::warp_sync(mask, site);
}
// Blocks of a launch run on one OS thread and fibers switch only at the
// synchronisation points above: every write is visible to every later read.
// Memory-ordering bugs beyond barriers are out of the emulator's reach.
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}
[[noreturn]] inline void __trap(const emu::Site& site = emu::Site::current()) { emu::trap("__trap()", site); }
inline unsigned __activemask() { return emu::active_mask(); }

// ---------------------------------------------------------------------------
// Warp shuffles, votes and reductions.
template <typename T>
T __shfl_sync(unsigned mask, T var, int src, int width = warpSize, const emu::Site& site = emu::Site::current()) {
  const int lane = emu::lane_id();
  const int base = lane / width * width;
  return emu::shuffle(mask, var, base + ((src % width + width) % width), "__shfl_sync", site);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                  const emu::Site& site = emu::Site::current()) {
  const int lane = emu::lane_id();
  int src = lane ^ lane_mask;
  // A lane may read an earlier width-group but not a later one (it keeps its own value).
  if (src >= warpSize || src / width > lane / width) {
    src = -1;
  }
  return emu::shuffle(mask, var, src, "__shfl_xor_sync", site);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   const emu::Site& site = emu::Site::current()) {
  const int lane = emu::lane_id();
  const int pos = lane % width + static_cast<int>(delta);
  return emu::shuffle(mask, var, pos < width ? lane + static_cast<int>(delta) : -1, "__shfl_down_sync", site);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 const emu::Site& site = emu::Site::current()) {
  const int lane = emu::lane_id();
  const int pos = lane % width - static_cast<int>(delta);
  return emu::shuffle(mask, var, pos >= 0 ? lane - static_cast<int>(delta) : -1, "__shfl_up_sync", site);
}
inline unsigned __ballot_sync(unsigned mask, int pred, const emu::Site& site = emu::Site::current()) {
  const int p = pred != 0;
  unsigned char all[32 * 16];
  emu::warp_gather(mask, &p, sizeof(p), all, "__ballot_sync", site);
  unsigned r = 0;
  for (int l = 0; l < 32; ++l) {
    int v;
    std::memcpy(&v, all + 16 * l, sizeof(v));
    r |= static_cast<unsigned>(v != 0) << l;
  }
  return r & mask;
}
inline int __any_sync(unsigned mask, int pred, const emu::Site& site = emu::Site::current()) {
  return __ballot_sync(mask, pred, site) != 0;
}
inline int __all_sync(unsigned mask, int pred, const emu::Site& site = emu::Site::current()) {
  return __ballot_sync(mask, pred, site) == mask;
}
namespace emu {
template <typename T, typename F>
T warp_reduce(unsigned mask, T value, const char* op, const Site& site, const F& f) {
  unsigned char all[32 * 16];
  const unsigned lanes = warp_gather(mask, &value, sizeof(T), all, op, site);
  bool first = true;
  T r{};
  for (int l = 0; l < 32; ++l) {
    if ((lanes >> l) & 1u) {
      T v;
      std::memcpy(&v, all + 16 * l, sizeof(T));
      r = first ? v : f(r, v);
      first = false;
    }
  }
  return r;
}
}  // namespace emu
inline unsigned __reduce_add_sync(unsigned mask, unsigned v, const emu::Site& site = emu::Site::current()) {
  return emu::warp_reduce(mask, v, "__reduce_add_sync", site, [](unsigned a, unsigned b) { return a + b; });
}
inline int __reduce_add_sync(unsigned mask, int v, const emu::Site& site = emu::Site::current()) {
  return static_cast<int>(__reduce_add_sync(mask, static_cast<unsigned>(v), site));
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned v, const emu::Site& site = emu::Site::current()) {
  return emu::warp_reduce(mask, v, "__reduce_min_sync", site, [](unsigned a, unsigned b) { return a < b ? a : b; });
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned v, const emu::Site& site = emu::Site::current()) {
  return emu::warp_reduce(mask, v, "__reduce_max_sync", site, [](unsigned a, unsigned b) { return a < b ? b : a; });
}
inline unsigned __reduce_and_sync(unsigned mask, unsigned v, const emu::Site& site = emu::Site::current()) {
  return emu::warp_reduce(mask, v, "__reduce_and_sync", site, [](unsigned a, unsigned b) { return a & b; });
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned v, const emu::Site& site = emu::Site::current()) {
  return emu::warp_reduce(mask, v, "__reduce_or_sync", site, [](unsigned a, unsigned b) { return a | b; });
}

// ---------------------------------------------------------------------------
// Atomics on global and shared memory.
#define EMU_ATOMIC_SITE const emu::Site& site = emu::Site::current()
template <typename T>
T atomicAdd(T* p, std::type_identity_t<T> v, EMU_ATOMIC_SITE) {
  return emu::atomic_apply(p, emu::AtomicOp::kAdd, v, site);
}
template <typename T>
T atomicSub(T* p, std::type_identity_t<T> v, EMU_ATOMIC_SITE) {
  return emu::atomic_apply(p, emu::AtomicOp::kSub, v, site);
}
template <typename T>
T atomicExch(T* p, std::type_identity_t<T> v, EMU_ATOMIC_SITE) {
  return emu::atomic_apply(p, emu::AtomicOp::kExch, v, site);
}
template <typename T>
T atomicMin(T* p, std::type_identity_t<T> v, EMU_ATOMIC_SITE) {
  return emu::atomic_apply(p, emu::AtomicOp::kMin, v, site);
}
template <typename T>
T atomicMax(T* p, std::type_identity_t<T> v, EMU_ATOMIC_SITE) {
  return emu::atomic_apply(p, emu::AtomicOp::kMax, v, site);
}
inline unsigned atomicInc(unsigned* p, unsigned v, EMU_ATOMIC_SITE) {
  return emu::atomic_apply(p, emu::AtomicOp::kInc, v, site);
}
inline unsigned atomicDec(unsigned* p, unsigned v, EMU_ATOMIC_SITE) {
  return emu::atomic_apply(p, emu::AtomicOp::kDec, v, site);
}
template <typename T>
T atomicAnd(T* p, std::type_identity_t<T> v, EMU_ATOMIC_SITE) {
  return emu::atomic_apply(p, emu::AtomicOp::kAnd, v, site);
}
template <typename T>
T atomicOr(T* p, std::type_identity_t<T> v, EMU_ATOMIC_SITE) {
  return emu::atomic_apply(p, emu::AtomicOp::kOr, v, site);
}
template <typename T>
T atomicXor(T* p, std::type_identity_t<T> v, EMU_ATOMIC_SITE) {
  return emu::atomic_apply(p, emu::AtomicOp::kXor, v, site);
}
template <typename T>
T atomicCAS(T* p, std::type_identity_t<T> compare, std::type_identity_t<T> v, EMU_ATOMIC_SITE) {
  return emu::atomic_apply(p, emu::AtomicOp::kCAS, v, site, &compare);
}
#undef EMU_ATOMIC_SITE

// ---------------------------------------------------------------------------
// Device math and integer intrinsics (host equivalents; the approximate GPU
// ones -- rsqrtf, __fdividef, __expf, ... -- are computed exactly here, so
// tests compare with tolerances).
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline double __drcp_rn(double x) { return 1.0 / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __int_as_float(int v) { return std::bit_cast<float>(v); }
inline int __float_as_int(float v) { return std::bit_cast<int>(v); }
inline float __uint_as_float(unsigned v) { return std::bit_cast<float>(v); }
inline unsigned __float_as_uint(float v) { return std::bit_cast<unsigned>(v); }
inline double __longlong_as_double(long long v) { return std::bit_cast<double>(v); }
inline long long __double_as_longlong(double v) { return std::bit_cast<long long>(v); }
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<long long>(a) * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline long long __mul64hi(long long a, long long b) {
  return static_cast<long long>((static_cast<__int128>(a) * b) >> 64);
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) {
    r |= ((x >> i) & 1u) << (31 - i);
  }
  return r;
}
// Cache-hinted loads and stores: plain accesses, inlined into the kernel so
// that the access is attributed to the kernel's instruction.
template <typename T>
__forceinline__ T __ldg(const T* p) {
  return *p;
}
template <typename T>
__forceinline__ T __ldcg(const T* p) {
  return *p;
}
template <typename T>
__forceinline__ T __ldcs(const T* p) {
  return *p;
}
template <typename T>
__forceinline__ T __ldlu(const T* p) {
  return *p;
}
template <typename T>
__forceinline__ void __stcg(T* p, T v) {
  *p = v;
}
template <typename T>
__forceinline__ void __stcs(T* p, T v) {
  *p = v;
}
template <typename T>
__forceinline__ void __stwb(T* p, T v) {
  *p = v;
}
// CUDA's global min/max overloads (common type, as its integer overloads).
template <typename A, typename B, typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(a) : static_cast<C>(b);
}
template <typename A, typename B, typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}

// ---------------------------------------------------------------------------
// Runtime API. Calls are renamed into the emulator, so that in a process that
// also has the real libcudart loaded (torch) it cannot answer them.
#define cudaGetLastError emu_cudaGetLastError
#define cudaPeekAtLastError emu_cudaPeekAtLastError
#define cudaGetErrorString emu_cudaGetErrorString
#define cudaGetErrorName emu_cudaGetErrorName
#define cudaGetDevice emu_cudaGetDevice
#define cudaSetDevice emu_cudaSetDevice
#define cudaGetDeviceCount emu_cudaGetDeviceCount
#define cudaDeviceSynchronize emu_cudaDeviceSynchronize
#define cudaStreamSynchronize emu_cudaStreamSynchronize
#define cudaDeviceGetAttribute emu_cudaDeviceGetAttribute
#define cudaOccupancyMaxActiveBlocksPerMultiprocessor emu_cudaOccupancyMaxActiveBlocksPerMultiprocessor
#define cudaFuncGetAttributes emu_cudaFuncGetAttributes
#define cudaFuncSetAttribute emu_cudaFuncSetAttribute
#define cudaLaunchKernel emu_cudaLaunchKernel
#define cudaLaunchCooperativeKernel emu_cudaLaunchCooperativeKernel
#define cudaMalloc emu_cudaMalloc
#define cudaFree emu_cudaFree
#define cudaMemcpy emu_cudaMemcpy
#define cudaMemcpyAsync emu_cudaMemcpyAsync
#define cudaMemset emu_cudaMemset
#define cudaMemsetAsync emu_cudaMemsetAsync

cudaError_t emu_cudaGetLastError();
cudaError_t emu_cudaPeekAtLastError();
const char* emu_cudaGetErrorString(cudaError_t e);
const char* emu_cudaGetErrorName(cudaError_t e);
cudaError_t emu_cudaGetDevice(int* device);
cudaError_t emu_cudaSetDevice(int device);
cudaError_t emu_cudaGetDeviceCount(int* count);
cudaError_t emu_cudaDeviceSynchronize();
cudaError_t emu_cudaStreamSynchronize(cudaStream_t stream);
cudaError_t emu_cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t emu_cudaMalloc(void** ptr, std::size_t bytes);
template <typename T>
cudaError_t emu_cudaMalloc(T** ptr, std::size_t bytes) {
  return emu_cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t emu_cudaFree(void* ptr);
cudaError_t emu_cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind);
cudaError_t emu_cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                                cudaStream_t stream = nullptr);
cudaError_t emu_cudaMemset(void* dst, int value, std::size_t bytes);
cudaError_t emu_cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t stream = nullptr);

template <typename... P>
cudaError_t emu_cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, void (*kernel)(P...), int block_size,
                                                              std::size_t dynamic_shared) {
  return emu::occupancy(blocks, reinterpret_cast<const void*>(kernel), block_size, dynamic_shared);
}
template <typename... P>
cudaError_t emu_cudaFuncGetAttributes(cudaFuncAttributes* attributes, void (*kernel)(P...)) {
  return emu::func_get_attributes(attributes, reinterpret_cast<const void*>(kernel));
}
template <typename... P>
cudaError_t emu_cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attribute, int value) {
  return emu::func_set_attribute(reinterpret_cast<const void*>(kernel), attribute, value);
}
template <typename... P>
cudaError_t emu_cudaLaunchKernel(void (*kernel)(P...), dim3 grid, dim3 block, void** args, std::size_t shared_bytes = 0,
                                 cudaStream_t stream = nullptr) {
  return emu::launch_packed(kernel, emu::LaunchConfig{grid, block, shared_bytes, stream, false}, args,
                            std::index_sequence_for<P...>{});
}
template <typename... P>
cudaError_t emu_cudaLaunchCooperativeKernel(void (*kernel)(P...), dim3 grid, dim3 block, void** args,
                                            std::size_t shared_bytes = 0, cudaStream_t stream = nullptr) {
  return emu::launch_packed(kernel, emu::LaunchConfig{grid, block, shared_bytes, stream, true}, args,
                            std::index_sequence_for<P...>{});
}
