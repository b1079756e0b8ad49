// Math of the row norms (layer norm, RMS norm) shared by the CPU and CUDA
// kernels: where PReLU's channel runs in a row-major (M, N) view, and the
// input-gradient formula. Torch-free, HOST_DEVICE.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace fusednorm::math {

// PReLU's channel is input dim 1 (torch.nn.PReLU), which in the (M rows, N cols)
// view of a norm over the trailing dims runs either along the rows (dim 1 is a
// row dim) or along the columns (dim 1 is normalized): channel =
// (index / inner) % channels with index the row or the column.
struct PReluChannelMap {
  bool along_rows = false;
  int64_t inner = 1;
  int64_t channels = 1;

  FUSEDNORM_HOST_DEVICE int64_t operator()(int64_t row, int64_t col) const {
    return ((along_rows ? row : col) / inner) % channels;
  }
};

// d loss / d x of xhat = (x - mean) * rstd, given gw = d loss / d xhat and the
// row means of gw and gw * xhat. RMS norm (mean = 0) passes mean_gw = 0: the mean
// is not a function of x there.
template <typename T>
FUSEDNORM_HOST_DEVICE T row_norm_input_grad(T gw, T xhat, T rstd, T mean_gw, T mean_gw_xhat) {
  return rstd * (gw - mean_gw - xhat * mean_gw_xhat);
}

}  // namespace fusednorm::math
