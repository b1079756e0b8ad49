// Autocast policy of group_norm_act: see autocast_kernel.h.
#include <torch/library.h>

#include "autocast_kernel.h"
#include "fusednorm/ops.h"

namespace fusednorm {

using autocast_detail::AutocastKernel;
constexpr size_t kResidual = 4;  // group_norm_act's residual argument

TORCH_LIBRARY_IMPL(fusednorm, AutocastCPU, m) {
  m.impl("group_norm_act", &AutocastKernel<c10::DispatchKey::AutocastCPU, kResidual, &group_norm_act>::call);
}

TORCH_LIBRARY_IMPL(fusednorm, AutocastCUDA, m) {
  m.impl("group_norm_act", &AutocastKernel<c10::DispatchKey::AutocastCUDA, kResidual, &group_norm_act>::call);
}

}  // namespace fusednorm
