"""What the norm tests share: inputs in every layout, activations built for a
given channel count, one comparison of a fused call with its oracle (forward and
every gradient, on the same rounded inputs), parametrizations, and module checks
against the torch.nn class."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reference import ACTIVATIONS, assert_close, oracle_dtype

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LOW_PRECISION = (torch.float16, torch.bfloat16)


def make_input(shape, dtype, layout, device, mean=0.5, std=2.0):
    """Random input in the requested memory layout; 'strided' is a non-dense view."""
    if layout == "strided":
        # Every other element of the last dim, of a tensor twice as wide: not dense.
        big = torch.randn(*shape[:-1], shape[-1] * 2, device=device) * std + mean
        x = big.to(dtype)[..., ::2]
        assert not x.is_contiguous()
        return x
    x = (torch.randn(shape, device=device) * std + mean).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    return x


def _with_marks(*marks):
    def decorate(test):
        for mark in reversed(marks):
            test = mark(test)
        return test

    return decorate


# test(device, dtype, activation_name, layout, with_residual) for every activation.
every_activation = _with_marks(
    pytest.mark.parametrize("dtype", DTYPES, ids=str),
    pytest.mark.parametrize("activation_name", list(ACTIVATIONS)),
    pytest.mark.parametrize("layout", ["contiguous", "channels_last"]),
    pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"]),
)


def over_shapes(shapes):
    """test(device, dtype, shape, layout, activation_name, with_residual) for every
    (shape, [layouts]) of shapes, every dtype, with and without residual."""
    return _with_marks(
        pytest.mark.parametrize("dtype", DTYPES, ids=str),
        pytest.mark.parametrize(
            "shape,layout", [(shape, layout) for shape, layouts in shapes for layout in layouts], ids=str
        ),
        pytest.mark.parametrize("activation_name,with_residual", [("relu", False), ("silu", True)]),
    )


def make_case_inputs(shape, dtype, layout, device, with_residual):
    """(input, residual or None), both requiring grad."""
    x = make_input(shape, dtype, layout, device).requires_grad_()
    if not with_residual:
        return x, None
    return x, make_input(shape, dtype, layout, device, mean=0.0, std=1.0).requires_grad_()


# Shapes every norm is tested on besides its own: odd sizes, 5-d, every layout.
ODD_SHAPES = [
    ((2, 6, 7, 7), ["contiguous", "channels_last", "strided"]),
    ((2, 33, 9, 11), ["contiguous", "channels_last", "strided"]),
    ((2, 4, 3, 5, 6), ["contiguous", "channels_last", "strided"]),
]


def check_gradients(shape, layout, device, activation, call):
    """torch.autograd.gradcheck in float64 of call(input, weight, bias, residual,
    activation, activation_params, activation_weight, activation_seed) (a fused op;
    its first output) with respect to input, weight, bias, residual and the PReLU weight."""
    C = shape[1]
    x = make_input(shape, torch.float64, layout, device).requires_grad_()
    w = (torch.rand(C, dtype=torch.float64, device=device) + 0.5).requires_grad_()
    b = torch.randn(C, dtype=torch.float64, device=device).requires_grad_()
    r = make_input(shape, torch.float64, layout, device).requires_grad_()
    act_weight = (torch.rand(C, dtype=torch.float64, device=device) * 0.3).requires_grad_()
    params = [0.2] if activation == "leaky_relu" else []

    def fn(x, w, b, r, aw):
        return call(x, w, b, r, activation, params, aw if activation == "prelu" else None, None)[0]

    assert torch.autograd.gradcheck(fn, (x, w, b, r, act_weight), eps=1e-6, atol=1e-5)


def gain(weight):
    return weight.detach().abs().max().item() if weight is not None else 1.0


def max_invstd(stat_values, eps):
    """Largest 1 / sqrt(var + eps) over statistics, each list entry holding the
    values behind them as rows of a [num_statistics, values] tensor."""
    return max(1 / (values.double().var(-1, unbiased=False).min().item() + eps) ** 0.5 for values in stat_values)


def input_grad_magnitude(scale):
    """Size of the terms a normalisation's input gradient is a difference of:
    |grad_output| * |weight| * invstd (pass gain(weight) * max_invstd(...))."""
    return lambda grad: grad.abs().max().item() * scale


def activation_pair(name, num_channels, device, dtype):
    """(activation for ours, the same activation for the oracle in the oracle's dtype)."""
    act = ACTIVATIONS[name]()
    if isinstance(act, nn.PReLU):
        act = nn.PReLU(num_channels).to(device)
        with torch.no_grad():
            act.weight.uniform_(0.05, 0.5)
    return act, copy.deepcopy(act).to(oracle_dtype(dtype))


def make_params(num_channels, device, dtype, affine=True):
    """(weight, bias) requiring grad, or (None, None)."""
    if not affine:
        return None, None
    weight = (torch.rand(num_channels, device=device) + 0.5).to(dtype).requires_grad_()
    bias = (torch.randn(num_channels, device=device) * 0.3).to(dtype).requires_grad_()
    return weight, bias


def _for_oracle(value, ref_dtype):
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.detach().to(ref_dtype).requires_grad_(value.requires_grad)
    return value


def compare_with_oracle(
    fused, oracle, inputs, dtype, where, act=None, ref_act=None, magnitudes=None, output_magnitude=None
):
    """Runs fused(**inputs) and oracle(**inputs in the oracle's dtype); compares the
    outputs (values, dtype, memory format) and the gradients of every input that
    requires grad, plus the PReLU weight when act is one. Low-precision inputs get
    an fp32 oracle fed the same rounded values and the same rounded grad_output.

    magnitudes: name -> fn(grad_output) giving the size of the terms that gradient
    is a sum or difference of, where those cancel (normalisation input gradients;
    weight gradients of one-element groups, whose x_hat is rounding noise in the
    oracle); the default is the gradient's own size. output_magnitude likewise for
    the output, x * scale + shift, when scale is large (tiny variances)."""
    ref_dtype = oracle_dtype(dtype)
    ref_inputs = {name: _for_oracle(value, ref_dtype) for name, value in inputs.items()}
    y = fused(**inputs)
    yr = oracle(**ref_inputs)
    x = inputs["input"]
    assert y.dtype == dtype
    for memory_format in (torch.channels_last, torch.channels_last_3d):
        if not x.is_contiguous() and x.is_contiguous(memory_format=memory_format):
            assert y.is_contiguous(memory_format=memory_format), f"output must keep {memory_format} ({where})"
    assert_close(y, yr, dtype, f"output ({where})", magnitude=output_magnitude)

    names = [name for name, value in inputs.items() if isinstance(value, Tensor) and value.requires_grad]
    leaves = [inputs[name] for name in names]
    ref_leaves = [ref_inputs[name] for name in names]
    if isinstance(act, nn.PReLU):
        names.append("prelu_weight")
        leaves.append(act.weight)
        ref_leaves.append(ref_act.weight)
    grad = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, grad)
    # The oracle gets the same values in NCHW: torch 2.14's instance_norm backward
    # is wrong for a channels_last grad_output when N == 1 (test_instance_norm.py
    # shows it); ours gets the grad in the output's own layout.
    ref_grads = torch.autograd.grad(yr, ref_leaves, grad.to(ref_dtype).contiguous())
    for name, g, gr, leaf in zip(names, grads, ref_grads, leaves):
        assert g.dtype == leaf.dtype, f"grad {name} dtype ({where})"
        # Held to the rounding of the dtype each gradient is kept in (fp32 parameters
        # of a half-precision input accumulate in fp32).
        magnitude = magnitudes[name](grad) if magnitudes and name in magnitudes else None
        assert_close(g, gr, leaf.dtype, f"grad {name} ({where})", scale=4.0, magnitude=magnitude)
    return y, yr


def check_module_train_then_eval(fused, ref, shape, device, activation=F.relu, steps=3):
    """fused (built with `activation`) against the torch.nn module ref followed by
    activation: same state_dict keys, outputs over training steps, every buffer,
    then eval with a residual."""
    fused.load_state_dict(ref.state_dict())
    assert fused.state_dict().keys() == ref.state_dict().keys()
    for _ in range(steps):
        x = torch.randn(shape, device=device) * 3 + 1
        torch.testing.assert_close(fused(x), activation(ref(x)))
    for name, buf in ref.named_buffers():
        torch.testing.assert_close(dict(fused.named_buffers())[name], buf, msg=f"buffer {name}")
    fused.eval()
    ref.eval()
    x = torch.randn(shape, device=device)
    skip = torch.randn_like(x)
    torch.testing.assert_close(fused(x, residual=skip), activation(ref(x) + skip))


def check_non_contiguous_residual_and_grad(fused, ref, shape, device, activation=torch.tanh):
    """A strided residual and a transposed grad_output, against ref + activation."""
    x = torch.randn(shape, device=device, requires_grad=True)
    skip = torch.randn(*shape[:-1], shape[-1] * 2, device=device)[..., ::2].requires_grad_()
    y = fused(x, residual=skip)
    yr = activation(ref(x) + skip)
    torch.testing.assert_close(y, yr)
    g = torch.randn(*shape[:-2], shape[-1], shape[-2], device=device).transpose(-1, -2)
    gx, gs = torch.autograd.grad(y, (x, skip), g)
    gxr, gsr = torch.autograd.grad(yr, (x, skip), g)
    torch.testing.assert_close(gx, gxr)
    torch.testing.assert_close(gs, gsr)


def check_autocast_casts_residual(device, shape, fused, normalize):
    """Under bfloat16 autocast a float32 residual is brought to the bfloat16 input's
    dtype: fused(x, residual) == relu(normalize(x in fp32) + residual rounded to bf16)."""
    x = torch.randn(shape, device=device, dtype=torch.bfloat16)
    skip = torch.randn(shape, device=device)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        y = fused(x, skip)
    assert y.dtype == torch.bfloat16
    assert_close(y, F.relu(normalize(x.float()) + skip.bfloat16().float()), torch.bfloat16, "autocast output")
