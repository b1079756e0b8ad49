"""fusednorm InstanceNorm + activation (+ residual) against PyTorch's own
F.instance_norm followed by the torch activation, running statistics included."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusednorm
import norm_cases as cases
from reference import assert_close, instance_norm_act, oracle_dtype

EPS = 1e-5


def run_case(
    device,
    dtype,
    shape,
    layout,
    activation_name,
    with_residual,
    affine=True,
    running=False,
    use_input_stats=True,
    steps=1,
):
    C = shape[1]
    param_dtype = torch.float32 if dtype in cases.LOW_PRECISION else dtype
    act, ref_act = cases.activation_pair(activation_name, C, device, dtype)
    weight, bias = cases.make_params(C, device, param_dtype, affine)
    rm = (torch.randn(C, device=device) * 0.1).to(param_dtype) if running else None
    rv = (torch.rand(C, device=device) + 0.5).to(param_dtype) if running else None
    rm_ref = rm.to(oracle_dtype(dtype)) if running else None
    rv_ref = rv.to(oracle_dtype(dtype)) if running else None

    def fused(input, residual, weight, bias):
        return fusednorm.functional.instance_norm(
            input, rm, rv, weight, bias, use_input_stats, 0.1, EPS, activation=act, residual=residual
        )

    def oracle(input, residual, weight, bias):
        return instance_norm_act(input, rm_ref, rv_ref, weight, bias, use_input_stats, 0.1, EPS, ref_act, residual)

    for step in range(steps):
        x, residual = cases.make_case_inputs(shape, dtype, layout, device, with_residual)
        scale = cases.gain(weight) * cases.max_invstd([x.detach().reshape(shape[0] * C, -1)], EPS)
        inputs = dict(input=x, residual=residual, weight=weight, bias=bias)
        where = f"{activation_name} {dtype} {shape} {layout} use_input_stats={use_input_stats} step {step}"
        cases.compare_with_oracle(
            fused, oracle, inputs, dtype, where, act, ref_act, dict(input=cases.input_grad_magnitude(scale))
        )
        if running:
            assert_close(rm, rm_ref, param_dtype, f"running_mean ({where})")
            assert_close(rv, rv_ref, param_dtype, f"running_var ({where})")
    return rm, rv


@cases.every_activation
def test_every_activation(device, dtype, activation_name, layout, with_residual):
    run_case(device, dtype, (3, 4, 5, 5), layout, activation_name, with_residual)


SHAPES = [
    ((2, 3, 10), ["contiguous", "strided"]),
    ((1, 5, 3, 2), ["contiguous", "channels_last"]),
    ((3, 16, 1, 2), ["contiguous", "channels_last"]),
    *cases.ODD_SHAPES,
]


@cases.over_shapes(SHAPES)
def test_shapes_and_layouts(device, dtype, shape, layout, activation_name, with_residual):
    run_case(device, dtype, shape, layout, activation_name, with_residual)


@pytest.mark.parametrize("dtype", cases.DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_running_stats_then_eval(device, dtype, layout):
    """use_input_stats updates the running statistics with their batch average (as
    F.instance_norm); use_input_stats=False then normalises with them."""
    run_case(device, dtype, (4, 5, 4, 3), layout, "gelu", True, running=True, steps=3)
    run_case(device, dtype, (4, 5, 4, 3), layout, "leaky_relu", True, running=True, use_input_stats=False)


def test_without_affine(device):
    run_case(device, torch.float32, (4, 6, 3, 3), "channels_last", "elu", True, affine=False, running=True)


@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (2, 3, 1), (4, 3)])
def test_one_spatial_element_is_an_error_as_in_torch(device, shape):
    x = torch.randn(shape, device=device)
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        F.instance_norm(x)
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        fusednorm.functional.instance_norm(x)
    # Running statistics need no spatial extent, in torch and here.
    rm, rv = torch.zeros(shape[1], device=device), torch.ones(shape[1], device=device)
    if len(shape) > 2:
        torch.testing.assert_close(
            fusednorm.functional.instance_norm(x, rm, rv, use_input_stats=False),
            F.instance_norm(x, rm, rv, use_input_stats=False),
        )


def test_single_sample_channels_last_grad(device):
    """N == 1 with a channels_last grad_output: torch's own instance_norm gets the
    input gradient wrong here (torch 2.14.1), ours agrees with group norm with one
    group per channel, which is the same function."""
    x = cases.make_input((1, 5, 4, 3), torch.float64, "channels_last", device).requires_grad_()
    w = torch.rand(5, dtype=torch.float64, device=device) + 0.5
    grad = torch.randn(1, 5, 4, 3, dtype=torch.float64, device=device).to(memory_format=torch.channels_last)
    (ours,) = torch.autograd.grad(fusednorm.functional.instance_norm(x, weight=w, activation="silu"), x, grad)
    (expected,) = torch.autograd.grad(F.silu(F.group_norm(x, 5, w)), x, grad)
    torch.testing.assert_close(ours, expected)


MODULES = [
    (fusednorm.nn.InstanceNorm1d, nn.InstanceNorm1d, (3, 4, 9)),
    (fusednorm.nn.InstanceNorm2d, nn.InstanceNorm2d, (3, 4, 5, 5)),
    (fusednorm.nn.InstanceNorm3d, nn.InstanceNorm3d, (2, 4, 3, 3, 3)),
]


@pytest.mark.parametrize("fused_cls,torch_cls,shape", MODULES, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("track_running_stats", [False, True])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_module_matches_torch(device, fused_cls, torch_cls, shape, affine, track_running_stats, momentum):
    """Train steps then eval: outputs, running statistics and state_dict as torch.nn's."""
    kwargs = dict(affine=affine, track_running_stats=track_running_stats, momentum=momentum)
    fused = fused_cls(4, activation="relu", **kwargs).to(device)
    ref = torch_cls(4, **kwargs).to(device)
    if affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.uniform_(-0.5, 0.5)
    cases.check_module_train_then_eval(fused, ref, shape, device)


@pytest.mark.parametrize("fused_cls,torch_cls,shape", MODULES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_unbatched_input(device, fused_cls, torch_cls, shape):
    """(C, *) input, as torch.nn.InstanceNorm*d handles it, residual included."""
    fused = fused_cls(4, affine=True, track_running_stats=True, activation="silu").to(device)
    ref = torch_cls(4, affine=True, track_running_stats=True).to(device)
    x = torch.randn(shape[1:], device=device, requires_grad=True)
    skip = torch.randn_like(x)
    y = fused(x, residual=skip)
    yr = F.silu(ref(x) + skip)
    assert y.shape == x.shape
    torch.testing.assert_close(y, yr)
    torch.testing.assert_close(fused.running_mean, ref.running_mean)
    torch.testing.assert_close(fused.running_var, ref.running_var)
    grad = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, grad)[0], torch.autograd.grad(yr, x, grad)[0])


def test_num_features_mismatch_as_in_torch(device):
    x = torch.randn(2, 3, 8, device=device)
    with pytest.raises(ValueError, match="to match num_features"):
        fusednorm.nn.InstanceNorm1d(4, affine=True)(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = fusednorm.nn.InstanceNorm1d(4, activation="tanh")(x)
    assert any("does not match num_features" in str(w.message) for w in caught)
    torch.testing.assert_close(y, torch.tanh(F.instance_norm(x)))


def test_module_channels_last_output(device):
    x = torch.randn(2, 4, 5, 6, device=device).to(memory_format=torch.channels_last)
    y = fusednorm.nn.InstanceNorm2d(4, affine=True, activation="relu").to(device)(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, F.relu(F.instance_norm(x)))


@pytest.mark.parametrize("use_input_stats", [True, False])
@pytest.mark.parametrize("activation", ["silu", "prelu"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck(device, use_input_stats, activation, layout):
    rm = torch.randn(3, dtype=torch.float64, device=device)
    rv = torch.rand(3, dtype=torch.float64, device=device) + 0.5

    def call(x, w, b, r, *activation_args):
        args = (x, w, b, rm.clone(), rv.clone(), r, use_input_stats, 0.1, EPS)
        return torch.ops.fusednorm.instance_norm_act(*args, *activation_args)

    cases.check_gradients((2, 3, 4, 3), layout, device, activation, call)


def test_autocast_casts_residual(device):
    cases.check_autocast_casts_residual(
        device,
        (2, 3, 4, 4),
        lambda x, skip: fusednorm.functional.instance_norm(x, residual=skip, activation="relu"),
        F.instance_norm,
    )


def test_empty_batch(device):
    """N = 0 gives an empty output and leaves the running statistics alone (torch
    2.14 turns them into NaN: the average over no instances)."""
    norm = fusednorm.nn.InstanceNorm2d(3, affine=True, track_running_stats=True, activation="relu").to(device)
    x = torch.randn(0, 3, 4, 4, device=device, requires_grad=True)
    y = norm(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert torch.equal(norm.running_mean, torch.zeros(3, device=device))
    assert torch.equal(norm.bias.grad, torch.zeros(3, device=device))
