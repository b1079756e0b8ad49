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


def group_norm_act(x, num_groups, weight, bias, eps, activation, residual=None):
    """activation(F.group_norm(x) + residual): the unfused composite."""
    y = F.group_norm(x, num_groups, weight, bias, eps)
    if residual is not None:
        y = y + residual
    return activation(y)


def rms_norm_act(x, normalized_shape, weight, eps, activation, residual=None):
    """activation(F.rms_norm(x) + residual): the unfused composite."""
    y = F.rms_norm(x, normalized_shape, weight, eps)
    if residual is not None:
        y = y + residual
    return activation(y)


def instance_norm_act(
    x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps, activation, residual=None
):
    """activation(F.instance_norm(x) + residual): the unfused composite."""
    y = F.instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
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


# Batch-Layer Normalization (Ziaee & Cano 2022, arXiv 2209.08898), written out from
# the paper's equations and the authors' public code (A2Amir/Batch-Layer-Normalization):
#   x_batch = (x - mu_B) / sqrt(var_B + eps),  x_layer = (x - mu_L) / sqrt(var_L + eps)
#   x_hat = ((1/m - zeta) * x_layer + (1 - (1/m + zeta)) * x_batch) / sqrt(d),  y = gamma * x_hat + beta
# with m the mini-batch size, zeta = 1e-4 and d the number of features. The batch
# statistics are per channel over the batch and positions, the layer ("feature")
# statistics per sample over channels and positions. Population statistics follow
# batch norm's rule: the average of the batches' means and of their unbiased variances.
BLN_ZETA = 1e-4


def batch_layer_norm(
    x,
    running_mean,
    running_var,
    running_feature_mean,
    running_feature_var,
    weight,
    bias,
    training,
    momentum,
    eps,
    batch_size=None,
    use_running_stats=(True, True, False, False),
):
    N, C = x.shape[:2]
    m = N if batch_size is None else batch_size
    per_channel = [d for d in range(x.dim()) if d != 1]
    per_sample = list(range(1, x.dim()))
    channel_shape = [1, C] + [1] * (x.dim() - 2)

    mean_b = x.mean(per_channel, keepdim=True)
    var_b = x.var(per_channel, unbiased=False, keepdim=True)
    mean_l = x.mean(per_sample, keepdim=True)
    var_l = x.var(per_sample, unbiased=False, keepdim=True)
    if training:
        with torch.no_grad():
            n_b, n_l = x.numel() // C, x.numel() // N  # values per batch / layer statistic
            if running_mean is not None:
                running_mean.mul_(1 - momentum).add_(momentum * mean_b.flatten())
                running_var.mul_(1 - momentum).add_(momentum * var_b.flatten() * _bessel(n_b))
            if running_feature_mean is not None:
                running_feature_mean.mul_(1 - momentum).add_(momentum * mean_l.mean())
                running_feature_var.mul_(1 - momentum).add_(momentum * var_l.mean() * _bessel(n_l))
    else:
        use = list(use_running_stats)
        if use[0]:
            mean_b = running_mean.view(channel_shape)
        if use[1]:
            var_b = running_var.view(channel_shape)
        if use[2]:
            mean_l = running_feature_mean
        if use[3]:
            var_l = running_feature_var
    x_batch = (x - mean_b) / torch.sqrt(var_b + eps)
    x_layer = (x - mean_l) / torch.sqrt(var_l + eps)
    x_hat = ((1 / m - BLN_ZETA) * x_layer + (1 - (1 / m + BLN_ZETA)) * x_batch) / C**0.5
    if weight is not None:
        x_hat = x_hat * weight.view(channel_shape)
    if bias is not None:
        x_hat = x_hat + bias.view(channel_shape)
    return x_hat


def _bessel(n):
    return n / (n - 1) if n > 1 else 1.0


def batch_layer_norm_act(*args, activation, residual=None, **kwargs):
    """activation(batch_layer_norm(x) + residual): the unfused composite."""
    y = batch_layer_norm(*args, **kwargs)
    if residual is not None:
        y = y + residual
    return activation(y)
