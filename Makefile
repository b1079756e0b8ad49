# The README's commands. `make test` and `make demo` work on a fresh clone: they
# make a virtual environment (.venv, no system site-packages), install what the
# project needs into it from the project's own files, build the extension
# incrementally in $(BUILD_DIR)/ext (with CUDA when nvcc and a CUDA torch are
# there), and run. PYTHON=<interpreter> uses that interpreter instead of .venv.
# `make gpu-check` is the one-call check for a GPU machine (see the README).

# ---------------------------------------------------------------------------- settings

TORCH_VERSION ?= 2.14.1
TORCHVISION_VERSION ?= 0.29.1
BUILD_DIR ?= build
VENV ?= .venv
# The interpreter everything runs under: the project's venv unless PYTHON is given.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(VENV)/bin/python
OWN_VENV := $(PYTHON)
endif
BOOTSTRAP_PYTHON ?= python3
# The tools pip puts beside the interpreter (ninja, cmake) come first on PATH.
ifneq ($(findstring /,$(PYTHON)),)
export PATH := $(abspath $(dir $(PYTHON))):$(PATH)
endif
JOBS ?= $(shell nproc)
# OFFLINE=1 (the GPU machine): install nothing, use what PYTHON already has.
OFFLINE ?=
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

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
  $(if $(NVRTC),-DCUDA_nvrtc_LIBRARY=$(NVRTC)) \
  -DFUSEDNORM_GTEST_SOURCE_DIR="$(GTEST_SOURCE_DIR)" --no-warn-unused-cli
FUSEDNORM_CMAKE_DIR = $(shell $(PYTHON) -c "import fusednorm; print(fusednorm.cmake_dir())")
# GoogleTest from source where no package provides it (the GPU machine): `make gpu-prep`
# copies Debian's source tree here, and the device call carries it.
GTEST_SOURCE_DIR ?= $(abspath .deps/googletest)

.PHONY: all venv deps build test gpu-test gpu-check gpu-prep pytest cpp-test demo bench bench-smoke
.PHONY: lint format clean cpp-example cmake-install-check torch-compat test-cpu

all: build

# ---------------------------------------------------------------------------- install and build

$(VENV)/bin/python:
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip

venv: $(OWN_VENV)

# Everything any test or target imports, pinned in the project's own files. pip
# installs nothing when all of it is already there.
deps: venv
ifeq ($(OFFLINE),)
	$(PIP) install -q "torch==$(TORCH_VERSION)" "torchvision==$(TORCHVISION_VERSION)" -r requirements-dev.txt
	@if ! [ -f /usr/include/gtest/gtest.h ] && ! [ -d "$(GTEST_SOURCE_DIR)" ]; then \
	  if command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgtest-dev; \
	  else echo "install GoogleTest (Debian: libgtest-dev), or put its source in $(GTEST_SOURCE_DIR)" >&2; exit 1; fi; fi
endif

# Incremental: ninja recompiles only what changed in the persistent $(BUILD_DIR)/ext
# (--force hands every build to ninja instead of setuptools' header-blind check),
# the library lands in python/fusednorm/, and the package is registered once as an
# editable install without building anything (FUSEDNORM_SKIP_EXTENSION).
# Ninja's compile lines are shortened to "[i/n] source".
build: deps
	$(PYTHON) setup.py -q build_ext --inplace --force --build-temp $(BUILD_DIR)/ext 2>&1 \
	  | sed -u -E 's|^(\[[0-9]+/[0-9]+\]) .* -c ([^ ]+) -o .*|\1 \2|' \
	  | { grep --line-buffered -v -e "[Dd]eprecat" -e "^ *\*\*\*\*" -e "^ *!!$$" -e "^ *$$" -e "^W[0-9]* .*No CUDA runtime" || true; }
	@$(PYTHON) -c "import importlib.util as u, os, sys; s = u.find_spec('fusednorm'); \
	  sys.exit(0 if s and os.path.realpath(s.origin) == os.path.realpath('python/fusednorm/__init__.py') else 1)" \
	  || FUSEDNORM_SKIP_EXTENSION=1 $(PIP) install -q --no-build-isolation --no-deps -e .
	@$(PYTHON) -c "import fusednorm; print('fusednorm built; CUDA kernels:', fusednorm.has_cuda_kernels())"

# ---------------------------------------------------------------------------- tests

test: deps build pytest cpp-test cpp-example cmake-install-check bench-smoke

pytest: build
	$(PYTHON) -m pytest -q tests/python $(PYTEST_ARGS)

# GoogleTest against the installed package; FUSEDNORM_TEST_DEVICE=cuda runs it on CUDA tensors.
cpp-test: build
	cmake -S tests/cpp -B $(BUILD_DIR)/cpp-tests -G Ninja $(CMAKE_TORCH_ARGS) -DFusedNorm_DIR="$(FUSEDNORM_CMAKE_DIR)" >/dev/null
	cmake --build $(BUILD_DIR)/cpp-tests
	cd $(BUILD_DIR)/cpp-tests && ctest --output-on-failure

# examples/cpp against the installed Python package (CUDA when the GPU and kernels are there).
cpp-example: build
	cmake -S examples/cpp -B $(BUILD_DIR)/cpp-example -G Ninja $(CMAKE_TORCH_ARGS) -DFusedNorm_DIR="$(FUSEDNORM_CMAKE_DIR)" >/dev/null
	cmake --build $(BUILD_DIR)/cpp-example
	$(BUILD_DIR)/cpp-example/train_cnn $(EXAMPLE_DEVICE)

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

# Part of `make test`: every --quick case once on the CPU with a tiny time budget,
# to show that the benchmark runs (no speed is asserted); output under $(BUILD_DIR).
bench-smoke: build
	@mkdir -p $(BUILD_DIR)
	$(PYTHON) -m fusednorm.bench --quick --device cpu --no-compile --min-run-time 0.001 --repeats 1 \
	  --out $(BUILD_DIR)/bench-smoke > $(BUILD_DIR)/bench-smoke.log || { cat $(BUILD_DIR)/bench-smoke.log; exit 1; }
	@tail -n 7 $(BUILD_DIR)/bench-smoke.log

# The CPU half of `make test` against another torch, in its own venv and build tree
# (a copy of the sources, so the two builds' libraries never meet), e.g. the GPU
# machine's 2.11: make torch-compat COMPAT_TORCH=2.11.0 COMPAT_TORCHVISION=0.26.0
COMPAT_TORCH ?= 2.11.0
COMPAT_TORCHVISION ?= 0.26.0
COMPAT_DIR = $(abspath $(BUILD_DIR))/torch-$(COMPAT_TORCH)
torch-compat:
	@mkdir -p $(COMPAT_DIR)/src
	git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -cf - | tar -xf - -C $(COMPAT_DIR)/src
	$(MAKE) -C $(COMPAT_DIR)/src test-cpu VENV=$(COMPAT_DIR)/venv BUILD_DIR=$(COMPAT_DIR)/build \
	  TORCH_VERSION=$(COMPAT_TORCH) TORCHVISION_VERSION=$(COMPAT_TORCHVISION)

# What torch-compat runs: the whole build (CUDA too, when there) and every CPU test.
test-cpu: deps build pytest cpp-test cpp-example

# ---------------------------------------------------------------------------- GPU machine

# On a GPU machine that already has torch and nvcc (nothing is downloaded): build with
# every core for sm_90, run the whole CUDA test suite (pytest on CPU and CUDA,
# GoogleTest on CPU and CUDA tensors, the C++ example on CUDA) and the benchmark's
# headline cases; logs, CSV and a summary go to OUT. See the README, "On a GPU".
GPU_PYTHON ?= python3
OUT ?= $(BUILD_DIR)/gpu-check
gpu-check:
	@mkdir -p $(OUT)
	bash tools/gpu_check.sh "$(GPU_PYTHON)" "$(abspath $(OUT))" "$(abspath $(BUILD_DIR))/gpu"

# Before a device call, on this machine: the GoogleTest sources gpu-check builds there.
gpu-prep:
	@test -d /usr/src/googletest || { echo "needs Debian's googletest package (/usr/src/googletest)" >&2; exit 1; }
	rm -rf $(GTEST_SOURCE_DIR) && mkdir -p $(dir $(GTEST_SOURCE_DIR)) && cp -a /usr/src/googletest $(GTEST_SOURCE_DIR)
	@du -sh $(GTEST_SOURCE_DIR)

# The same suite as `make test` on a GPU machine, without the CMake-install check.
gpu-test:
	$(MAKE) OFFLINE=1 PYTHON=$(GPU_PYTHON) build
	@$(GPU_PYTHON) -c "import torch, fusednorm, sys; \
	  ok = torch.cuda.is_available() and fusednorm.has_cuda_kernels(); \
	  print('CUDA device:', torch.cuda.get_device_name() if torch.cuda.is_available() else None); sys.exit(0 if ok else 1)"
	$(MAKE) OFFLINE=1 PYTHON=$(GPU_PYTHON) pytest cpp-test cpp-example
	cd $(BUILD_DIR)/cpp-tests && FUSEDNORM_TEST_DEVICE=cuda ctest --output-on-failure

# ---------------------------------------------------------------------------- demo, bench, tools

# The README's main command: the d2l batch-norm experiment, torch.nn vs fusednorm.convert.
# DEMO_ARGS passes flags, e.g. make demo DEMO_ARGS="--epochs 5 --bn-position after".
demo: deps build
	$(PYTHON) -m fusednorm.demo $(DEMO_ARGS)

# Fused ops against PyTorch eager and torch.compile (python/fusednorm/bench.py), e.g.
# make bench BENCH_ARGS="--quick --device cpu" or BENCH_ARGS="--case bn2d --dtype bf16".
# Results go to benchmarks/results/<device>/ unless --out says otherwise.
BENCH_ARGS ?=
bench: deps build
	$(PYTHON) -m fusednorm.bench $(BENCH_ARGS)

lint:
	$(PYTHON) -m ruff check python tests
	$(PYTHON) -m ruff format --check python tests

format:
	$(PYTHON) -m ruff format python tests
	clang-format -i $$(find csrc tests/cpp examples -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh')

clean:
	rm -rf $(BUILD_DIR) python/fusednorm/_C*.so python/fusednorm/include python/fusednorm/share *.egg-info python/*.egg-info

# ---- CUDA emulator (tests/emu, issue 10) --------------------------------------
# Every CUDA kernel, forward and backward, and the op stack on the CUDA path run
# on the CPU under sanitizer-like checks; `make traffic-report` writes the
# emulated memory-traffic figures. Needs g++ and the CUDA toolkit's headers only.
include tests/emu/emu.mk
test: emu-test
