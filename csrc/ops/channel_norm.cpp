#include "channel_norm.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <atomic>
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
    view.layout =
        (format == at::MemoryFormat::Contiguous && view.S != 1) ? Layout::kChannelsFirst : Layout::kChannelsLast;
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

at::Tensor empty_like_view(const ChannelView& view) { return at::empty_like(view.data); }

namespace {
std::atomic<bool> g_host_combine{true};
}  // namespace

bool host_combine_enabled() { return g_host_combine.load(std::memory_order_relaxed); }

void set_host_combine_enabled(bool enabled) { g_host_combine.store(enabled, std::memory_order_relaxed); }

const ChannelNormKernels& channel_norm_kernels(c10::DeviceType device) {
  return KernelRegistry<ChannelNormKernels>::get(device);
}

bool register_channel_norm_kernels(c10::DeviceType device, const ChannelNormKernels* kernels) {
  return KernelRegistry<ChannelNormKernels>::add(device, kernels);
}

at::ScalarType accumulation_dtype(at::ScalarType input_dtype) {
  return input_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

namespace {

// combine_moments on the host: the partials are small ([N, C, K]), and at the
// sizes a CPU runs, the dozen ATen ops of the general path cost more than the
// normalization kernels themselves. Same formula, accumulated in double.
std::tuple<at::Tensor, at::Tensor> combine_moments_on_host(const at::Tensor& mean, const at::Tensor& m2,
                                                           const at::Tensor& count, at::IntArrayRef dims,
                                                           double total) {
  const std::array<int64_t, 3> sizes{mean.size(0), mean.size(1), mean.size(2)};
  std::array<bool, 3> reduced{};
  for (int64_t d : dims) {
    reduced.at(d) = true;
  }
  // Stride of each dim in the output (0 for the reduced ones).
  std::array<int64_t, 3> out_strides{};
  std::vector<int64_t> out_sizes;
  int64_t num_outputs = 1;
  for (int64_t d = 2; d >= 0; --d) {
    if (!reduced[d]) {
      out_strides[d] = num_outputs;
      num_outputs *= sizes[d];
    }
  }
  for (int64_t d = 0; d < 3; ++d) {
    if (!reduced[d]) {
      out_sizes.push_back(sizes[d]);
    }
  }
  at::Tensor out_mean = at::empty(out_sizes, mean.options());
  at::Tensor out_var = at::empty(out_sizes, mean.options());
  AT_DISPATCH_FLOATING_TYPES(mean.scalar_type(), "combine_moments_on_host", [&] {
    const scalar_t* mean_ptr = mean.const_data_ptr<scalar_t>();
    const scalar_t* m2_ptr = m2.const_data_ptr<scalar_t>();
    const scalar_t* count_ptr = count.const_data_ptr<scalar_t>();
    std::vector<double> combined_mean(num_outputs, 0.0), combined_m2(num_outputs, 0.0);
    // Calls f(partial index, output index, slice k) over the partials in memory order.
    const auto for_each_partial = [&](const auto& f) {
      if (sizes[2] == 1) {
        // One slice (small planes, (N, C) input): a plain loop over the channels,
        // which the compiler vectorises.
        for (int64_t n = 0; n < sizes[0]; ++n) {
          const int64_t i0 = n * sizes[1], o0 = n * out_strides[0];
          if (out_strides[1] == 1) {
            for (int64_t c = 0; c < sizes[1]; ++c) {
              f(i0 + c, o0 + c, int64_t{0});
            }
          } else {
            for (int64_t c = 0; c < sizes[1]; ++c) {
              f(i0 + c, o0 + c * out_strides[1], int64_t{0});
            }
          }
        }
        return;
      }
      for (int64_t n = 0, i = 0; n < sizes[0]; ++n) {
        for (int64_t c = 0; c < sizes[1]; ++c) {
          for (int64_t k = 0; k < sizes[2]; ++k, ++i) {
            f(i, n * out_strides[0] + c * out_strides[1] + k * out_strides[2], k);
          }
        }
      }
    };
    for_each_partial([&](int64_t i, int64_t o, int64_t k) {
      combined_mean[o] += static_cast<double>(count_ptr[k]) * static_cast<double>(mean_ptr[i]);
    });
    for (double& m : combined_mean) {
      m /= total;
    }
    for_each_partial([&](int64_t i, int64_t o, int64_t k) {
      const double delta = static_cast<double>(mean_ptr[i]) - combined_mean[o];
      combined_m2[o] += static_cast<double>(m2_ptr[i]) + static_cast<double>(count_ptr[k]) * delta * delta;
    });
    scalar_t* out_mean_ptr = out_mean.data_ptr<scalar_t>();
    scalar_t* out_var_ptr = out_var.data_ptr<scalar_t>();
    for (int64_t o = 0; o < num_outputs; ++o) {
      out_mean_ptr[o] = static_cast<scalar_t>(combined_mean[o]);
      out_var_ptr[o] = static_cast<scalar_t>(combined_m2[o] / total);
    }
  });
  return {out_mean, out_var};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, double> combine_moments(const at::Tensor& mean, const at::Tensor& m2,
                                                           const at::Tensor& count, int64_t spatial_size,
                                                           at::IntArrayRef dims) {
  // The slices partition the spatial extent, so the total is known on the host
  // without reading count back from the device.
  double total = static_cast<double>(spatial_size);
  for (int64_t d : dims) {
    if (d != mean.dim() - 1) {
      total *= static_cast<double>(mean.size(d));
    }
  }
  if (host_combine_enabled() && mean.is_cpu() && count.is_cpu() && mean.dim() == 3 && mean.is_contiguous() &&
      m2.is_contiguous() && count.is_contiguous() && m2.scalar_type() == mean.scalar_type() &&
      count.scalar_type() == mean.scalar_type()) {
    auto [out_mean, out_var] = combine_moments_on_host(mean, m2, count, dims, total);
    return {out_mean, out_var, total};
  }
  // count has one entry per slice (the last dim); every (n, c) has the same slices.
  std::vector<int64_t> count_shape(mean.dim(), 1);
  count_shape.back() = count.numel();
  const at::Tensor weight = count.reshape(count_shape).expand_as(mean);
  const at::Tensor combined_mean = (mean * weight).sum(dims, /*keepdim=*/true).div_(total);
  const at::Tensor combined_m2 =
      m2.sum(dims, /*keepdim=*/true).add_((weight * (mean - combined_mean).square_()).sum(dims, /*keepdim=*/true));
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
