"""Functional forms of the fused ops, mirroring torch.nn.functional plus the
``activation`` and ``residual`` keywords: ``act(norm(input) + residual)``."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .activations import ActivationLike, ActivationSpec, draw_seed, spec_of

__all__ = ["batch_norm"]


def _op_args(spec: ActivationSpec):
    seed = draw_seed() if spec.random else None
    return spec.name, list(spec.params), spec.weight, seed


def batch_norm(
    input: Tensor,
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    activation: ActivationLike = None,
    residual: Optional[Tensor] = None,
) -> Tensor:
    """``activation(F.batch_norm(input, ...) + residual)`` in one fused op.

    ``activation`` is a name (``"relu"``, ``"silu"``, ...) or a torch.nn activation
    module whose parameters are used (``nn.LeakyReLU(0.2)``, ``nn.PReLU(C)``)."""
    name, params, act_weight, seed = _op_args(spec_of(activation))
    out, _, _ = torch.ops.fusednorm.batch_norm_act(
        input,
        weight,
        bias,
        running_mean,
        running_var,
        residual,
        training,
        momentum,
        eps,
        name,
        params,
        act_weight,
        seed,
    )
    return out
