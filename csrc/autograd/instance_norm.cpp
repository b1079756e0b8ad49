// Autograd for fusednorm::instance_norm_act (the same Function as batch norm's:
// the two ops share a signature). Calls only the ops (via include/fusednorm/ops.h).
#include <torch/library.h>

#include "fusednorm/ops.h"
#include "norm_act_function.h"

namespace fusednorm {

TORCH_LIBRARY_IMPL(fusednorm, Autograd, m) {
  m.impl("instance_norm_act",
         &autograd_detail::running_stats_norm_autograd<&instance_norm_act, &instance_norm_act_backward>);
}

}  // namespace fusednorm
