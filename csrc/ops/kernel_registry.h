// Per-device kernel tables of the norm engines: each device backend registers its
// table from a static initialiser; the device-agnostic op code looks it up.
#pragma once

#include <c10/core/DeviceType.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstddef>

namespace fusednorm::detail {

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
