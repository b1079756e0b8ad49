// Autograd for fusednorm::batch_norm_act, in C++ so LibTorch programs get
// gradients too. Calls only the ops (via include/fusednorm/ops.h).
#include <torch/library.h>

#include "fusednorm/ops.h"
#include "norm_act_function.h"

namespace fusednorm {

TORCH_LIBRARY_IMPL(fusednorm, Autograd, m) {
  m.impl("batch_norm_act",
         &autograd_detail::running_stats_norm_autograd<&batch_norm_act, &batch_norm_act_backward>);
}

}  // namespace fusednorm
