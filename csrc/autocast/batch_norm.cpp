// Autocast policy of batch_norm_act: see autocast_kernel.h.
#include <torch/library.h>

#include "autocast_kernel.h"
#include "fusednorm/ops.h"

namespace fusednorm {

using autocast_detail::AutocastKernel;
constexpr size_t kResidual = 5;  // batch_norm_act's residual argument

TORCH_LIBRARY_IMPL(fusednorm, AutocastCPU, m) {
  m.impl("batch_norm_act", &AutocastKernel<c10::DispatchKey::AutocastCPU, kResidual, &batch_norm_act>::call);
}

TORCH_LIBRARY_IMPL(fusednorm, AutocastCUDA, m) {
  m.impl("batch_norm_act", &AutocastKernel<c10::DispatchKey::AutocastCUDA, kResidual, &batch_norm_act>::call);
}

}  // namespace fusednorm
