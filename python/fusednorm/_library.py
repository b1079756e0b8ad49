"""Loads the compiled library that registers torch.ops.fusednorm.*."""

import glob
import os

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))


def library_path():
    """Path of the shared library (also what C++ programs link against)."""
    candidates = sorted(glob.glob(os.path.join(_HERE, "_C*.so")) + glob.glob(os.path.join(_HERE, "_C*.pyd")))
    if not candidates:
        raise ImportError(
            f"fusednorm's compiled library was not found next to {__file__}; build it with "
            "`pip install --no-build-isolation -e .` (or `make build`)"
        )
    return candidates[0]


def load():
    # The library has no Python module init: it only registers ops, as torchvision's does.
    torch.ops.load_library(library_path())


def has_cuda_kernels():
    """True when this build of fusednorm includes the CUDA kernels."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("fusednorm::batch_norm_act", "CUDA")


def cmake_dir():
    """Directory to pass as FusedNorm_DIR to CMake's find_package(FusedNorm)."""
    return os.path.join(_HERE, "share", "cmake", "FusedNorm")
