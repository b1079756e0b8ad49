# The CUDA emulator's build (tests/emu/README.md), included by the Makefile.
# Everything lands under $(EMU_BUILD); g++ and the CUDA toolkit's headers are
# all it needs (no nvcc, no GPU). Objects track their headers (-MMD), so a
# kernel change rebuilds the kernel objects and relinks, nothing else.
#
#   make emu-build       the libraries and test programs
#   make emu-test        everything under the emulator; prints "N passed, M failed"
#   make traffic-report  $(BUILD_DIR)/traffic/traffic.csv (+ launches.csv, registers.csv)

EMU_DIR := tests/emu
EMU_BUILD := $(BUILD_DIR)/emu
# Where the CUDA sources live: device code and launchers (*.cu), ATen adapters (*.cpp).
EMU_CUDA_DIR ?= csrc/cuda
# Include roots of the project's sources (the kernels include "../math/...").
EMU_PROJECT_INCLUDES ?= -Icsrc -Icsrc/include
EMU_CXX ?= g++
EMU_CUDA_HOME ?= $(or $(CUDA_HOME),/usr/local/cuda)
EMU_JOBS ?= 2

EMU_KERNEL_SRCS := $(wildcard $(EMU_CUDA_DIR)/*.cu)
EMU_ADAPTER_SRCS := $(wildcard $(EMU_CUDA_DIR)/*.cpp)
EMU_RUNTIME_SRCS := $(addprefix $(EMU_DIR)/runtime/,runtime.cpp module.cpp allocations.cpp)

# torch only for the adapters and the plugin (deferred: emu-test without torch
# still builds the C++ programs).
EMU_TORCH_INCLUDES = $(shell $(PYTHON) -c "from torch.utils.cpp_extension import include_paths; \
  print(' '.join('-isystem ' + p for p in include_paths()))")
EMU_TORCH_LIBDIR = $(shell $(PYTHON) -c "from torch.utils.cpp_extension import library_paths; print(library_paths()[0])")
EMU_FUSEDNORM_LIB = $(firstword $(wildcard python/fusednorm/_C*.so))

# The same macros torch's CUDA extension build gives nvcc.
EMU_DEFINES := -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
  -D__CUDA_NO_HALF2_OPERATORS__
EMU_BASE_FLAGS := -std=c++20 -g -fPIC -MMD -MP -Wall -Wno-unknown-pragmas -Wno-sign-compare -I$(EMU_DIR)/include -I$(EMU_DIR)/runtime \
  $(EMU_PROJECT_INCLUDES) -isystem $(EMU_CUDA_HOME)/include $(EMU_DEFINES)
# Device code: compiled as host C++ with cuda_emu.h force-included. No
# vectorisation, store merging or scalar replacement of aggregates: every
# access in the source stays one access of its size (a 16-byte Pack load stays
# one 16-byte load), so the traffic counters see the requests nvcc would issue.
EMU_DEVICE_FLAGS := -x c++ -include cuda_emu.h -O2 -fno-tree-vectorize -fno-store-merging -fno-tree-sra
# Check build: every load/store calls runtime/checks.cpp (ThreadSanitizer's
# instrumentation, without its runtime).
EMU_CHECK_FLAGS := -fsanitize=thread --param tsan-instrument-func-entry-exit=0 -fno-omit-frame-pointer
# ASan+UBSan build of the same code (the C++ programs only).
EMU_ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer

EMU_GTEST_LIBS := -lgtest -lgtest_main -pthread
comma := ,

# ---- object lists -----------------------------------------------------------
emu_obj = $(EMU_BUILD)/$(1)/$(basename $(notdir $(2))).o
EMU_CHECK_KERNEL_OBJS := $(foreach s,$(EMU_KERNEL_SRCS),$(call emu_obj,check,$(s)))
EMU_ASAN_KERNEL_OBJS := $(foreach s,$(EMU_KERNEL_SRCS),$(call emu_obj,asan,$(s)))
EMU_CHECK_RUNTIME_OBJS := $(foreach s,$(EMU_RUNTIME_SRCS) $(EMU_DIR)/runtime/checks.cpp,$(call emu_obj,check,$(s)))
EMU_ASAN_RUNTIME_OBJS := $(foreach s,$(EMU_RUNTIME_SRCS) $(EMU_DIR)/runtime/checks_off.cpp,$(call emu_obj,asan,$(s)))
EMU_ADAPTER_OBJS := $(foreach s,$(EMU_ADAPTER_SRCS),$(call emu_obj,torch,$(s))) $(EMU_BUILD)/torch/emu_backend.o

EMU_LIB := $(EMU_BUILD)/libfusednorm_emu.so
EMU_TESTS := $(EMU_BUILD)/test_kernels $(EMU_BUILD)/test_runtime $(EMU_BUILD)/test_checks
EMU_ASAN_TESTS := $(EMU_BUILD)/test_kernels_asan $(EMU_BUILD)/test_checks_asan
# Planted bugs in copies of the real kernels (mutants.py): one test program each.
EMU_MUTANTS := $(shell $(PYTHON) $(EMU_DIR)/mutants.py --list 2>/dev/null)
EMU_MUTANT_TESTS := $(foreach m,$(EMU_MUTANTS),$(EMU_BUILD)/mutant_$(m))

.PHONY: emu-build emu-test emu-lib traffic-report emu-check-toolkit
emu-build: emu-check-toolkit $(EMU_TESTS) $(EMU_ASAN_TESTS) $(EMU_MUTANT_TESTS) emu-lib
emu-check-toolkit:
	@test -f $(EMU_CUDA_HOME)/include/cuda_runtime.h || { \
	  echo "emu: the CUDA toolkit's headers are needed: no $(EMU_CUDA_HOME)/include/cuda_runtime.h (set CUDA_HOME)" >&2; \
	  exit 1; }
# The plugin links against fusednorm's library: built first when missing (a
# fresh clone), then linked by a second make that sees it.
emu-lib:
	@test -n "$(wildcard python/fusednorm/_C*.so)" || $(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory $(EMU_LIB)

# ---- device code and runtime -----------------------------------------------
$(EMU_BUILD)/check/%.o: $(EMU_CUDA_DIR)/%.cu
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_BASE_FLAGS) $(EMU_DEVICE_FLAGS) $(EMU_CHECK_FLAGS) -c $< -o $@
$(EMU_BUILD)/asan/%.o: $(EMU_CUDA_DIR)/%.cu
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_BASE_FLAGS) $(EMU_DEVICE_FLAGS) $(EMU_ASAN_FLAGS) -c $< -o $@
$(EMU_BUILD)/check/%.o: $(EMU_DIR)/runtime/%.cpp
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_BASE_FLAGS) -O2 -c $< -o $@
$(EMU_BUILD)/asan/%.o: $(EMU_DIR)/runtime/%.cpp
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_BASE_FLAGS) -O1 $(EMU_ASAN_FLAGS) -c $< -o $@
# Test programs: their kernels are device code too.
$(EMU_BUILD)/check/%.o: $(EMU_DIR)/tests/%.cpp
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_BASE_FLAGS) $(EMU_DEVICE_FLAGS) $(EMU_CHECK_FLAGS) -c $< -o $@
$(EMU_BUILD)/asan/%.o: $(EMU_DIR)/tests/%.cpp
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_BASE_FLAGS) $(EMU_DEVICE_FLAGS) $(EMU_ASAN_FLAGS) -c $< -o $@

# Links a program or library ($(2)) from objects ($(3)), giving their extern
# __shared__ arrays storage (gen_dynamic_shared.py); $(1) flags, $(4) libraries.
define emu_link
	$(PYTHON) $(EMU_DIR)/gen_dynamic_shared.py $(2).dynshared.S $(filter %.o,$(3))
	$(EMU_CXX) -c $(2).dynshared.S -o $(2).dynshared.o
	$(EMU_CXX) $(1) -o $(2) $(filter %.o,$(3)) $(2).dynshared.o $(4)
endef

# ---- C++ test programs ------------------------------------------------------
$(EMU_BUILD)/test_kernels: $(EMU_BUILD)/check/test_kernels.o $(EMU_CHECK_KERNEL_OBJS) $(EMU_CHECK_RUNTIME_OBJS)
	$(call emu_link,,$@,$^,$(EMU_GTEST_LIBS))
$(EMU_BUILD)/test_runtime: $(EMU_BUILD)/check/test_runtime.o $(EMU_CHECK_RUNTIME_OBJS)
	$(call emu_link,,$@,$^,$(EMU_GTEST_LIBS))
$(EMU_BUILD)/test_checks: $(EMU_BUILD)/check/test_checks.o $(EMU_CHECK_RUNTIME_OBJS)
	$(call emu_link,,$@,$^,$(EMU_GTEST_LIBS))
$(EMU_BUILD)/test_kernels_asan: $(EMU_BUILD)/asan/test_kernels.o $(EMU_ASAN_KERNEL_OBJS) $(EMU_ASAN_RUNTIME_OBJS)
	$(call emu_link,$(EMU_ASAN_FLAGS),$@,$^,$(EMU_GTEST_LIBS))
$(EMU_BUILD)/test_checks_asan: $(EMU_BUILD)/asan/test_checks.o $(EMU_ASAN_RUNTIME_OBJS)
	$(call emu_link,$(EMU_ASAN_FLAGS),$@,$^,$(EMU_GTEST_LIBS))

# ---- mutants: a copy of the kernel sources with one planted bug each ---------
.PRECIOUS: $(EMU_BUILD)/mutants/%/stamp
$(EMU_BUILD)/mutants/%/stamp: $(EMU_DIR)/mutants.py $(wildcard $(EMU_CUDA_DIR)/*)
	$(PYTHON) $(EMU_DIR)/mutants.py --make $* --src $(EMU_CUDA_DIR) --out $(@D)/cuda
	@touch $@
# Only the translation units that include the changed file are compiled, and
# again only when the mutant's sources or the real object (a header) changed.
$(EMU_BUILD)/mutant_%: $(EMU_BUILD)/mutants/%/stamp $(EMU_BUILD)/check/test_kernels.o $(EMU_CHECK_KERNEL_OBJS) \
  $(EMU_CHECK_RUNTIME_OBJS)
	@d=$(EMU_BUILD)/mutants/$*; mkdir -p $$d/obj; objs=""; \
	for src in $(EMU_KERNEL_SRCS); do b=$$(basename $$src .cu); \
	  if grep -qx "$$b.cu" $$d/cuda/AFFECTED; then \
	    o=$$d/obj/$$b.o; \
	    if [ ! -f $$o ] || [ $$d/stamp -nt $$o ] || [ $(EMU_BUILD)/check/$$b.o -nt $$o ]; then \
	      echo "emu: mutant $*: compiling $$b.cu"; \
	      $(EMU_CXX) $(EMU_BASE_FLAGS) $(EMU_DEVICE_FLAGS) $(EMU_CHECK_FLAGS) -MF /dev/null \
	        -c $$d/cuda/$$b.cu -o $$o || exit 1; fi; \
	    objs="$$objs $$o"; \
	  else objs="$$objs $(EMU_BUILD)/check/$$b.o"; fi; done; \
	$(PYTHON) $(EMU_DIR)/gen_dynamic_shared.py $$d/obj/dynamic_shared.S $$objs && \
	$(EMU_CXX) -c $$d/obj/dynamic_shared.S -o $$d/obj/dynamic_shared.o && \
	$(EMU_CXX) -o $@ $(EMU_BUILD)/check/test_kernels.o $$objs $$d/obj/dynamic_shared.o $(EMU_CHECK_RUNTIME_OBJS) \
	  $(EMU_GTEST_LIBS)

# ---- the torch plugin: CUDA kernels + adapters for CPU tensors --------------
$(EMU_BUILD)/torch/%.o: $(EMU_CUDA_DIR)/%.cpp
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_BASE_FLAGS) -O1 -DFUSEDNORM_CUDA_EMULATION $(EMU_TORCH_INCLUDES) -c $< -o $@
$(EMU_BUILD)/torch/emu_backend.o: $(EMU_DIR)/torch/emu_backend.cpp
	@mkdir -p $(@D)
	$(EMU_CXX) $(EMU_BASE_FLAGS) -O1 $(EMU_TORCH_INCLUDES) -c $< -o $@
$(EMU_LIB): $(EMU_CHECK_KERNEL_OBJS) $(EMU_ADAPTER_OBJS) $(EMU_CHECK_RUNTIME_OBJS)
	@test -n "$(EMU_FUSEDNORM_LIB)" || { echo "emu: build fusednorm first (make build)" >&2; exit 1; }
	$(call emu_link,-shared,$@,$^,$(abspath $(EMU_FUSEDNORM_LIB)) -L$(EMU_TORCH_LIBDIR) -lc10 -ltorch_cpu \
	  -Wl$(comma)-rpath$(comma)$(EMU_TORCH_LIBDIR):$(abspath $(dir $(EMU_FUSEDNORM_LIB))))

-include $(shell find $(EMU_BUILD) -name '*.d' 2>/dev/null)

# ---- running ----------------------------------------------------------------
# Builds with $(EMU_JOBS) jobs whatever -j make was given; then runs the steps
# two at a time (run_emu_tests.py --jobs).
emu-test:
	$(MAKE) --no-print-directory -j$(EMU_JOBS) emu-build
	$(PYTHON) $(EMU_DIR)/run_emu_tests.py --build $(EMU_BUILD) --lib $(EMU_LIB)

traffic-report: emu-lib
	$(PYTHON) $(EMU_DIR)/traffic_report.py --lib $(EMU_LIB) --out $(BUILD_DIR)/traffic --cuda-dir $(EMU_CUDA_DIR)
