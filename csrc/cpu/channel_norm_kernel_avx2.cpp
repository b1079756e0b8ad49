// The AVX2 + FMA build of the CPU kernels in channel_norm_kernel_impl.h, chosen at
// load time by channel_norm_kernel.cpp on CPUs that have the instructions.
//
// The build compiles every file with the same flags, so this one switches the
// instruction set itself with GCC's target pragma, and only around the vector
// code: ATen's and the standard headers are included first, under the baseline
// ISA, so that the inline functions they define (which the linker may merge with
// other files' copies) never contain AVX2 instructions. Under the pragma come the
// activation table (its templates are instantiated on AVX2 vectors, so they must
// be compiled for AVX2 here), at::vec and the kernels; the vector types and the
// kernels live in namespaces of their own (at::vec::AVX2,
// fusednorm::detail::AVX2), and the kernel table is constant-initialised, so no
// AVX2 code runs unless it is chosen.
#include "channel_norm_kernel_isa.h"

#if FUSEDNORM_CPU_BUILDS_AVX2

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <vector>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
// Vectors passed by value between these functions trigger GCC's note that the
// ABI of 32-byte arguments changed in GCC 4.6; nothing here crosses that line.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
// The pragma enables the instructions but, unlike -mavx2, does not define the
// feature macros; sleef.h (through at::vec) declares its AVX entry points only
// when they are defined.
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "channel_norm_kernel_impl.h"
#pragma GCC diagnostic pop
#pragma GCC pop_options

#endif  // FUSEDNORM_CPU_BUILDS_AVX2
