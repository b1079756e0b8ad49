"""Code paths of the CPU channel-norm kernels that the BatchNorm tests' small
shapes do not reach: statistics split over several slices and chunks per
channel, runs that end in a whole vector reaching back (and in a partial one),
and the baseline-ISA build of the kernels next to the AVX2 one
(ATEN_CPU_CAPABILITY=default selects it, as it does PyTorch's own kernels).
The row-norm kernels (layer norm, RMS norm) are built the same way: their
cases here run through both builds too. PyTorch is the oracle, as everywhere."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import fusednorm
from reference import assert_close, batch_norm_act, oracle_dtype
from row_norm_testing import LAYER_NORM, RMS_NORM, run_case

CASES = [
    # (shape, layout): what it reaches
    ((1, 2, 96, 96), "contiguous"),  # few planes: each split in slices, each slice in chunks with a tail
    ((2, 3, 4100), "contiguous"),  # planes a few elements longer than a chunk
    ((1, 12, 40, 40), "channels_last"),  # one sample: rows split in slices; 12 channels = a vector + a tail
    ((3, 8, 7, 7), "contiguous"),  # 7x7 planes: six vectors and a tail reaching back
    ((3, 8, 7, 7), "channels_last"),  # rows of exactly one vector
    ((2, 2, 3, 3), "channels_last"),  # rows shorter than a vector
    ((5, 20, 2, 2), "contiguous"),  # planes shorter than a vector
]
DTYPES = [torch.float64, torch.float32, torch.bfloat16]
ACTIVATIONS = {"silu": nn.SiLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "identity": nn.Identity}


def check(shape, layout, dtype, activation):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 2 + 0.5).to(dtype)
    res = torch.randn(shape).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        res = res.contiguous(memory_format=torch.channels_last)
    C = shape[1]
    weight = (torch.rand(C) + 0.5).to(dtype).requires_grad_()
    bias = torch.randn(C).to(dtype).requires_grad_()
    x.requires_grad_()
    res.requires_grad_()
    act = ACTIVATIONS[activation]()
    y = fusednorm.functional.batch_norm(x, None, None, weight, bias, True, activation=act, residual=res)
    grad = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, res, weight, bias), grad)

    ref_dtype = oracle_dtype(dtype)
    leaves = [t.detach().to(ref_dtype).requires_grad_() for t in (x, res, weight, bias)]
    xr, rr, wr, br = leaves
    yr = batch_norm_act(xr, None, None, wr, br, True, 0.1, 1e-5, act, rr)
    ref_grads = torch.autograd.grad(yr, leaves, grad.to(ref_dtype))
    where = f"{shape} {layout} {dtype} {activation}"
    assert_close(y, yr, dtype, f"output ({where})")
    # The input gradient is a difference of terms of the size of grad * weight * invstd.
    magnitude = (grad.to(ref_dtype).abs() * wr.detach().abs().max()).max().item() / yr.detach().std().item()
    assert_close(grads[0], ref_grads[0], dtype, f"grad_input ({where})", scale=4.0, magnitude=magnitude)
    assert_close(grads[1], ref_grads[1], dtype, f"grad_residual ({where})")
    assert_close(grads[2], ref_grads[2], dtype, f"grad_weight ({where})", scale=4.0)
    assert_close(grads[3], ref_grads[3], dtype, f"grad_bias ({where})", scale=4.0)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,layout", CASES, ids=str)
def test_kernel_paths(shape, layout, dtype, activation):
    check(shape, layout, dtype, activation)


ROW_CASES = [
    # (shape, normalized ndim): what it reaches
    ((5, 1029), 1),  # rows of whole vectors and a partial one
    ((4, 3, 7), 2),  # 21 columns: PReLU's channel along them
    ((3, 6000), 1),  # rows of several chunks of row sums
    ((700, 4, 5), 1),  # blocks of more rows than a chunk of column sums; PReLU along the rows
]


@pytest.mark.parametrize("activation", ["gelu", "silu", "prelu", "identity"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,ndim", ROW_CASES, ids=str)
@pytest.mark.parametrize("norm", [LAYER_NORM, RMS_NORM], ids=lambda n: n.name)
def test_row_norm_kernel_paths(norm, shape, ndim, dtype, activation):
    run_case(norm, "cpu", dtype, shape, ndim, activation, True)


@pytest.mark.skipif(os.environ.get("ATEN_CPU_CAPABILITY") == "default", reason="this is the baseline run itself")
def test_baseline_isa_kernels():
    """The same cases through the baseline-ISA build of the kernels."""
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        os.path.join(here, os.path.basename(__file__)),
    ]
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip().endswith("DEFAULT"), probe.stdout + probe.stderr
    result = subprocess.run(cmd, env=env, cwd=here, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
