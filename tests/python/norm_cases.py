"""What the group, instance and batch-layer norm tests share: activations built
for a given channel count, and one comparison of a fused call with its oracle,
forward and every gradient, on the same (rounded) inputs."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from reference import ACTIVATIONS, assert_close, oracle_dtype
from test_batch_norm import LOW_PRECISION, make_input  # noqa: F401  (re-exported for the norm tests)

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


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
