"""Functional forms of the fused ops, mirroring torch.nn.functional plus the
``activation`` and ``residual`` keywords: ``act(norm(input) + residual)``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import Tensor

from .activations import ActivationLike, ActivationSpec, draw_seed, spec_of

__all__ = ["batch_norm", "batch_layer_norm", "group_norm", "instance_norm", "layer_norm", "rms_norm"]


def _op_args(spec: ActivationSpec):
    seed = draw_seed() if spec.random else None
    return spec.name, list(spec.params), spec.weight, seed


def _call_fused(op, activation: ActivationLike, *norm_args):
    """The output of a fused op called with its norm arguments and then the activation's."""
    return op(*norm_args, *_op_args(spec_of(activation)))[0]


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
    args = (input, weight, bias, running_mean, running_var, residual, training, momentum, eps)
    return _call_fused(torch.ops.fusednorm.batch_norm_act, activation, *args)


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    eps: float = 1e-5,
    *,
    activation: ActivationLike = None,
    residual: Optional[Tensor] = None,
) -> Tensor:
    """``activation(F.group_norm(input, num_groups, ...) + residual)`` in one fused op.

    The output keeps input's memory format (channels_last in, channels_last out)."""
    if input.dim() >= 2 and num_groups > 0:  # as F.group_norm: no groups of one value
        if input.size(0) * (input.size(1) // num_groups) * _spatial_size(input) == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")
    return _call_fused(torch.ops.fusednorm.group_norm_act, activation, input, num_groups, weight, bias, residual, eps)


def instance_norm(
    input: Tensor,
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    activation: ActivationLike = None,
    residual: Optional[Tensor] = None,
) -> Tensor:
    """``activation(F.instance_norm(input, ...) + residual)`` in one fused op, with
    F.instance_norm's running statistics (updated with their batch average when
    use_input_stats, used instead of the input's statistics otherwise)."""
    if use_input_stats and _spatial_size(input) == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size {input.size()}")
    args = (input, weight, bias, running_mean, running_var, residual, use_input_stats, momentum, eps)
    return _call_fused(torch.ops.fusednorm.instance_norm_act, activation, *args)


def batch_layer_norm(
    input: Tensor,
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    running_feature_mean: Optional[Tensor] = None,
    running_feature_var: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-3,
    *,
    batch_size: Optional[int] = None,
    use_running_stats: Sequence[bool] = (True, True, False, False),
    activation: ActivationLike = None,
    residual: Optional[Tensor] = None,
) -> Tensor:
    """``activation(batch_layer_norm(input) + residual)``: Batch-Layer Normalization
    (Ziaee & Cano 2022, arXiv 2209.08898) in one fused op.

    ``y = weight * ((1/m - 1e-4) * x_layer + (1 - 1/m - 1e-4) * x_batch) / sqrt(C) + bias``,
    where ``x_batch`` is input normalised per channel over the batch (and positions),
    ``x_layer`` normalised per sample over the channels (and positions), ``C`` the
    number of channels and ``m = batch_size`` (default: ``input.size(0)``; pass the
    training batch size at inference, as the authors do).

    training: mini-batch statistics; the running ones are updated in place when
    given (``running_mean``/``running_var`` per channel, ``running_feature_mean``/
    ``running_feature_var`` one element each, unbiased variances averaged with
    ``momentum``). Otherwise ``use_running_stats`` says, for the batch mean, batch
    variance, feature mean and feature variance in that order, whether to use the
    running estimate (True) or the mini-batch's own statistic (False): the authors'
    inference-time choice."""
    running = (running_mean, running_var, running_feature_mean, running_feature_var)
    m = input.size(0) if batch_size is None else batch_size
    flags = [bool(flag) for flag in use_running_stats]
    args = (input, weight, bias, *running, residual, training, m, momentum, eps, flags)
    return _call_fused(torch.ops.fusednorm.batch_layer_norm_act, activation, *args)


def _spatial_size(input: Tensor) -> int:
    return math.prod(input.shape[2:])


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
    args = (input, _shape_list(normalized_shape), weight, bias, residual, eps)
    return _call_fused(torch.ops.fusednorm.layer_norm_act, activation, *args)


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
    args = (input, _shape_list(normalized_shape), weight, residual, eps)
    return _call_fused(torch.ops.fusednorm.rms_norm_act, activation, *args)
