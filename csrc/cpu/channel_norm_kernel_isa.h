// Whether this compiler and target get the AVX2 builds of the CPU kernels
// (channel_norm_kernel_avx2.cpp, row_norm_kernel_avx2.cpp): x86-64 with GCC,
// whose target pragma lets one translation unit use AVX2 while the rest of the
// library keeps the baseline ISA.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FUSEDNORM_CPU_BUILDS_AVX2 1
#else
#define FUSEDNORM_CPU_BUILDS_AVX2 0
#endif

namespace fusednorm::detail {

// Whether to run the AVX2 kernels (defined in channel_norm_kernel.cpp): built
// with them, on a CPU that has the instructions they were built for, with ATen
// itself at AVX2 or above (ATEN_CPU_CAPABILITY=default selects the baseline
// kernels here as it does for PyTorch's own).
bool cpu_kernels_use_avx2();

}  // namespace fusednorm::detail
