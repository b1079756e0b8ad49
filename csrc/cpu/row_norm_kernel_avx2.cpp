// The AVX2 + FMA build of the CPU kernels in row_norm_kernel_impl.h, chosen at
// load time by row_norm_kernel.cpp on CPUs that have the instructions. Built as
// channel_norm_kernel_avx2.cpp is (see there why): ATen's and the standard
// headers first, under the baseline ISA, then the target pragma around at::vec
// and the kernels.
#include "channel_norm_kernel_isa.h"

#if FUSEDNORM_CPU_BUILDS_AVX2

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/ArrayRef.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "row_norm_kernel_impl.h"
#pragma GCC diagnostic pop
#pragma GCC pop_options

#endif  // FUSEDNORM_CPU_BUILDS_AVX2
