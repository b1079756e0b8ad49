// ATen side of the CUDA row-norm kernels: checks, device guard, stream, output
// allocation (caching allocator), and registration with the row-norm engine.
// The kernels themselves (row_norm_kernel.cu) never see an ATen type.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../ops/row_norm.h"
#include "aten_launch_utils.h"
#include "row_norm_launch.h"

namespace fusednorm::detail {
namespace {

at::ScalarType acc_dtype_of(const RowNormInputs& in) { return accumulation_dtype(in.x.scalar_type()); }

// The kernels address every x-shaped tensor with x's offsets and every
// per-column or per-row one as a dense vector.
void check_like_x(const at::Tensor& t, const RowNormInputs& in, const char* what) {
  TORCH_CHECK(on_kernel_device(t) && t.device() == in.x.device() && t.scalar_type() == in.x.scalar_type() &&
                  t.numel() == in.M * in.N && t.is_contiguous(),
              "fusednorm: ", what, " must be a contiguous CUDA tensor shaped and typed like the input");
}

void check_acc_vector(const at::Tensor& t, const RowNormInputs& in, int64_t numel, const char* what) {
  TORCH_CHECK(
      t.device() == in.x.device() && t.is_contiguous() && t.scalar_type() == acc_dtype_of(in) && t.numel() == numel,
      "fusednorm: ", what, " must be a contiguous accumulation-dtype tensor of ", numel, " elements");
}

cuda::RowInputs raw_inputs(const RowNormInputs& in) {
  check_like_x(in.x, in, "input");
  if (in.residual.defined()) {
    check_like_x(in.residual, in, "residual");
  }
  if (in.weight.defined()) {
    check_acc_vector(in.weight, in, in.N, "weight");
  }
  if (in.bias.defined()) {
    check_acc_vector(in.bias, in, in.N, "bias");
  }
  cuda::RowInputs raw;
  raw.x = in.x.const_data_ptr();
  raw.residual = optional_ptr(in.residual);
  raw.weight = optional_ptr(in.weight);
  raw.bias = optional_ptr(in.bias);
  raw.rms = in.mode == RowNormMode::kRMSNorm;
  raw.act.params = in.act.params;
  if (in.act.params.kind == math::ActivationKind::kPReLU) {
    const at::Tensor& w = in.act.prelu_weight;
    TORCH_CHECK(w.defined(), "fusednorm: PReLU needs its weight");
    check_acc_vector(w, in, w.numel() == 1 ? 1 : in.prelu.channels, "the PReLU weight");
    raw.act.prelu_weight = w.const_data_ptr();
    raw.act.prelu_per_channel = w.numel() > 1;
  }
  raw.prelu = in.prelu;
  return raw;
}

cuda::RowGeometry geometry(const RowNormInputs& in) { return {in.M, in.N}; }

void cuda_forward(const RowNormInputs& in, double eps, const at::Tensor& out, const at::Tensor& mean,
                  const at::Tensor& rstd) {
  const c10::cuda::CUDAGuard guard(in.x.device());
  cuda::RowForwardArgs args;
  args.in = raw_inputs(in);
  check_like_x(out, in, "out");
  if (mean.defined()) {
    check_acc_vector(mean, in, in.M, "mean");
  }
  check_acc_vector(rstd, in, in.M, "rstd");
  args.eps = eps;
  args.out = out.mutable_data_ptr();
  args.mean = optional_mutable_ptr(mean);
  args.rstd = rstd.mutable_data_ptr();
  const cuda::DType dtype = to_cuda_dtype(in.x.scalar_type());
  const cuda::RowPlan plan = cuda::plan_rows(geometry(in), dtype, {args.in.x, args.in.residual, args.out});
  C10_CUDA_CHECK(cuda::launch_row_norm_forward(geometry(in), dtype, plan, args, at::cuda::getCurrentCUDAStream()));
}

RowNormPartials cuda_backward(const RowNormInputs& in, const at::Tensor& grad_out, const at::Tensor& mean,
                              const at::Tensor& rstd, RowNormGradRequest want, const at::Tensor& grad_input,
                              const at::Tensor& grad_residual) {
  const c10::cuda::CUDAGuard guard(in.x.device());
  cuda::RowBackwardArgs args;
  args.in = raw_inputs(in);
  check_like_x(grad_out, in, "grad_out");
  if (grad_input.defined()) {
    check_like_x(grad_input, in, "grad_input");
  }
  if (grad_residual.defined()) {
    check_like_x(grad_residual, in, "grad_residual");
  }
  if (mean.defined()) {
    check_acc_vector(mean, in, in.M, "mean");
  }
  check_acc_vector(rstd, in, in.M, "rstd");
  args.grad_out = grad_out.const_data_ptr();
  args.mean = optional_ptr(mean);
  args.rstd = rstd.const_data_ptr();
  args.grad_input = optional_mutable_ptr(grad_input);
  args.grad_residual = optional_mutable_ptr(grad_residual);

  const cuda::DType dtype = to_cuda_dtype(in.x.scalar_type());
  const cuda::RowPlan plan = cuda::plan_rows(
      geometry(in), dtype, {args.grad_out, args.in.x, args.in.residual, args.grad_input, args.grad_residual});
  const auto options = in.x.options().dtype(acc_dtype_of(in));
  RowNormPartials partials;
  if (want.weight) {
    partials.weight = at::empty({plan.partial_blocks, in.N}, options);
  }
  if (want.bias) {
    partials.bias = at::empty({plan.partial_blocks, in.N}, options);
  }
  if (want.prelu) {
    partials.prelu = in.prelu.along_rows ? at::empty({in.M}, options) : at::empty({plan.partial_blocks, in.N}, options);
  }
  args.partial_weight = optional_mutable_ptr(partials.weight);
  args.partial_bias = optional_mutable_ptr(partials.bias);
  if (want.prelu) {
    (in.prelu.along_rows ? args.prelu_rows : args.partial_prelu) = partials.prelu.mutable_data_ptr();
  }
  C10_CUDA_CHECK(cuda::launch_row_norm_backward(geometry(in), dtype, plan, args, at::cuda::getCurrentCUDAStream()));
  return partials;
}

const RowNormKernels kCudaRowNormKernels{
    cuda_forward,
    cuda_backward,
};

const bool registered = register_row_norm_kernels(kKernelDevice, &kCudaRowNormKernels);

}  // namespace
}  // namespace fusednorm::detail
