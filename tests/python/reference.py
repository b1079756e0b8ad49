"""The oracle: PyTorch's own ops, composed the unfused way. Never our kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ExactCELU(nn.CELU):
    """nn.CELU computed with torch primitives. PyTorch's own CELU backward rounds
    1/alpha to float32 (derivatives.yaml: 1.0/alpha.toFloat()), which makes it a
    float32-accurate oracle even in float64; the forward is the same function."""

    def forward(self, z):
        return torch.where(z > 0, z, self.alpha * torch.expm1(z / self.alpha))


# name -> (activation as a torch.nn module, the constructor keywords), covering every
# activation the fused ops take. PReLU/RReLU are built by the tests that need them.
ACTIVATIONS = {
    "identity": lambda: nn.Identity(),
    "relu": lambda: nn.ReLU(),
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "elu": lambda: nn.ELU(0.7),
    "selu": lambda: nn.SELU(),
    "celu": lambda: ExactCELU(1.3),
    "gelu": lambda: nn.GELU(),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": lambda: nn.SiLU(),
    "sigmoid": lambda: nn.Sigmoid(),
    "tanh": lambda: nn.Tanh(),
    "prelu": lambda: nn.PReLU(),
    "rrelu_eval": lambda: nn.RReLU(0.1, 0.3).eval(),
}

# Per dtype: (dtype the oracle runs in, relative tolerance, absolute tolerance as a
# fraction of the reference's largest magnitude). Low-precision results are held
# to about one unit in the last place of their own dtype, against an fp32 oracle
# fed the same rounded inputs; fp32/fp64 against an fp64 oracle.
TOLERANCES = {
    torch.float64: (torch.float64, 1e-10, 1e-10),
    torch.float32: (torch.float64, 2e-5, 2e-5),
    torch.float16: (torch.float32, 2.0**-10, 1e-3),
    torch.bfloat16: (torch.float32, 2.0**-7, 4e-3),
}


def oracle_dtype(dtype: torch.dtype) -> torch.dtype:
    return TOLERANCES[dtype][0]


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "", scale=1.0, magnitude=None
):
    """|actual - expected| <= rtol * |expected| + atol * magnitude (elementwise).

    magnitude defaults to max|expected|; pass the size of the terms a result is a
    difference of when it can cancel to near zero (batch-norm input gradients)."""
    _, rtol, atol = TOLERANCES[dtype]
    rtol, atol = rtol * scale, atol * scale
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    assert torch.isfinite(a).all(), f"{what}: non-finite values in result"
    magnitude = max(e.abs().max().item(), magnitude or 0.0, 1e-30)
    bound = rtol * e.abs() + atol * magnitude
    err = (a - e).abs()
    worst = (err - bound).argmax()
    assert (err <= bound).all(), (
        f"{what}: max error {err.max().item():.3g} exceeds tolerance (rtol={rtol:.3g}, atol={atol:.3g}*max); "
        f"worst at flat index {worst.item()}: got {a.flatten()[worst].item()!r}, expected {e.flatten()[worst].item()!r}"
    )


def batch_norm_act(x, running_mean, running_var, weight, bias, training, momentum, eps, activation, residual=None):
    """activation(F.batch_norm(x) + residual): the unfused composite."""
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    if residual is not None:
        y = y + residual
    return activation(y)


def layer_norm_act(x, normalized_shape, weight, bias, eps, activation, residual=None):
    """activation(F.layer_norm(x) + residual): the unfused composite."""
    y = F.layer_norm(x, normalized_shape, weight, bias, eps)
    if residual is not None:
        y = y + residual
    return activation(y)


def rms_norm_act(x, normalized_shape, weight, eps, activation, residual=None):
    """activation(F.rms_norm(x) + residual): the unfused composite."""
    y = F.rms_norm(x, normalized_shape, weight, eps)
    if residual is not None:
        y = y + residual
    return activation(y)


def check_rrelu_training(run, normalized, x, lower, upper):
    """Checks a fused op whose activation is nn.RReLU(lower, upper) in training
    mode: the same seed gives the same output, a new seed new slopes, the slopes
    vary per element within [lower, upper], and the gradient uses the slopes the
    forward drew. run(x) is the fused op; normalized(x) the oracle's norm (the
    activation's input, without residual)."""
    torch.manual_seed(123)
    y1 = run(x)
    torch.manual_seed(123)
    y2 = run(x)
    y3 = run(x)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    z = normalized(x.detach())
    negative = z < 0
    assert not torch.equal(y1[negative], y3[negative]), "a new seed must draw new slopes"
    slope = torch.where(negative, y1 / z, torch.ones_like(z)).detach()
    assert ((slope[negative] >= lower - 1e-12) & (slope[negative] <= upper + 1e-12)).all()
    assert slope[negative].std() > 0.05, "slopes must vary per element"
    # Gradient check against the same slopes applied as a fixed tensor.
    grad = torch.randn_like(y1)
    (gx,) = torch.autograd.grad(y1, x, grad)
    xr = x.detach().requires_grad_()
    (gxr,) = torch.autograd.grad(normalized(xr) * slope, xr, grad)
    torch.testing.assert_close(gx, gxr)
