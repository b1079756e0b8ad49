// CPU kernels of the channel-norm engine: the baseline-ISA build of
// channel_norm_kernel_impl.h, and the choice, at load time, between it and the
// AVX2 build of channel_norm_kernel_avx2.cpp.
#include <ATen/Context.h>

#include <string>

#include "channel_norm_kernel_isa.h"

#define CPU_CAPABILITY DEFAULT
#include "channel_norm_kernel_impl.h"

namespace fusednorm::detail {

#if FUSEDNORM_CPU_BUILDS_AVX2
namespace AVX2 {
const ChannelNormKernels& cpu_channel_norm_kernels();
}
#endif

bool cpu_kernels_use_avx2() {
#if FUSEDNORM_CPU_BUILDS_AVX2
  const std::string aten_capability = at::get_cpu_capability();
  const bool aten_uses_avx2 = aten_capability == "AVX2" || aten_capability == "AVX512";
  return aten_uses_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

namespace {

const ChannelNormKernels& select_cpu_kernels() {
#if FUSEDNORM_CPU_BUILDS_AVX2
  if (cpu_kernels_use_avx2()) {
    return AVX2::cpu_channel_norm_kernels();
  }
#endif
  return DEFAULT::cpu_channel_norm_kernels();
}

const bool kRegistered = register_channel_norm_kernels(c10::DeviceType::CPU, &select_cpu_kernels());

}  // namespace
}  // namespace fusednorm::detail
