// The row-norm engine shared by layer norm and RMS norm.
//
// The input is viewed as (M rows, N columns), a row being one instance of the
// trailing normalized_shape. Forward is one kernel per device: per-row
// statistics (mean and variance, or only the mean square for RMS norm), then
// out = act(xhat * weight[col] + bias[col] + residual) with
// xhat = (x - mean) * rstd. Backward is one kernel pass per device that
// recomputes xhat and z (the activation's input) from x and the saved
// statistics, writes grad_input (from two per-row sums) and grad_residual, and
// returns per-column partial sums over blocks of rows, which the device-agnostic
// code reduces to grad_weight, grad_bias and PReLU's weight gradient.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/ArrayRef.h>

#include <array>
#include <optional>
#include <string_view>
#include <tuple>

#include "../math/row_norm.h"
#include "channel_norm.h"

namespace fusednorm::detail {

enum class RowNormMode {
  kLayerNorm,  // xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps)
  kRMSNorm,    // xhat = x * rstd, rstd = 1 / sqrt(mean(x^2) + eps)
};

// What both passes read. Tensors are dense and contiguous.
struct RowNormInputs {
  at::Tensor x;  // the input, any shape with M * N elements
  int64_t M = 0;
  int64_t N = 0;
  at::Tensor residual;  // x's dtype and shape; undefined when absent
  at::Tensor weight;    // N elements, accumulation dtype; undefined when absent
  at::Tensor bias;      // N elements, accumulation dtype; undefined when absent
  RowNormMode mode = RowNormMode::kLayerNorm;
  ActivationArgs act;
  math::PReluChannelMap prelu;
};

struct RowNormGradRequest {
  bool weight = false;
  bool bias = false;
  bool prelu = false;
};

// Partial sums of the backward pass, g = d loss / d (xhat * weight + bias):
struct RowNormPartials {
  at::Tensor weight;  // [P, N]: sums of g * xhat over P disjoint blocks of rows
  at::Tensor bias;    // [P, N]: sums of g
  // Sums of grad_out * z over z <= 0: [M] per row when prelu.along_rows, else [P, N].
  at::Tensor prelu;
};

struct RowNormKernels {
  // Writes out (contiguous, x's dtype), and mean (layer norm only; undefined for
  // RMS norm) and rstd: [M] accumulation dtype.
  void (*forward)(const RowNormInputs& in, double eps, const at::Tensor& out, const at::Tensor& mean,
                  const at::Tensor& rstd);

  // Writes grad_input and grad_residual where defined (contiguous, x's dtype)
  // and returns the requested partials. mean is undefined for RMS norm.
  RowNormPartials (*backward)(const RowNormInputs& in, const at::Tensor& grad_out, const at::Tensor& mean,
                              const at::Tensor& rstd, RowNormGradRequest want, const at::Tensor& grad_input,
                              const at::Tensor& grad_residual);
};

// Kernels for a device type; a clear error when fusednorm was built without it.
const RowNormKernels& row_norm_kernels(c10::DeviceType device);

// Called once per device backend from a static initialiser.
bool register_row_norm_kernels(c10::DeviceType device, const RowNormKernels* kernels);

// ---------------------------------------------------------------------------
// The op level, shared by layer_norm_act and rms_norm_act. `op` names the op in
// error messages.

// The activation arguments of an op call, as the schema has them.
struct ActivationCall {
  std::string_view name;
  c10::ArrayRef<double> params;
  const std::optional<at::Tensor>& weight;
  const std::optional<at::Tensor>& seed;
};

// The checks shared by the real and the meta kernels (symbolic-shape safe). bias
// is always absent for RMS norm.
void check_row_norm_args(std::string_view op, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                         const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& residual, std::optional<double> eps,
                         std::string_view activation);

// eps for RMS norm when none is given: the machine epsilon of the accumulation
// dtype, as torch.rms_norm.
double default_rms_norm_eps(at::ScalarType input_dtype);

// (out, mean, rstd); mean is undefined for RMS norm. mean and rstd have the
// shape of aten::native_layer_norm's: input's leading dims, then a 1 per
// normalized dim.
std::tuple<at::Tensor, at::Tensor, at::Tensor> row_norm_forward(
    std::string_view op, RowNormMode mode, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& residual, double eps, const ActivationCall& activation);

// The meta kernel's forward: outputs with the real kernel's shapes and strides.
std::tuple<at::Tensor, at::Tensor, at::Tensor> row_norm_forward_meta(
    std::string_view op, RowNormMode mode, const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& residual, std::optional<double> eps, std::string_view activation);

// Index of each gradient in output_mask and in the result.
enum RowNormGrad { kGradInput = 0, kGradWeight, kGradBias, kGradResidual, kGradActivationWeight, kNumRowNormGrads };
using RowNormGrads = std::array<at::Tensor, kNumRowNormGrads>;
using RowNormGradMask = std::array<bool, kNumRowNormGrads>;

// Gradients of row_norm_forward; an entry is undefined when not wanted or its
// input is absent. mean is ignored for RMS norm.
RowNormGrads row_norm_backward(std::string_view op, RowNormMode mode, const at::Tensor& grad_out,
                               const at::Tensor& input, c10::SymIntArrayRef normalized_shape,
                               const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                               const std::optional<at::Tensor>& residual, const at::Tensor& mean,
                               const at::Tensor& rstd, const ActivationCall& activation, RowNormGradMask mask);

RowNormGrads row_norm_backward_meta(std::string_view op, const at::Tensor& grad_out, const at::Tensor& input,
                                    c10::SymIntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
                                    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                    const ActivationCall& activation, RowNormGradMask mask);

}  // namespace fusednorm::detail
