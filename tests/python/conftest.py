import pytest
import torch

import fusednorm


def available_devices():
    devices = ["cpu"]
    if torch.cuda.is_available():
        # A CUDA machine must run the CUDA tests: a build without CUDA kernels is an error there.
        assert fusednorm.has_cuda_kernels(), "CUDA is available but fusednorm was built without CUDA kernels"
        devices.append("cuda")
    return devices


DEVICES = available_devices()


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
