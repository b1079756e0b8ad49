"""fusednorm GroupNorm + activation (+ residual) against PyTorch's own
F.group_norm followed by the torch activation."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusednorm
import norm_cases as cases
from reference import assert_close, group_norm_act

EPS = 1e-5


def run_case(device, dtype, shape, groups, layout, activation_name, with_residual, affine=True, param_dtype=None):
    N, C = shape[:2]
    param_dtype = param_dtype or (torch.float32 if dtype in cases.LOW_PRECISION else dtype)
    act, ref_act = cases.activation_pair(activation_name, C, device, dtype)
    weight, bias = cases.make_params(C, device, param_dtype, affine)
    x, residual = cases.make_case_inputs(shape, dtype, layout, device, with_residual)

    def fused(input, residual, weight, bias):
        return fusednorm.functional.group_norm(input, groups, weight, bias, EPS, activation=act, residual=residual)

    def oracle(input, residual, weight, bias):
        return group_norm_act(input, groups, weight, bias, EPS, ref_act, residual)

    invstd = cases.max_invstd([x.detach().reshape(N * groups, -1)], EPS)

    def weight_grad_magnitude(grad):
        # One-element groups: x_hat is 0, and the oracle's is rounding noise of this size.
        per_channel = (grad.double() * x.detach().double()).abs().transpose(0, 1).reshape(C, -1).sum(-1)
        return per_channel.max().item() * invstd

    magnitudes = dict(input=cases.input_grad_magnitude(cases.gain(weight) * invstd), weight=weight_grad_magnitude)
    inputs = dict(input=x, residual=residual, weight=weight, bias=bias)
    where = f"{activation_name} {dtype} {shape} G={groups} {layout}"
    output_magnitude = x.detach().abs().max().item() * cases.gain(weight) * invstd
    cases.compare_with_oracle(fused, oracle, inputs, dtype, where, act, ref_act, magnitudes, output_magnitude)


@cases.every_activation
def test_every_activation(device, dtype, activation_name, layout, with_residual):
    run_case(device, dtype, (3, 6, 5, 5), 3, layout, activation_name, with_residual)


# (shape, groups, layouts): groups 1 and C, spatial 1x1 and none, odd sizes, 3-d to 6-d.
SHAPES = [
    ((8, 6), [1, 3, 6], ["contiguous", "strided"]),
    ((3, 4, 10), [1, 2, 4], ["contiguous", "strided"]),
    ((2, 6, 7, 7), [1, 3, 6], ["contiguous", "channels_last", "strided"]),
    ((3, 16, 1, 1), [1, 4, 16], ["contiguous", "channels_last"]),
    ((2, 33, 9, 11), [3, 11, 33], ["contiguous", "channels_last", "strided"]),
    ((1, 5, 3, 2), [1, 5], ["contiguous", "channels_last"]),
    ((2, 4, 3, 5, 6), [1, 2, 4], ["contiguous", "channels_last", "strided"]),
    ((2, 4, 2, 3, 2, 2), [2], ["contiguous"]),
]


@pytest.mark.parametrize("dtype", cases.DTYPES, ids=str)
@pytest.mark.parametrize(
    "shape,groups,layout",
    [(shape, g, layout) for shape, groups, layouts in SHAPES for g in groups for layout in layouts],
    ids=str,
)
@pytest.mark.parametrize("activation_name,with_residual", [("relu", False), ("silu", True)])
def test_shapes_groups_and_layouts(device, dtype, shape, groups, layout, activation_name, with_residual):
    run_case(device, dtype, shape, groups, layout, activation_name, with_residual)


def test_without_affine(device):
    run_case(device, torch.float32, (4, 6, 3, 3), 2, "channels_last", "elu", True, affine=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_params(device, dtype):
    """Weights in the input's own dtype (module.half())."""
    run_case(device, dtype, (4, 6, 3, 3), 2, "contiguous", "silu", True, param_dtype=dtype)


def test_large_offset_is_stable(device):
    """Statistics of values far from zero do not lose the variance (fp32)."""
    x = torch.randn(2, 4, 16, 16, device=device) + 1000.0
    y = fusednorm.functional.group_norm(x, 2)
    assert_close(y, F.group_norm(x.double(), 2), torch.float32, "output", scale=50.0)


def test_one_value_per_group_is_an_error_as_in_torch(device):
    x = torch.randn(1, 4, 1, 1, device=device)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        F.group_norm(x, 4)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        fusednorm.functional.group_norm(x, 4)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_module_matches_torch(device, layout):
    ref = nn.GroupNorm(2, 6).to(device)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-0.5, 0.5)
    fused = fusednorm.nn.GroupNorm(2, 6, activation="silu").to(device)
    fused.load_state_dict(ref.state_dict())
    assert fused.state_dict().keys() == ref.state_dict().keys()
    x = cases.make_input((3, 6, 5, 4), torch.float32, layout, device)
    skip = torch.randn_like(x)
    y = fused(x, residual=skip)
    torch.testing.assert_close(y, F.silu(ref(x) + skip))
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    assert "2, 6, eps=1e-05" in repr(fused) and "activation=SiLU()" in repr(fused)


def test_module_without_bias_and_with_prelu(device):
    fused = fusednorm.nn.GroupNorm(3, 6, bias=False, activation=nn.PReLU(6, init=0.1)).to(device)
    assert set(fused.state_dict()) == {"weight", "activation.weight"}
    x = torch.randn(2, 6, 4, 4, device=device)
    ref = nn.GroupNorm(3, 6).to(device)
    ref.register_parameter("bias", None)  # bias=False, also where torch's GroupNorm predates it (2.11)
    torch.testing.assert_close(fused(x), F.prelu(ref(x), fused.activation.weight))
    fused(x).sum().backward()
    assert fused.activation.weight.grad.abs().sum() > 0


def test_rrelu_training_is_reproducible_and_consistent(device):
    """Random slopes drawn from torch's generator; gradients use the drawn slopes."""
    x = torch.randn(3, 4, 6, 6, device=device, dtype=torch.float64, requires_grad=True)
    rrelu = nn.RReLU(0.1, 0.4)
    torch.manual_seed(5)
    y1 = fusednorm.functional.group_norm(x, 2, activation=rrelu)
    torch.manual_seed(5)
    y2 = fusednorm.functional.group_norm(x, 2, activation=rrelu)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    z = F.group_norm(x, 2)
    negative = z < 0
    slope = torch.where(negative, y1 / z, torch.ones_like(z)).detach()
    assert ((slope[negative] >= 0.1 - 1e-12) & (slope[negative] <= 0.4 + 1e-12)).all()
    grad = torch.randn_like(y1)
    (gx,) = torch.autograd.grad(y1, x, grad)
    xr = x.detach().requires_grad_()
    (gxr,) = torch.autograd.grad(F.group_norm(xr, 2) * slope, xr, grad)
    torch.testing.assert_close(gx, gxr)


@pytest.mark.parametrize("groups", [1, 2, 6])
@pytest.mark.parametrize("activation", ["silu", "leaky_relu", "gelu_tanh", "prelu"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck(device, groups, activation, layout):
    def call(x, w, b, r, *activation_args):
        return torch.ops.fusednorm.group_norm_act(x, groups, w, b, r, EPS, *activation_args)

    cases.check_gradients((2, 6, 3, 2), layout, device, activation, call)


def test_non_contiguous_residual_and_grad(device):
    gn = fusednorm.nn.GroupNorm(2, 4, activation="tanh").to(device)
    cases.check_non_contiguous_residual_and_grad(gn, nn.GroupNorm(2, 4).to(device), (2, 4, 6, 5), device)


def test_autocast_casts_residual(device):
    cases.check_autocast_casts_residual(
        device,
        (2, 4, 4, 4),
        lambda x, skip: fusednorm.functional.group_norm(x, 2, residual=skip, activation="relu"),
        lambda x: F.group_norm(x, 2),
    )


def test_saved_statistics_match_torch(device):
    """save_mean / save_invstd are per (sample, group), as torch.native_group_norm's."""
    x = torch.randn(3, 6, 4, 5, device=device, dtype=torch.float64)
    _, mean, invstd = torch.ops.fusednorm.group_norm_act(x, 3, None, None, None, EPS)
    _, ref_mean, ref_rstd = torch.native_group_norm(x, None, None, 3, 6, 20, 3, EPS)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(invstd, ref_rstd)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_empty_batch(device, layout):
    """N = 0 gives empty outputs and gradients (zero for the parameters), as torch does."""
    x = torch.randn(0, 4, 3, 3, device=device)
    x = (x.to(memory_format=torch.channels_last) if layout == "channels_last" else x).requires_grad_()
    gn = fusednorm.nn.GroupNorm(2, 4, activation="silu").to(device)
    y = gn(x)
    assert y.shape == F.group_norm(x, 2).shape
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(gn.weight.grad, torch.zeros_like(gn.weight))
