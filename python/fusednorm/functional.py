"""Functional forms of the fused ops, mirroring torch.nn.functional plus the
``activation`` and ``residual`` keywords: ``act(norm(input) + residual)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import Tensor

from .activations import ActivationLike, ActivationSpec, draw_seed, spec_of

__all__ = ["batch_norm", "layer_norm", "rms_norm"]


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


def _shape_list(normalized_shape: Union[int, Sequence[int]]) -> list:
    return [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)


def layer_norm(
    input: Tensor,
    normalized_shape: Union[int, Sequence[int]],
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    eps: float = 1e-5,
    *,
    activation: ActivationLike = None,
    residual: Optional[Tensor] = None,
) -> Tensor:
    """``activation(F.layer_norm(input, normalized_shape, weight, bias, eps) + residual)`` in one fused op.

    A PReLU activation's channel is input dim 1, as for ``torch.nn.PReLU``."""
    name, params, act_weight, seed = _op_args(spec_of(activation))
    out, _, _ = torch.ops.fusednorm.layer_norm_act(
        input, _shape_list(normalized_shape), weight, bias, residual, eps, name, params, act_weight, seed
    )
    return out


def rms_norm(
    input: Tensor,
    normalized_shape: Union[int, Sequence[int]],
    weight: Optional[Tensor] = None,
    eps: Optional[float] = None,
    *,
    activation: ActivationLike = None,
    residual: Optional[Tensor] = None,
) -> Tensor:
    """``activation(F.rms_norm(input, normalized_shape, weight, eps) + residual)`` in one fused op.

    ``eps=None`` is torch.rms_norm's default: the machine epsilon of the
    accumulation dtype (float32's for float16/bfloat16 input)."""
    name, params, act_weight, seed = _op_args(spec_of(activation))
    out, _ = torch.ops.fusednorm.rms_norm_act(
        input, _shape_list(normalized_shape), weight, residual, eps, name, params, act_weight, seed
    )
    return out
