"""fusednorm RMSNorm + activation (+ residual) against PyTorch's own F.rms_norm
followed by the torch activation. The tests shared with layer norm
(RowNormSuite, in row_norm_testing.py) run as TestRMSNorm; the functions here are
RMS-norm specific."""

import pytest
import torch
import torch.nn.functional as F

import fusednorm
from reference import assert_close
from row_norm_testing import RMS_NORM, RowNormSuite, run_case


class TestRMSNorm(RowNormSuite):
    norm = RMS_NORM


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_default_eps_is_torchs(device, dtype):
    """eps=None as torch.rms_norm: the accumulation dtype's epsilon, which matters
    for rows of tiny values."""
    x = (torch.randn(4, 32, device=device) * 1e-4).to(dtype)
    y = fusednorm.functional.rms_norm(x, [32])
    expected = F.rms_norm(x, [32])
    assert_close(y, expected, dtype, "rms_norm with eps=None")
    module = fusednorm.nn.RMSNorm(32, device=device, dtype=dtype)
    assert module.eps is None
    assert_close(module(x), torch.nn.RMSNorm(32, device=device, dtype=dtype)(x), dtype, "RMSNorm module")


def test_rstd_output(device):
    x = torch.randn(3, 4, 10, device=device)
    out, rstd = torch.ops.fusednorm.rms_norm_act(x, [10], None, None, 1e-6, "identity")
    assert rstd.shape == (3, 4, 1) and rstd.dtype == torch.float32
    torch.testing.assert_close(rstd, x.double().square().mean(-1, keepdim=True).add(1e-6).rsqrt().float())
    torch.testing.assert_close(out, F.rms_norm(x, [10], eps=1e-6))


def test_wide_rows_bfloat16(device):
    run_case(RMS_NORM, device, torch.bfloat16, (3, 16384), 1, "silu", True)
