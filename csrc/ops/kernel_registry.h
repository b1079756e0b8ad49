// Per-device kernel tables of the norm engines: each device backend registers its
// table from a static initialiser; the device-agnostic op code looks it up.
#pragma once

#include <c10/core/DeviceType.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstddef>

namespace fusednorm::detail {

// Whether CPU tensors take the host-loop shortcuts of the combine step
// (combine_moments, update_running_stat, invstd_from_var, the coefficient and
// backward combine in ops/norm_common.cpp) instead of the general ATen path
// that CUDA tensors take. On by default; the CUDA emulator (tests/emu), which
// registers the CUDA kernels for the CPU, turns it off so that the CUDA path
// runs whole on CPU tensors.
bool host_combine_enabled();
void set_host_combine_enabled(bool enabled);

template <typename Kernels>
class KernelRegistry {
 public:
  static bool add(c10::DeviceType device, const Kernels* kernels) {
    slots().at(static_cast<size_t>(device)) = kernels;
    return true;
  }

  // A clear error when fusednorm was built without the device.
  static const Kernels& get(c10::DeviceType device) {
    const Kernels* kernels = slots().at(static_cast<size_t>(device));
    TORCH_CHECK(kernels != nullptr, "fusednorm has no kernels for device type ", device,
                (device == c10::DeviceType::CUDA ? " (this build of fusednorm was compiled without CUDA)" : ""));
    return *kernels;
  }

 private:
  using Slots = std::array<const Kernels*, static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>;
  static Slots& slots() {
    static Slots registry{};
    return registry;
  }
};

}  // namespace fusednorm::detail
