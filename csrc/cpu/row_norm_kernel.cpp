// CPU kernels of the row-norm engine: the baseline-ISA build of
// row_norm_kernel_impl.h, and the choice, at load time, between it and the AVX2
// build of row_norm_kernel_avx2.cpp (the same choice as the channel norms').
#include "channel_norm_kernel_isa.h"

#define CPU_CAPABILITY DEFAULT
#include "row_norm_kernel_impl.h"

namespace fusednorm::detail {

#if FUSEDNORM_CPU_BUILDS_AVX2
namespace AVX2 {
const RowNormKernels& cpu_row_norm_kernels();
}
#endif

namespace {

const RowNormKernels& select_cpu_kernels() {
#if FUSEDNORM_CPU_BUILDS_AVX2
  if (cpu_kernels_use_avx2()) {
    return AVX2::cpu_row_norm_kernels();
  }
#endif
  return DEFAULT::cpu_row_norm_kernels();
}

const bool kRegistered = register_row_norm_kernels(c10::DeviceType::CPU, &select_cpu_kernels());

}  // namespace
}  // namespace fusednorm::detail
