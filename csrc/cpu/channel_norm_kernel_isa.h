// Whether this compiler and target get the AVX2 build of the CPU kernels
// (channel_norm_kernel_avx2.cpp): x86-64 with GCC, whose target pragma lets one
// translation unit use AVX2 while the rest of the library keeps the baseline ISA.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FUSEDNORM_CPU_BUILDS_AVX2 1
#else
#define FUSEDNORM_CPU_BUILDS_AVX2 0
#endif
