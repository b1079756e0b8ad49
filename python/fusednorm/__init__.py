"""fusednorm: fused normalization + activation (+ residual) for PyTorch.

import fusednorm
bn = fusednorm.nn.BatchNorm2d(64, activation="relu")
y = bn(x, residual=skip)            # relu(batch_norm(x) + skip)
"""

from . import _library

_library.load()

from . import activations, functional, nn  # noqa: E402
from ._library import cmake_dir, has_cuda_kernels, library_path  # noqa: E402
from .convert import convert  # noqa: E402

__version__ = "0.1.0"
__all__ = ["activations", "functional", "nn", "cmake_dir", "has_cuda_kernels", "library_path"]
__all__ += ["convert"]
