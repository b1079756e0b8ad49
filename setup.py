"""Builds fusednorm._C: one shared library holding every op, CPU and (when nvcc
and a CUDA build of torch are present) CUDA kernels. It does not use the Python
C API, so C++ programs link the very same file (see cmake/ and the README).

FUSEDNORM_WITH_CUDA=0/1 forces the CUDA part off/on; by default it is built when
torch is a CUDA build and nvcc is found. FUSEDNORM_SKIP_EXTENSION=1 declares no
extension at all: `make build` compiles the library in place with its own
persistent build directory and uses pip only to register the package (editable).
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _find_cuda_home():
    # torch guesses CUDA_HOME from the nvcc on PATH; a wrapper script in
    # /usr/local/bin makes it guess /usr/local, so prefer the real toolkit.
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    for candidate in ("/usr/local/cuda",):
        if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            os.environ["CUDA_HOME"] = candidate
            return


_find_cuda_home()

import torch  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _with_cuda():
    forced = os.environ.get("FUSEDNORM_WITH_CUDA")
    if forced is not None:
        return forced not in ("0", "", "false", "False", "OFF", "off")
    return torch.version.cuda is not None and CUDA_HOME is not None and shutil.which("nvcc") is not None


def _sources(with_cuda):
    patterns = ["csrc/ops/*.cpp", "csrc/cpu/*.cpp", "csrc/autograd/*.cpp", "csrc/autocast/*.cpp"]
    patterns += ["csrc/modules/*.cpp"]
    if with_cuda:
        patterns += ["csrc/cuda/*.cpp", "csrc/cuda/*.cu"]
    return sorted(src for pattern in patterns for src in glob.glob(os.path.join(ROOT, pattern)))


def _openmp_flags():
    # at::parallel_for is a header template (ATen/ParallelOpenMP.h) that runs in
    # parallel only where the including file is compiled with OpenMP, as torch
    # itself is; without it every CPU kernel here runs on one thread. The
    # library's libgomp is the one torch has already loaded (same soname).
    return ["-fopenmp"] if sys.platform.startswith("linux") else []


def _extension():
    with_cuda = _with_cuda()
    if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # No GPU to detect the architecture from (a build machine, CI): build for
        # Hopper, plus PTX that newer GPUs compile at load time.
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0+PTX"
    # -g0: Python's own CFLAGS ask for debug info, which doubles the compile time of
    # these template-heavy files and is not what a release build ships.
    cxx_flags = ["-O3", "-g0", "-std=c++20", "-fvisibility-inlines-hidden"] + _openmp_flags()
    nvcc_flags = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"]
    if os.environ.get("FUSEDNORM_PTXAS_VERBOSE") == "1":
        nvcc_flags += ["-Xptxas", "-v"]  # registers, spills and shared memory per kernel, in the build log
    # BuildExtension defines Py_LIMITED_API itself for py_limited_api extensions.
    macros = []
    if with_cuda:
        macros.append(("WITH_CUDA", None))
    # C++ programs load this library without Python having loaded torch first:
    # let it find torch's libraries itself (installed side by side, or where this
    # build's torch lives).
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    link_args = [f"-Wl,-rpath,$ORIGIN/../torch/lib:{torch_lib}"] + _openmp_flags()
    kwargs = dict(
        name="fusednorm._C",
        extra_link_args=link_args,
        sources=[os.path.relpath(s, ROOT) for s in _sources(with_cuda)],
        include_dirs=[os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "include")],
        define_macros=macros,
        py_limited_api=True,
    )
    if with_cuda:
        return CUDAExtension(extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, **kwargs)
    return CppExtension(extra_compile_args={"cxx": cxx_flags}, **kwargs)


class BuildWithCMakePackage(BuildExtension.with_options(use_ninja=True)):
    """Also puts the public headers and a find_package(FusedNorm) config next to
    the library, so C++ programs can build against the installed Python package."""

    def run(self):
        super().run()
        package_dir = os.path.dirname(self.get_ext_fullpath("fusednorm._C"))
        include_dir = os.path.join(package_dir, "include", "fusednorm")
        os.makedirs(include_dir, exist_ok=True)
        for header in glob.glob(os.path.join(ROOT, "csrc", "include", "fusednorm", "*.h")):
            shutil.copy2(header, include_dir)
        cmake_dir = os.path.join(package_dir, "share", "cmake", "FusedNorm")
        os.makedirs(cmake_dir, exist_ok=True)
        with open(os.path.join(ROOT, "cmake", "FusedNormPythonConfig.cmake.in")) as template:
            config = template.read().replace("@FUSEDNORM_WITH_CUDA@", "ON" if _with_cuda() else "OFF")
        with open(os.path.join(cmake_dir, "FusedNormConfig.cmake"), "w") as out:
            out.write(config)


if __name__ == "__main__" or "setuptools" in sys.modules:
    setup(
        name="fusednorm",
        version="0.1.0",
        packages=find_packages("python"),
        package_dir={"": "python"},
        ext_modules=[] if os.environ.get("FUSEDNORM_SKIP_EXTENSION") == "1" else [_extension()],
        cmdclass={"build_ext": BuildWithCMakePackage},
        package_data={"fusednorm": ["include/fusednorm/*.h", "share/cmake/FusedNorm/*.cmake"]},
        options={"bdist_wheel": {"py_limited_api": "cp39"}},
    )
