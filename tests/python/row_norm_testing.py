"""Tests shared by test_layer_norm.py and test_rms_norm.py: each of those
subclasses RowNormSuite with the row norm it runs on (pytest collects the
subclasses, named Test*, not the suite itself). The oracle is PyTorch's own
F.layer_norm / F.rms_norm followed by the torch activation (reference.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional

import pytest
import torch
from torch import nn

import fusednorm
import reference
from reference import ACTIVATIONS, assert_close, check_rrelu_training, oracle_dtype

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class RowNorm:
    """One of the two row norms, as the tests see it."""

    name: str
    has_bias: bool
    default_eps: Optional[float]
    functional: Callable  # fusednorm.functional.<norm>
    fused_module: type  # fusednorm.nn.<Norm>
    torch_module: type  # torch.nn.<Norm>

    def ours(self, x, shape, weight, bias, eps, activation, residual):
        if self.has_bias:
            return self.functional(x, shape, weight, bias, eps, activation=activation, residual=residual)
        return self.functional(x, shape, weight, eps, activation=activation, residual=residual)

    def oracle(self, x, shape, weight, bias, eps, activation, residual, input_dtype):
        if self.has_bias:
            return reference.layer_norm_act(x, shape, weight, bias, eps, activation, residual)
        if eps is None:
            # torch.rms_norm's default is the epsilon of the accumulation dtype of
            # the input under test, not of the oracle's wider dtype.
            eps = torch.finfo(torch.float64 if input_dtype == torch.float64 else torch.float32).eps
        return reference.rms_norm_act(x, shape, weight, eps, activation, residual)

    def rstd(self, x, ndim, eps):
        """Largest per-row 1/std the oracle sees: the scale of input-gradient terms."""
        dims = tuple(range(x.dim() - ndim, x.dim()))
        second = x.var(dim=dims, unbiased=False) if self.has_bias else x.square().mean(dim=dims)
        return (second + (eps or 0.0)).rsqrt().max().item()


LAYER_NORM = RowNorm("layer_norm", True, 1e-5, fusednorm.functional.layer_norm, fusednorm.nn.LayerNorm, nn.LayerNorm)
RMS_NORM = RowNorm("rms_norm", False, None, fusednorm.functional.rms_norm, fusednorm.nn.RMSNorm, nn.RMSNorm)


def make_input(shape, dtype, layout, device, mean=0.5, std=2.0):
    """Random input; 'strided' and 'transposed' are non-dense / non-contiguous views,
    'channels_last' a permuted dense layout (4-d)."""
    if layout == "strided":
        # Every other element of the last dim, of a tensor twice as wide.
        big = torch.randn(*shape[:-1], shape[-1] * 2, device=device) * std + mean
        x = big.to(dtype)[..., ::2]
    elif layout == "transposed":
        swapped = (shape[1], shape[0], *shape[2:])
        x = (torch.randn(swapped, device=device) * std + mean).to(dtype).transpose(0, 1)
    else:
        x = (torch.randn(shape, device=device) * std + mean).to(dtype)
        if layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
    assert x.shape == torch.Size(shape)
    if layout != "contiguous" and x.numel() > 1 and max(shape) > 1:
        assert not x.is_contiguous(), f"{layout} input of shape {shape} should not be contiguous"
    return x


def make_activation(activation_name, shape, device):
    act = ACTIVATIONS[activation_name]()
    if isinstance(act, nn.PReLU):
        # One slope per channel of input dim 1, as torch.nn.PReLU applies it.
        act = nn.PReLU(shape[1] if len(shape) >= 2 else 1).to(device)
        with torch.no_grad():
            act.weight.uniform_(0.05, 0.5)
    return act


def run_case(
    norm: RowNorm,
    device,
    dtype,
    shape,
    ndim,
    activation_name,
    with_residual,
    layout="contiguous",
    weight=True,
    bias=True,
    param_dtype=None,
    eps="default",
):
    """Runs ours and the oracle on the same (rounded) inputs; compares the output
    and every gradient."""
    normalized_shape = tuple(shape[len(shape) - ndim :])
    eps = norm.default_eps if eps == "default" else eps
    ref_dtype = oracle_dtype(dtype)
    param_dtype = param_dtype or (torch.float32 if dtype in LOW_PRECISION else dtype)
    act = make_activation(activation_name, shape, device)
    ref_act = copy.deepcopy(act).to(ref_dtype)
    bias = bias and norm.has_bias

    x = make_input(shape, dtype, layout, device).requires_grad_()
    residual = make_input(shape, dtype, layout, device, mean=0.0, std=1.0).requires_grad_() if with_residual else None
    w = (torch.rand(normalized_shape, device=device) + 0.5).to(param_dtype).requires_grad_() if weight else None
    b = (torch.randn(normalized_shape, device=device) * 0.3).to(param_dtype).requires_grad_() if bias else None
    y = norm.ours(x, list(normalized_shape), w, b, eps, act, residual)

    def ref(t):
        return t.detach().to(ref_dtype).requires_grad_() if t is not None else None

    xr, rr, wr, br = ref(x), ref(residual), ref(w), ref(b)
    yr = norm.oracle(xr, list(normalized_shape), wr, br, eps, ref_act, rr, dtype)

    where = f"{norm.name} {activation_name} {dtype} {shape} ndim={ndim} {layout}"
    assert y.dtype == dtype
    assert y.is_contiguous(), "the output is contiguous, as aten::layer_norm's"
    assert_close(y, yr, dtype, f"output ({where})")

    grad = torch.randn_like(y)
    named = [("input", x, xr), ("residual", residual, rr), ("weight", w, wr), ("bias", b, br)]
    if isinstance(act, nn.PReLU):
        named.append(("prelu_weight", act.weight, ref_act.weight))
    named = [(name, t, tr) for name, t, tr in named if t is not None]
    grads = torch.autograd.grad(y, [t for _, t, _ in named], grad)
    ref_grads = torch.autograd.grad(yr, [tr for _, _, tr in named], grad.to(ref_dtype))
    # Input gradients are differences of terms of this size, which can cancel;
    # weight and bias gradients are sums over rows of terms of about |grad|
    # (exactly zero for a normalized size of 1, up to the oracle's rounding).
    gain = wr.detach().abs().max().item() if w is not None else 1.0
    magnitudes = {
        "input": grad.abs().max().item() * gain * norm.rstd(xr.detach(), ndim, eps),
        "weight": grad.double().abs().reshape(-1, *normalized_shape).sum(0).max().item(),
    }
    magnitudes["bias"] = magnitudes["weight"]
    for (name, t, _), g, gr in zip(named, grads, ref_grads):
        assert g.dtype == t.dtype, f"grad {name} dtype"
        # Parameter grads are sums over rows, kept in the parameter's dtype.
        g_dtype = t.dtype if t.dtype not in LOW_PRECISION or name in ("input", "residual") else dtype
        assert_close(g, gr, g_dtype, f"grad {name} ({where})", scale=4.0, magnitude=magnitudes.get(name))


# (shape, normalized ndim, layouts): normalized sizes 1, 3, 1000, 5120, 8193, and
# normalized_shape of several dims; 1-d to 4-d inputs.
SHAPES = [
    ((7, 1), 1, ["contiguous", "strided"]),
    ((5, 3), 1, ["contiguous", "strided", "transposed"]),
    ((3, 1000), 1, ["contiguous", "transposed"]),
    ((2, 3, 5120), 1, ["contiguous", "strided"]),
    ((2, 8193), 1, ["contiguous", "transposed"]),
    ((9,), 1, ["contiguous", "strided"]),
    ((2, 3, 4, 5), 1, ["contiguous", "channels_last", "transposed"]),
    ((2, 3, 4, 5), 2, ["contiguous", "strided", "channels_last"]),
    ((2, 3, 4, 5), 3, ["contiguous", "channels_last", "transposed"]),
    ((2, 3, 4, 5), 4, ["contiguous", "strided"]),
    ((3, 4, 1, 1), 2, ["contiguous"]),
]

# PReLU's channel (input dim 1) along the rows, along the columns, shared, and the
# columns of a 2-d input.
PRELU_CASES = [
    ((3, 4, 6), 1, "contiguous"),
    ((3, 4, 6), 1, "transposed"),
    ((2, 4, 3, 5), 2, "contiguous"),
    ((2, 4, 3, 5), 3, "transposed"),
    ((5, 7), 1, "contiguous"),
    ((5, 7), 1, "transposed"),
    ((3, 4, 6), 3, "strided"),
    ((8,), 1, "contiguous"),
]


class RowNormSuite:
    """The tests both row norms must pass; subclasses set `norm`."""

    norm: RowNorm

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    @pytest.mark.parametrize("activation_name", list(ACTIVATIONS))
    @pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
    def test_every_activation(self, device, dtype, activation_name, with_residual):
        run_case(self.norm, device, dtype, (4, 6, 10), 1, activation_name, with_residual)

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    @pytest.mark.parametrize(
        "shape,ndim,layout", [(s, n, layout) for s, n, layouts in SHAPES for layout in layouts], ids=str
    )
    @pytest.mark.parametrize("activation_name", ["gelu", "silu"])
    @pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
    def test_shapes_and_layouts(self, device, dtype, shape, ndim, layout, activation_name, with_residual):
        run_case(self.norm, device, dtype, shape, ndim, activation_name, with_residual, layout=layout)

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    @pytest.mark.parametrize("shape,ndim,layout", PRELU_CASES, ids=str)
    def test_prelu_channel_is_input_dim_1(self, device, dtype, shape, ndim, layout):
        run_case(self.norm, device, dtype, shape, ndim, "prelu", True, layout=layout)

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    @pytest.mark.parametrize("weight,bias", [(False, False), (True, False), (False, True)], ids=str)
    def test_without_affine_parameters(self, device, dtype, weight, bias):
        run_case(self.norm, device, dtype, (3, 5, 16), 1, "elu", True, weight=weight, bias=bias)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
    def test_low_precision_params(self, device, dtype):
        """Weights in the input's own dtype (module.half())."""
        run_case(self.norm, device, dtype, (4, 40), 1, "silu", True, param_dtype=dtype)

    @pytest.mark.parametrize("eps", [1e-6, 0.3])
    def test_eps(self, device, eps):
        run_case(self.norm, device, torch.float64, (4, 7), 1, "tanh", False, eps=eps)

    def test_rrelu_training_is_random_reproducible_and_consistent(self, device):
        x = torch.randn(8, 3, 40, device=device, dtype=torch.float64, requires_grad=True)
        rrelu = nn.RReLU(0.1, 0.4)
        eps = self.norm.default_eps
        check_rrelu_training(
            lambda t: self.norm.ours(t, [40], None, None, eps, rrelu, None),
            lambda t: self.norm.oracle(t, [40], None, None, eps, nn.Identity(), None, t.dtype),
            x,
            0.1,
            0.4,
        )

    @pytest.mark.parametrize("activation", ["silu", "leaky_relu", "gelu_tanh", "prelu", "celu"])
    @pytest.mark.parametrize("shape,ndim", [((3, 4, 5), 1), ((2, 3, 2, 3), 3)], ids=str)
    def test_gradcheck(self, device, activation, shape, ndim):
        normalized_shape = list(shape[len(shape) - ndim :])
        options = dict(dtype=torch.float64, device=device)
        x = (torch.randn(shape, **options) * 2 + 0.5).requires_grad_()
        w = (torch.rand(normalized_shape, **options) + 0.5).requires_grad_()
        b = torch.randn(normalized_shape, **options).requires_grad_()
        r = torch.randn(shape, **options).requires_grad_()
        act_weight = (torch.rand(shape[1], **options) * 0.3).requires_grad_()
        params = {"leaky_relu": [0.2], "celu": [1.3]}.get(activation, [])

        def fn(x, w, b, r, aw):
            aw = aw if activation == "prelu" else None
            if self.norm.has_bias:
                out, _, _ = torch.ops.fusednorm.layer_norm_act(
                    x, normalized_shape, w, b, r, 1e-5, activation, params, aw, None
                )
            else:
                out, _ = torch.ops.fusednorm.rms_norm_act(x, normalized_shape, w, r, 1e-5, activation, params, aw, None)
            return out

        assert torch.autograd.gradcheck(fn, (x, w, b, r, act_weight), eps=1e-6, atol=1e-5)

    def test_non_contiguous_residual_and_grad(self, device):
        x = torch.randn(2, 6, 12, device=device, requires_grad=True)
        skip = torch.randn(2, 6, 24, device=device)[..., ::2].requires_grad_()
        fused = self.norm.fused_module(12, activation="tanh").to(device)
        ref = self.norm.torch_module(12).to(device)
        y = fused(x, residual=skip)
        yr = torch.tanh(ref(x) + skip)
        torch.testing.assert_close(y, yr)
        g = torch.randn(2, 12, 6, device=device).transpose(-1, -2)  # non-contiguous grad_out
        grads = torch.autograd.grad(y, (x, skip, fused.weight), g)
        ref_grads = torch.autograd.grad(yr, (x, skip, ref.weight), g)
        for got, expected in zip(grads, ref_grads):
            torch.testing.assert_close(got, expected)

    def test_only_some_gradients(self, device):
        """Gradients of the input alone, and of the weight alone, match the oracle's."""
        x = torch.randn(5, 9, device=device, requires_grad=True)
        fused = self.norm.fused_module(9, activation="gelu").to(device)
        ref = self.norm.torch_module(9).to(device)
        with torch.no_grad():
            fused.weight.uniform_(0.5, 1.5)
            ref.weight.copy_(fused.weight)
        g = torch.randn(5, 9, device=device)
        (gx,) = torch.autograd.grad(fused(x), x, g)
        (gxr,) = torch.autograd.grad(nn.functional.gelu(ref(x)), x, g)
        torch.testing.assert_close(gx, gxr)
        (gw,) = torch.autograd.grad(fused(x.detach()), fused.weight, g)
        (gwr,) = torch.autograd.grad(nn.functional.gelu(ref(x.detach())), ref.weight, g)
        torch.testing.assert_close(gw, gwr)

    @pytest.mark.parametrize("elementwise_affine", [True, False])
    def test_module_matches_torch(self, device, elementwise_affine):
        fused = self.norm.fused_module((4, 6), elementwise_affine=elementwise_affine, activation="relu").to(device)
        ref = self.norm.torch_module((4, 6), elementwise_affine=elementwise_affine).to(device)
        assert fused.state_dict().keys() == ref.state_dict().keys()
        if elementwise_affine:
            with torch.no_grad():
                for p in ref.parameters():
                    p.uniform_(0.5, 1.5)
        fused.load_state_dict(ref.state_dict())
        x = torch.randn(3, 4, 6, device=device) * 3 + 1
        torch.testing.assert_close(fused(x), nn.functional.relu(ref(x)))
        skip = torch.randn_like(x)
        torch.testing.assert_close(fused(x, residual=skip), nn.functional.relu(ref(x) + skip))
        assert "activation=ReLU()" in repr(fused)
        back = self.norm.torch_module((4, 6), elementwise_affine=elementwise_affine).to(device)
        back.load_state_dict(fused.state_dict())
        torch.testing.assert_close(back(x), ref(x))

    def test_module_with_activation_instance(self, device):
        fused = self.norm.fused_module(8, activation=nn.LeakyReLU(0.3)).to(device)
        ref = self.norm.torch_module(8).to(device)
        x = torch.randn(2, 5, 8, device=device)
        torch.testing.assert_close(fused(x), nn.functional.leaky_relu(ref(x), 0.3))
        assert "activation=LeakyReLU(negative_slope=0.3)" in repr(fused)

    def test_prelu_module_is_a_trained_submodule(self, device):
        prelu = nn.PReLU(5, init=0.1)
        fused = self.norm.fused_module(7, activation=prelu).to(device)
        assert "activation.weight" in fused.state_dict()
        x = torch.randn(3, 5, 7, device=device)
        fused(x).sum().backward()
        assert fused.activation.weight.grad is not None and fused.activation.weight.grad.abs().sum() > 0

    def test_autocast_casts_residual(self, device):
        x = torch.randn(2, 3, 16, device=device, dtype=torch.bfloat16)
        skip = torch.randn(2, 3, 16, device=device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            y = self.norm.ours(x, [16], None, None, self.norm.default_eps, "relu", skip)
        assert y.dtype == torch.bfloat16
        expected = self.norm.oracle(
            x.float(), [16], None, None, self.norm.default_eps, nn.ReLU(), skip.bfloat16().float(), x.dtype
        )
        assert_close(y, expected, torch.bfloat16, "autocast output")

    def test_empty_batch(self, device):
        x = torch.randn(0, 3, 8, device=device, requires_grad=True)
        y = self.norm.ours(x, [8], None, None, self.norm.default_eps, "silu", None)
        assert y.shape == x.shape
        (gx,) = torch.autograd.grad(y.sum(), x)
        assert gx.shape == x.shape
