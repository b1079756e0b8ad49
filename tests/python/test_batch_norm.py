"""fusednorm BatchNorm + activation (+ residual) against PyTorch's own
F.batch_norm followed by the torch activation."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusednorm
from norm_cases import (
    DTYPES,
    LOW_PRECISION,
    check_autocast_casts_residual,
    check_module_train_then_eval,
    check_non_contiguous_residual_and_grad,
    make_input,
)
from reference import ACTIVATIONS, assert_close, batch_norm_act, check_rrelu_training, oracle_dtype


def run_case(
    device, dtype, shape, layout, activation_name, with_residual, training=True, affine=True, param_dtype=None, steps=1
):
    """Runs ours and the oracle on the same (rounded) inputs; compares outputs,
    running statistics and every gradient."""
    C = shape[1]
    ref_dtype = oracle_dtype(dtype)
    param_dtype = param_dtype or (torch.float32 if dtype in LOW_PRECISION else dtype)
    make_act = ACTIVATIONS[activation_name]
    act = make_act()
    if isinstance(act, nn.PReLU):
        act = nn.PReLU(C, init=0.2).to(device)
        with torch.no_grad():
            act.weight.uniform_(0.05, 0.5)
    ref_act = copy.deepcopy(act).to(ref_dtype)

    weight = (torch.rand(C, device=device) + 0.5).to(param_dtype) if affine else None
    bias = (torch.randn(C, device=device) * 0.3).to(param_dtype) if affine else None
    rm = torch.randn(C, device=device).to(param_dtype) * 0.1
    rv = (torch.rand(C, device=device) + 0.5).to(param_dtype)
    rm_ref, rv_ref = rm.to(ref_dtype), rv.to(ref_dtype)
    for step in range(steps):
        x = make_input(shape, dtype, layout, device).requires_grad_()
        residual = (
            make_input(shape, dtype, layout, device, mean=0.0, std=1.0).requires_grad_() if with_residual else None
        )
        params = [p for p in (weight, bias) if p is not None]
        for p in params:
            p.requires_grad_()
        y = fusednorm.functional.batch_norm(
            x, rm, rv, weight, bias, training, 0.1, 1e-5, activation=act, residual=residual
        )
        xr = x.detach().to(ref_dtype).requires_grad_()
        rr = residual.detach().to(ref_dtype).requires_grad_() if with_residual else None
        wr = weight.detach().to(ref_dtype).requires_grad_() if affine else None
        br = bias.detach().to(ref_dtype).requires_grad_() if affine else None
        yr = batch_norm_act(xr, rm_ref, rv_ref, wr, br, training, 0.1, 1e-5, ref_act, rr)

        where = f"{activation_name} {dtype} {shape} {layout} step {step}"
        assert y.dtype == dtype
        if layout == "channels_last":
            assert y.is_contiguous(memory_format=torch.channels_last if y.dim() == 4 else torch.channels_last_3d)
        assert_close(y, yr, dtype, f"output ({where})")
        # Running statistics are held to the rounding of the dtype they are stored in.
        assert_close(rm, rm_ref, param_dtype, f"running_mean ({where})")
        assert_close(rv, rv_ref, param_dtype, f"running_var ({where})")

        grad = torch.randn_like(y)
        inputs = [x] + ([residual] if with_residual else []) + params
        ref_inputs = [xr] + ([rr] if with_residual else []) + ([wr, br] if affine else [])
        if isinstance(act, nn.PReLU):
            inputs.append(act.weight)
            ref_inputs.append(ref_act.weight)
        grads = torch.autograd.grad(y, inputs, grad)
        ref_grads = torch.autograd.grad(yr, ref_inputs, grad.to(ref_dtype))
        names = ["input"] + (["residual"] if with_residual else []) + (["weight", "bias"] if affine else [])
        names += ["prelu_weight"] if isinstance(act, nn.PReLU) else []
        # Input gradients of a batch norm are differences of terms of this size,
        # which can cancel to near zero (exactly so for two samples).
        dims = [d for d in range(x.dim()) if d != 1]
        var = xr.detach().var(dim=dims, unbiased=False) if training else rv_ref
        gain = wr.detach().abs() if affine else torch.ones_like(var)
        term = grad.abs().max().item() * (gain / torch.sqrt(var + 1e-5)).max().item()
        for name, g, gr, inp in zip(names, grads, ref_grads, inputs):
            # Parameter grads are sums over the batch, kept in the parameter's dtype.
            g_dtype = inp.dtype if inp.dtype not in LOW_PRECISION or name in ("input", "residual") else dtype
            assert g.dtype == inp.dtype
            assert_close(
                g, gr, g_dtype, f"grad {name} ({where})", scale=4.0, magnitude=term if name == "input" else None
            )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation_name", list(ACTIVATIONS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
def test_every_activation(device, dtype, activation_name, layout, with_residual):
    run_case(device, dtype, (4, 6, 5, 5), layout, activation_name, with_residual)


SHAPES = [
    ((8, 5), ["contiguous", "strided"]),
    ((2, 3), ["contiguous"]),
    ((4, 3, 10), ["contiguous", "strided"]),
    ((2, 3, 7, 7), ["contiguous", "channels_last", "strided"]),
    ((4, 1, 5, 5), ["contiguous", "channels_last"]),
    ((3, 16, 1, 1), ["contiguous", "channels_last"]),
    ((2, 33, 9, 11), ["contiguous", "channels_last", "strided"]),
    ((2, 4, 3, 5, 6), ["contiguous", "channels_last", "strided"]),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,layout", [(shape, layout) for shape, layouts in SHAPES for layout in layouts], ids=str)
@pytest.mark.parametrize("activation_name", ["relu", "silu"])
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
def test_shapes_and_layouts(device, dtype, shape, layout, activation_name, with_residual):
    run_case(device, dtype, shape, layout, activation_name, with_residual)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_eval_mode_uses_running_stats(device, dtype, layout):
    run_case(device, dtype, (3, 5, 4, 4), layout, "gelu", True, training=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_running_stats_over_several_steps(device, dtype):
    run_case(device, dtype, (4, 6, 3, 3), "contiguous", "relu", False, steps=4)


def test_without_affine(device):
    run_case(device, torch.float32, (4, 6, 3, 3), "channels_last", "elu", True, affine=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_params(device, dtype):
    """Weights and running stats in the input's own dtype (module.half())."""
    run_case(device, dtype, (4, 6, 3, 3), "contiguous", "silu", False, param_dtype=dtype)


MODULES = [
    (fusednorm.nn.BatchNorm1d, nn.BatchNorm1d, (6, 4, 9)),
    (fusednorm.nn.BatchNorm1d, nn.BatchNorm1d, (6, 4)),
    (fusednorm.nn.BatchNorm2d, nn.BatchNorm2d, (3, 4, 5, 5)),
    (fusednorm.nn.BatchNorm3d, nn.BatchNorm3d, (2, 4, 3, 3, 3)),
]


@pytest.mark.parametrize("fused_cls,torch_cls,shape", MODULES, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("track_running_stats", [True, False])
def test_module_matches_torch(device, fused_cls, torch_cls, shape, momentum, track_running_stats):
    """Train steps then eval: outputs, running stats and num_batches_tracked as torch.nn's."""
    fused = fused_cls(4, momentum=momentum, track_running_stats=track_running_stats, activation="relu").to(device)
    ref = torch_cls(4, momentum=momentum, track_running_stats=track_running_stats).to(device)
    check_module_train_then_eval(fused, ref, shape, device)


def test_module_residual_and_activation_instances(device):
    bn = fusednorm.nn.BatchNorm2d(4, activation=nn.LeakyReLU(0.3)).to(device)
    ref = nn.BatchNorm2d(4).to(device)
    x = torch.randn(2, 4, 3, 3, device=device)
    skip = torch.randn_like(x)
    torch.testing.assert_close(bn(x, residual=skip), F.leaky_relu(ref(x) + skip, 0.3))
    assert "activation=LeakyReLU(negative_slope=0.3)" in repr(bn)


def test_state_dict_round_trip_with_torch(device):
    ref = nn.BatchNorm2d(5).to(device)
    ref(torch.randn(4, 5, 3, 3, device=device))  # non-trivial running stats
    with torch.no_grad():
        ref.weight.uniform_()
        ref.bias.uniform_()
    fused = fusednorm.nn.BatchNorm2d(5, activation="silu").to(device)
    fused.load_state_dict(ref.state_dict())
    assert fused.state_dict().keys() == ref.state_dict().keys()
    back = nn.BatchNorm2d(5).to(device)
    back.load_state_dict(fused.state_dict())
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value)
    fused.eval()
    ref.eval()
    x = torch.randn(2, 5, 4, 4, device=device)
    torch.testing.assert_close(fused(x), F.silu(ref(x)))


@pytest.mark.parametrize("fused_cls", [fusednorm.nn.BatchNorm2d, fusednorm.nn.InstanceNorm2d])
def test_module_without_bias(device, fused_cls):
    """bias=False as torch 2.12+ takes it, on every supported torch (2.11's classes predate it)."""
    fused = fused_cls(4, affine=True, bias=False, activation="relu").to(device)
    assert fused.bias is None and "bias" not in fused.state_dict() and "weight" in fused.state_dict()
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 4, 5, 5, device=device)
    if fused_cls is fusednorm.nn.BatchNorm2d:
        expected = F.batch_norm(x, None, None, fused.weight, None, training=True)
    else:
        expected = F.instance_norm(x, weight=fused.weight)
    torch.testing.assert_close(fused(x), torch.relu(expected))


def test_prelu_module_is_a_trained_submodule(device):
    prelu = nn.PReLU(4, init=0.1)
    bn = fusednorm.nn.BatchNorm2d(4, activation=prelu).to(device)
    assert "activation.weight" in bn.state_dict()
    x = torch.randn(2, 4, 3, 3, device=device)
    bn(x).sum().backward()
    assert bn.activation.weight.grad is not None and bn.activation.weight.grad.abs().sum() > 0


def test_rrelu_training_is_random_reproducible_and_consistent(device):
    x = torch.randn(4, 3, 8, 8, device=device, dtype=torch.float64, requires_grad=True)
    rrelu = nn.RReLU(0.1, 0.4)
    check_rrelu_training(
        lambda t: fusednorm.functional.batch_norm(t, None, None, training=True, activation=rrelu),
        lambda t: F.batch_norm(t, None, None, training=True),
        x,
        0.1,
        0.4,
    )


def test_rrelu_eval_uses_mean_slope(device):
    x = torch.randn(4, 3, 5, 5, device=device)
    rrelu = nn.RReLU(0.1, 0.3).eval()
    y = fusednorm.functional.batch_norm(x, None, None, training=True, activation=rrelu)
    torch.testing.assert_close(y, rrelu(F.batch_norm(x, None, None, training=True)))


@pytest.mark.parametrize("activation", ["silu", "leaky_relu", "gelu_tanh", "prelu"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck(device, activation, training, layout):
    C = 3
    x = make_input((3, C, 4, 3), torch.float64, layout, device).requires_grad_()
    w = (torch.rand(C, dtype=torch.float64, device=device) + 0.5).requires_grad_()
    b = torch.randn(C, dtype=torch.float64, device=device).requires_grad_()
    r = make_input((3, C, 4, 3), torch.float64, layout, device).requires_grad_()
    rm = torch.zeros(C, dtype=torch.float64, device=device)
    rv = torch.ones(C, dtype=torch.float64, device=device)
    act_weight = (torch.rand(C, dtype=torch.float64, device=device) * 0.3).requires_grad_()
    act = "leaky_relu" if activation == "leaky_relu" else activation

    def fn(x, w, b, r, aw):
        out, _, _ = torch.ops.fusednorm.batch_norm_act(
            x,
            w,
            b,
            rm.clone(),
            rv.clone(),
            r,
            training,
            0.1,
            1e-5,
            act,
            [0.2] if act == "leaky_relu" else [],
            aw if act == "prelu" else None,
            None,
        )
        return out

    assert torch.autograd.gradcheck(fn, (x, w, b, r, act_weight), eps=1e-6, atol=1e-5)


def test_non_contiguous_residual_and_grad(device):
    bn = fusednorm.nn.BatchNorm2d(3, activation="tanh").to(device)
    check_non_contiguous_residual_and_grad(bn, nn.BatchNorm2d(3).to(device), (2, 3, 6, 6), device)


def test_autocast_casts_residual(device):
    check_autocast_casts_residual(
        device,
        (2, 3, 4, 4),
        lambda x, skip: fusednorm.functional.batch_norm(x, None, None, training=True, residual=skip, activation="relu"),
        lambda x: F.batch_norm(x, None, None, training=True),
    )
