#include "channel_norm.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <vector>

#include "kernel_registry.h"

namespace fusednorm::detail {
namespace {

bool is_channels_last_dense(const at::Tensor& t) {
  if (t.dim() == 4) {
    return t.is_contiguous(at::MemoryFormat::ChannelsLast);
  }
  if (t.dim() == 5) {
    return t.is_contiguous(at::MemoryFormat::ChannelsLast3d);
  }
  return false;
}

}  // namespace

ChannelView canonicalize(const at::Tensor& input) {
  TORCH_INTERNAL_ASSERT(input.dim() >= 2);
  ChannelView view;
  view.N = input.size(0);
  view.C = input.size(1);
  view.S = 1;
  for (int64_t d = 2; d < input.dim(); ++d) {
    view.S *= input.size(d);
  }
  if (input.is_contiguous()) {
    view.data = input;
    // (N, C) and (N, C, 1, ...) are rows of C in memory: the channels-last kernels
    // handle those well, planes of one element would not.
    view.layout = view.S == 1 ? Layout::kChannelsLast : Layout::kChannelsFirst;
  } else if (is_channels_last_dense(input)) {
    view.data = input;
    view.layout = Layout::kChannelsLast;
  } else {
    // Strided views (slices, transposes): one dense copy in the format the
    // input resembles most; the output comes back in that format.
    const auto format = input.suggest_memory_format();
    view.data = input.contiguous(format);
    view.layout = (format == at::MemoryFormat::Contiguous && view.S != 1) ? Layout::kChannelsFirst
                                                                          : Layout::kChannelsLast;
  }
  return view;
}

at::Tensor match_layout(const at::Tensor& t, const ChannelView& view) {
  if (!t.defined() || t.strides() == view.data.strides()) {
    return t;
  }
  at::Tensor copy = at::empty_like(view.data, t.options());
  copy.copy_(t);
  return copy;
}

at::Tensor empty_like_view(const ChannelView& view) {
  return at::empty_like(view.data);
}

const ChannelNormKernels& channel_norm_kernels(c10::DeviceType device) {
  return KernelRegistry<ChannelNormKernels>::get(device);
}

bool register_channel_norm_kernels(c10::DeviceType device, const ChannelNormKernels* kernels) {
  return KernelRegistry<ChannelNormKernels>::add(device, kernels);
}

at::ScalarType accumulation_dtype(at::ScalarType input_dtype) {
  return input_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

std::tuple<at::Tensor, at::Tensor, double> combine_moments(const at::Tensor& mean, const at::Tensor& m2,
                                                           const at::Tensor& count, int64_t spatial_size,
                                                           at::IntArrayRef dims) {
  // count has one entry per slice (the last dim); every (n, c) has the same slices.
  std::vector<int64_t> count_shape(mean.dim(), 1);
  count_shape.back() = count.numel();
  const at::Tensor weight = count.reshape(count_shape).expand_as(mean);
  // The slices partition the spatial extent, so the total is known on the host
  // without reading count back from the device.
  double total = static_cast<double>(spatial_size);
  for (int64_t d : dims) {
    if (d != mean.dim() - 1) {
      total *= static_cast<double>(mean.size(d));
    }
  }
  const at::Tensor combined_mean = (mean * weight).sum(dims, /*keepdim=*/true).div_(total);
  const at::Tensor combined_m2 = m2.sum(dims, /*keepdim=*/true)
                                     .add_((weight * (mean - combined_mean).square_()).sum(dims, /*keepdim=*/true));
  at::Tensor out_mean = combined_mean;
  at::Tensor out_var = combined_m2.div_(total);
  // Remove the reduced dims, highest first so the indices stay valid.
  std::vector<int64_t> sorted(dims.begin(), dims.end());
  std::sort(sorted.rbegin(), sorted.rend());
  for (int64_t d : sorted) {
    out_mean = out_mean.squeeze(d);
    out_var = out_var.squeeze(d);
  }
  return {out_mean, out_var, total};
}

}  // namespace fusednorm::detail
