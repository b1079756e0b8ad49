// ATen side of the CUDA channel-norm kernels: checks, device guard, stream,
// output allocation (caching allocator), and registration with the engine. The
// kernels themselves (channel_norm_kernel.cu) never see an ATen type.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <tuple>

#include "../ops/channel_norm.h"
#include "aten_launch_utils.h"
#include "channel_norm_launch.h"

namespace fusednorm::detail {
namespace {

cuda::Geometry geometry(const ChannelView& v) {
  cuda::Geometry g;
  g.N = v.N;
  g.C = v.C;
  g.S = v.S;
  g.channels_last = v.layout == Layout::kChannelsLast;
  return g;
}

void check_view(const ChannelView& v, const char* what) {
  TORCH_CHECK(on_kernel_device(v.data), "fusednorm: ", what, " must be a CUDA tensor");
  TORCH_CHECK(v.data.numel() == v.N * v.C * v.S, "fusednorm: ", what, " does not match its (N, C, S) view");
  TORCH_CHECK(v.data.is_non_overlapping_and_dense(), "fusednorm: ", what, " must be dense");
  // The kernels derive (n, c) from memory offsets alone; the order of the
  // spatial dims among themselves does not matter.
  const bool last = v.layout == Layout::kChannelsLast;
  TORCH_CHECK((v.C <= 1 || v.data.stride(1) == (last ? 1 : v.S)) && (v.N <= 1 || v.data.stride(0) == v.C * v.S),
              "fusednorm: ", what, " is not laid out as its ChannelView says");
}

// The kernels address every tensor of a pass with x's memory offsets, so the
// others must be laid out exactly like x (strides of size-1 dims aside).
void check_same_layout(const at::Tensor& t, const at::Tensor& x, const char* what) {
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "fusednorm: ", what, " must have the input's dtype");
  TORCH_CHECK(t.device() == x.device(), "fusednorm: ", what, " must be on the input's device");
  TORCH_CHECK(t.sizes() == x.sizes(), "fusednorm: ", what, " must have the input's shape");
  for (int64_t d = 0; d < x.dim(); ++d) {
    TORCH_CHECK(x.size(d) <= 1 || t.stride(d) == x.stride(d), "fusednorm: ", what, " must have the input's layout");
  }
}

void check_coef(const at::Tensor& t, const ChannelView& x, CoefIndexing indexing, const char* what) {
  const int64_t expected = indexing.coef_n_stride == 0 ? x.C : x.N * x.C;
  TORCH_CHECK(t.defined() && t.device() == x.data.device() && t.is_contiguous() &&
                  t.scalar_type() == accumulation_dtype(x.data.scalar_type()) && t.numel() == expected,
              "fusednorm: ", what, " must be a contiguous accumulation-dtype tensor of ", expected, " elements");
}

void check_indexing(const ChannelView& x, CoefIndexing indexing) {
  TORCH_CHECK(indexing.coef_n_stride == 0 || indexing.coef_n_stride == x.C,
              "fusednorm: coef_n_stride must be 0 or C, got ", indexing.coef_n_stride);
}

cuda::ActivationRaw raw_activation(const ActivationArgs& act, const ChannelView& x) {
  cuda::ActivationRaw raw;
  raw.params = act.params;
  if (act.prelu_weight.defined()) {
    const at::Tensor& w = act.prelu_weight;
    TORCH_CHECK(w.device() == x.data.device() && w.is_contiguous() &&
                    w.scalar_type() == accumulation_dtype(x.data.scalar_type()) && (w.numel() == 1 || w.numel() == x.C),
                "fusednorm: the PReLU weight must be a contiguous accumulation-dtype tensor of 1 or C elements");
    raw.prelu_weight = w.const_data_ptr();
    raw.prelu_per_channel = w.numel() > 1;
  }
  TORCH_CHECK(act.params.kind != math::ActivationKind::kPReLU || raw.prelu_weight != nullptr,
              "fusednorm: PReLU needs its weight");
  return raw;
}

// [N, C, K] accumulation-dtype partials in the kernels' layout: channels-last
// kernels write [N, K, C] (contiguous along C, as they read), viewed as [N, C, K].
at::Tensor empty_partials(const ChannelView& x, int64_t K) {
  const auto options = x.data.options().dtype(accumulation_dtype(x.data.scalar_type()));
  if (x.layout == Layout::kChannelsLast) {
    return at::empty({x.N, K, x.C}, options).permute({0, 2, 1});
  }
  return at::empty({x.N, x.C, K}, options);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cuda_partial_moments(const ChannelView& x) {
  check_view(x, "input");
  const c10::cuda::CUDAGuard guard(x.data.device());
  const auto options = x.data.options().dtype(accumulation_dtype(x.data.scalar_type()));
  if (x.data.numel() == 0) {
    // One slice holding all S positions, so the combine's counts stay right.
    return {at::zeros({x.N, x.C, 1}, options), at::zeros({x.N, x.C, 1}, options),
            at::full({1}, static_cast<double>(x.S), options)};
  }
  const cuda::Geometry g = geometry(x);
  const cuda::DType dtype = to_cuda_dtype(x.data.scalar_type());
  const cuda::ReductionPlan plan = cuda::plan_reduction(g, dtype, {x.data.const_data_ptr()});
  at::Tensor mean = empty_partials(x, plan.K);
  at::Tensor m2 = empty_partials(x, plan.K);
  at::Tensor count = at::empty({plan.K}, options);
  cuda::MomentsArgs args;
  args.x = x.data.const_data_ptr();
  args.mean = mean.mutable_data_ptr();
  args.m2 = m2.mutable_data_ptr();
  args.count = count.mutable_data_ptr();
  C10_CUDA_CHECK(cuda::launch_partial_moments(g, dtype, plan, args, at::cuda::getCurrentCUDAStream()));
  return {mean, m2, count};
}

void cuda_normalize_activate(const ChannelView& x, const at::Tensor& residual, const at::Tensor& scale,
                             const at::Tensor& shift, CoefIndexing indexing, const ActivationArgs& act,
                             const at::Tensor& out) {
  check_view(x, "input");
  check_indexing(x, indexing);
  check_coef(scale, x, indexing, "scale");
  check_coef(shift, x, indexing, "shift");
  check_same_layout(out, x.data, "out");
  if (residual.defined()) {
    check_same_layout(residual, x.data, "residual");
  }
  const c10::cuda::CUDAGuard guard(x.data.device());
  cuda::NormalizeArgs args;
  args.x = x.data.const_data_ptr();
  args.residual = optional_ptr(residual);
  args.scale = scale.const_data_ptr();
  args.shift = shift.const_data_ptr();
  args.coef_n_stride = indexing.coef_n_stride;
  args.act = raw_activation(act, x);
  args.out = out.mutable_data_ptr();
  C10_CUDA_CHECK(cuda::launch_normalize_activate(geometry(x), to_cuda_dtype(x.data.scalar_type()), args,
                                                 at::cuda::getCurrentCUDAStream()));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cuda_backward_partial_sums(
    const ChannelView& grad_out, const ChannelView& x, const at::Tensor& residual, const at::Tensor& scale,
    const at::Tensor& shift, const at::Tensor& mean, CoefIndexing indexing, const ActivationArgs& act,
    bool want_prelu) {
  check_view(x, "input");
  check_indexing(x, indexing);
  check_same_layout(grad_out.data, x.data, "grad_out");
  check_coef(scale, x, indexing, "scale");
  check_coef(shift, x, indexing, "shift");
  check_coef(mean, x, indexing, "mean");
  if (residual.defined()) {
    check_same_layout(residual, x.data, "residual");
  }
  const c10::cuda::CUDAGuard guard(x.data.device());
  if (x.data.numel() == 0) {
    const auto options = x.data.options().dtype(accumulation_dtype(x.data.scalar_type()));
    return {at::zeros({x.N, x.C, 1}, options), at::zeros({x.N, x.C, 1}, options),
            want_prelu ? at::zeros({x.N, x.C, 1}, options) : at::Tensor()};
  }
  const cuda::Geometry g = geometry(x);
  const cuda::DType dtype = to_cuda_dtype(x.data.scalar_type());
  const cuda::ReductionPlan plan =
      cuda::plan_reduction(g, dtype, {grad_out.data.const_data_ptr(), x.data.const_data_ptr(), optional_ptr(residual)});
  at::Tensor sum_g = empty_partials(x, plan.K);
  at::Tensor sum_g_xmu = empty_partials(x, plan.K);
  at::Tensor sum_prelu = want_prelu ? empty_partials(x, plan.K) : at::Tensor();
  cuda::BackwardSumsArgs args;
  args.grad_out = grad_out.data.const_data_ptr();
  args.x = x.data.const_data_ptr();
  args.residual = optional_ptr(residual);
  args.scale = scale.const_data_ptr();
  args.shift = shift.const_data_ptr();
  args.mean = mean.const_data_ptr();
  args.coef_n_stride = indexing.coef_n_stride;
  args.act = raw_activation(act, x);
  args.sum_g = sum_g.mutable_data_ptr();
  args.sum_g_xmu = sum_g_xmu.mutable_data_ptr();
  args.sum_prelu = optional_mutable_ptr(sum_prelu);
  C10_CUDA_CHECK(cuda::launch_backward_partial_sums(g, dtype, plan, args, at::cuda::getCurrentCUDAStream()));
  return {sum_g, sum_g_xmu, sum_prelu};
}

void cuda_backward_apply(const ChannelView& grad_out, const ChannelView& x, const at::Tensor& residual,
                         const at::Tensor& scale, const at::Tensor& shift, const at::Tensor& mean, const at::Tensor& k1,
                         const at::Tensor& k2, const at::Tensor& k3, CoefIndexing indexing, const ActivationArgs& act,
                         const at::Tensor& grad_input, const at::Tensor& grad_residual) {
  if (!grad_input.defined() && !grad_residual.defined()) {
    return;
  }
  check_view(x, "input");
  check_indexing(x, indexing);
  check_same_layout(grad_out.data, x.data, "grad_out");
  check_coef(scale, x, indexing, "scale");
  check_coef(shift, x, indexing, "shift");
  if (residual.defined()) {
    check_same_layout(residual, x.data, "residual");
  }
  if (grad_input.defined()) {
    check_coef(mean, x, indexing, "mean");
    check_coef(k1, x, indexing, "k1");
    check_coef(k2, x, indexing, "k2");
    check_coef(k3, x, indexing, "k3");
    check_same_layout(grad_input, x.data, "grad_input");
  }
  if (grad_residual.defined()) {
    check_same_layout(grad_residual, x.data, "grad_residual");
  }
  const c10::cuda::CUDAGuard guard(x.data.device());
  cuda::BackwardApplyArgs args;
  args.grad_out = grad_out.data.const_data_ptr();
  args.x = x.data.const_data_ptr();
  args.residual = optional_ptr(residual);
  args.scale = scale.const_data_ptr();
  args.shift = shift.const_data_ptr();
  if (grad_input.defined()) {
    args.mean = mean.const_data_ptr();
    args.k1 = k1.const_data_ptr();
    args.k2 = k2.const_data_ptr();
    args.k3 = k3.const_data_ptr();
  }
  args.coef_n_stride = indexing.coef_n_stride;
  args.act = raw_activation(act, x);
  args.grad_input = optional_mutable_ptr(grad_input);
  args.grad_residual = optional_mutable_ptr(grad_residual);
  C10_CUDA_CHECK(cuda::launch_backward_apply(geometry(x), to_cuda_dtype(x.data.scalar_type()), args,
                                             at::cuda::getCurrentCUDAStream()));
}

const ChannelNormKernels kCudaChannelNormKernels{
    cuda_partial_moments,
    cuda_normalize_activate,
    cuda_backward_partial_sums,
    cuda_backward_apply,
};

const bool registered = register_channel_norm_kernels(kKernelDevice, &kCudaChannelNormKernels);

}  // namespace
}  // namespace fusednorm::detail
