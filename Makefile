# The README's commands. `make test` works on a fresh clone: it installs what
# the project needs, builds (with CUDA when nvcc and a CUDA torch are present),
# and runs every test. `make gpu-test` is the same suite on a GPU machine that
# already has torch, installing nothing from the network.

PYTHON ?= python3
TORCH_VERSION ?= 2.14.1
BUILD_DIR ?= build
JOBS ?= $(shell nproc)

# torch guesses CUDA_HOME from `which nvcc`; a wrapper in /usr/local/bin makes it
# guess wrong, so name the toolkit when it is where Debian/NVIDIA put it.
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME ?= /usr/local/cuda
endif
# No GPU to detect the architecture from on a build machine: build for Hopper.
export TORCH_CUDA_ARCH_LIST ?= 9.0
export MAX_JOBS ?= $(JOBS)

PIP := $(PYTHON) -m pip
TORCH_CMAKE_PREFIX = $(shell $(PYTHON) -c "import torch; print(torch.utils.cmake_prefix_path)")
# Pip's CUDA torch ships libnvrtc in its nvidia wheels, not in the toolkit;
# torch's CMake config needs to be told where.
NVRTC = $(shell $(PYTHON) -c "import glob, os, torch; \
  p = glob.glob(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), 'nvidia', 'cu*', 'lib', 'libnvrtc.so*')); \
  print(sorted(p)[0] if p else '')")
CMAKE_TORCH_ARGS = -DCMAKE_PREFIX_PATH="$(TORCH_CMAKE_PREFIX)" \
  $(if $(CUDA_HOME),-DCUDA_TOOLKIT_ROOT_DIR=$(CUDA_HOME)) \
  $(if $(NVRTC),-DCUDA_nvrtc_LIBRARY=$(NVRTC))
FUSEDNORM_CMAKE_DIR = $(shell $(PYTHON) -c "import fusednorm; print(fusednorm.cmake_dir())")

.PHONY: all deps build test gpu-test pytest cpp-test demo bench bench-smoke lint format clean
.PHONY: cpp-example cmake-install-check

all: build

# Everything `make test` needs, installed from the project's own files.
deps:
	@$(PYTHON) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null \
	  || $(PIP) install -q "torch==$(TORCH_VERSION)"
	$(PIP) install -q -r requirements-dev.txt
	@if ! [ -f /usr/include/gtest/gtest.h ] || ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then \
	  if command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgtest-dev cmake ninja-build; \
	  else echo "install GoogleTest, cmake and ninja" >&2; exit 1; fi; fi

build:
	$(PIP) install --no-build-isolation --no-deps -e . 2>&1 | tail -n 3
	@$(PYTHON) -c "import fusednorm; print('fusednorm built; CUDA kernels:', fusednorm.has_cuda_kernels())"

pytest:
	$(PYTHON) -m pytest -q tests/python

cpp-test:
	cmake -S tests/cpp -B $(BUILD_DIR)/cpp-tests -G Ninja $(CMAKE_TORCH_ARGS) -DFusedNorm_DIR="$(FUSEDNORM_CMAKE_DIR)" >/dev/null
	cmake --build $(BUILD_DIR)/cpp-tests
	cd $(BUILD_DIR)/cpp-tests && ctest --output-on-failure

# examples/cpp against the installed Python package (CUDA when the GPU and kernels are there).
cpp-example:
	cmake -S examples/cpp -B $(BUILD_DIR)/cpp-example -G Ninja $(CMAKE_TORCH_ARGS) -DFusedNorm_DIR="$(FUSEDNORM_CMAKE_DIR)" >/dev/null
	cmake --build $(BUILD_DIR)/cpp-example
	$(BUILD_DIR)/cpp-example/train_cnn

# The from-source CMake package, CPU only: build the root CMakeLists.txt, install it into
# $(BUILD_DIR)/prefix, then build and run examples/cpp against that prefix (not the Python package).
CMAKE_CHECK_PREFIX = $(abspath $(BUILD_DIR))/prefix
cmake-install-check:
	cmake -S . -B $(BUILD_DIR)/cmake -G Ninja $(CMAKE_TORCH_ARGS) -DFUSEDNORM_WITH_CUDA=OFF -DCMAKE_INSTALL_LIBDIR=lib >/dev/null
	cmake --build $(BUILD_DIR)/cmake
	cmake --install $(BUILD_DIR)/cmake --prefix $(CMAKE_CHECK_PREFIX) >/dev/null
	cmake -S examples/cpp -B $(BUILD_DIR)/cmake-example -G Ninja $(CMAKE_TORCH_ARGS) \
	  -DFusedNorm_DIR=$(CMAKE_CHECK_PREFIX)/lib/cmake/FusedNorm >/dev/null
	cmake --build $(BUILD_DIR)/cmake-example
	$(BUILD_DIR)/cmake-example/train_cnn cpu

test: deps build pytest cpp-test cpp-example cmake-install-check

# On a machine with an NVIDIA GPU and torch already installed; nothing is
# downloaded. The CUDA tests run because CUDA is available.
gpu-test: build
	@$(PYTHON) -c "import torch, fusednorm, sys; \
	  ok = torch.cuda.is_available() and fusednorm.has_cuda_kernels(); \
	  print('CUDA device:', torch.cuda.get_device_name() if torch.cuda.is_available() else None); sys.exit(0 if ok else 1)"
	$(MAKE) pytest cpp-test cpp-example

# The README's main command: the d2l batch-norm experiment, torch.nn vs fusednorm.convert.
# DEMO_ARGS passes flags, e.g. make demo DEMO_ARGS="--epochs 5 --bn-position after".
# `deps` installs requirements-demo.txt (scikit-learn, matplotlib, tqdm) with the rest.
demo: deps build
	$(PYTHON) -m fusednorm.demo $(DEMO_ARGS)

lint:
	ruff check python tests
	ruff format --check python tests

format:
	ruff format python tests
	clang-format -i $$(find csrc tests/cpp examples -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh')

clean:
	rm -rf $(BUILD_DIR) python/fusednorm/_C*.so python/fusednorm/include python/fusednorm/share *.egg-info

# Fused ops against PyTorch eager and torch.compile (python/fusednorm/bench.py), e.g.
# make bench BENCH_ARGS="--quick --device cpu" or BENCH_ARGS="--case bn2d --dtype bf16".
# Results go to benchmarks/results/<device>/ unless --out says otherwise.
BENCH_ARGS ?=
bench:
	$(PYTHON) -m fusednorm.bench $(BENCH_ARGS)

# Part of `make test`: every --quick case once on the CPU with a tiny time budget,
# to show that the benchmark runs (no speed is asserted); output under $(BUILD_DIR).
test: bench-smoke
bench-smoke:
	@mkdir -p $(BUILD_DIR)
	$(PYTHON) -m fusednorm.bench --quick --device cpu --no-compile --min-run-time 0.001 --repeats 1 \
	  --out $(BUILD_DIR)/bench-smoke > $(BUILD_DIR)/bench-smoke.log || { cat $(BUILD_DIR)/bench-smoke.log; exit 1; }
	@tail -n 7 $(BUILD_DIR)/bench-smoke.log

# ---- CUDA emulator (tests/emu, issue 10) --------------------------------------
# Every CUDA kernel, forward and backward, and the op stack on the CUDA path run
# on the CPU under sanitizer-like checks; `make traffic-report` writes the
# emulated memory-traffic figures. Needs g++ and the CUDA toolkit's headers only.
include tests/emu/emu.mk
test: emu-test
