"""fusednorm LayerNorm + activation (+ residual) against PyTorch's own
F.layer_norm followed by the torch activation. The tests shared with RMS norm
(RowNormSuite, in row_norm_testing.py) run as TestLayerNorm; the functions here are
layer-norm specific."""

import torch
import torch.nn.functional as F
from torch import nn

import fusednorm
from reference import assert_close
from row_norm_testing import LAYER_NORM, RowNormSuite, run_case


class TestLayerNorm(RowNormSuite):
    norm = LAYER_NORM


def test_module_without_bias_matches_torch(device):
    fused = fusednorm.nn.LayerNorm(6, bias=False, activation="sigmoid").to(device)
    ref = nn.LayerNorm(6, bias=False).to(device)
    assert fused.bias is None and fused.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(4, 6, device=device)
    torch.testing.assert_close(fused(x), torch.sigmoid(ref(x)))


def test_statistics_outputs_match_native_layer_norm(device):
    """mean and rstd: the accumulation dtype and aten::native_layer_norm's shape."""
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        x = torch.randn(2, 3, 4, 5, device=device, dtype=dtype)
        out, mean, rstd = torch.ops.fusednorm.layer_norm_act(x, [4, 5], None, None, None, 1e-5, "identity")
        _, ref_mean, ref_rstd = torch.ops.aten.native_layer_norm(x.double(), [4, 5], None, None, 1e-5)
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        assert mean.dtype == acc and rstd.dtype == acc
        assert mean.shape == ref_mean.shape == (2, 3, 1, 1)
        assert_dtype = torch.float32 if dtype == torch.bfloat16 else dtype  # statistics are fp32 for bf16
        assert_close(mean, ref_mean, assert_dtype, "mean")
        assert_close(rstd, ref_rstd, assert_dtype, "rstd")
        assert_close(out, F.layer_norm(x.double(), [4, 5]), dtype, "out")


def test_normalized_size_zero(device):
    x = torch.randn(3, 0, device=device)
    out, mean, rstd = torch.ops.fusednorm.layer_norm_act(x, [0], None, None, None, 1e-5, "relu")
    ref_out, ref_mean, ref_rstd = torch.ops.aten.native_layer_norm(x, [0], None, None, 1e-5)
    assert out.shape == ref_out.shape
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(rstd, ref_rstd, equal_nan=True)


def test_wide_rows_bfloat16(device):
    run_case(LAYER_NORM, device, torch.bfloat16, (3, 16384), 1, "gelu_tanh", True)
