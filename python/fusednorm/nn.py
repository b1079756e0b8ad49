"""Drop-in fused modules: subclasses of the torch.nn norm classes with the same
constructor and state_dict, plus a keyword ``activation`` and an optional
``residual`` argument to forward: ``activation(norm(input) + residual)``."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor, nn

from . import functional as F
from .activations import ActivationLike, make_activation_module

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchLayerNorm1d",
    "BatchLayerNorm2d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "RMSNorm",
]


class _FusedActivationMixin:
    """Keeps the activation as a child module named ``activation`` (so a PReLU's
    weight is in state_dict and trained); parameter-free activations add no keys."""

    def _init_activation(self, activation: ActivationLike, num_parameters: int) -> None:
        self.activation = make_activation_module(activation, num_parameters)

    def _activation_repr(self) -> str:
        return "" if isinstance(self.activation, nn.Identity) else f", activation={self.activation}"

    def _init_norm(self, torch_class: type, *args, **norm_kwargs) -> None:
        """torch_class.__init__(*args, **norm_kwargs), where norm_kwargs are keywords newer
        torch versions add. ``bias=False`` works on every supported torch: the batch,
        instance and group norms of torch 2.11 predate it, so there the module gets the
        state newer versions give (a weight, no bias parameter)."""
        drop_bias = "bias" not in inspect.signature(torch_class.__init__).parameters and not norm_kwargs.pop(
            "bias", True
        )
        torch_class.__init__(self, *args, **norm_kwargs)
        if drop_bias and self.bias is not None:
            self.register_parameter("bias", None)

    def _fx_leaf_call(self, input: Tensor, residual: Optional[Tensor]) -> Optional[Tensor]:
        """Under torch.fx symbolic tracing, records this module as one ``call_module``
        node, as fx's default tracer does for torch.nn's norms, and returns its proxy;
        None otherwise. Tracing through would trip over the Python-side checks on
        symbolic sizes and lose the in-place running-statistics bookkeeping."""
        proxy = next((t for t in (input, residual) if isinstance(t, torch.fx.Proxy)), None)
        if proxy is None:
            return None
        tracer = proxy.tracer
        args = (input,) if residual is None else (input, residual)
        return tracer.create_proxy("call_module", tracer.path_of_module(self), args, {})


def _count_step_and_momentum(norm: nn.modules.batchnorm._NormBase) -> float:
    """Counts a training step in num_batches_tracked and returns the momentum for
    this step (1 / steps when momentum is None): torch.nn's _BatchNorm.forward bookkeeping."""
    if norm.momentum is None:
        exponential_average_factor = 0.0
    else:
        exponential_average_factor = norm.momentum
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            exponential_average_factor = 1.0 / float(norm.num_batches_tracked)
        else:
            exponential_average_factor = norm.momentum
    return exponential_average_factor


class _FusedBatchNorm(_FusedActivationMixin, nn.modules.batchnorm._BatchNorm):
    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        activation: ActivationLike = None,
        **norm_kwargs,
    ) -> None:
        self._init_norm(
            nn.modules.batchnorm._BatchNorm,
            num_features,
            eps,
            momentum,
            affine,
            track_running_stats,
            device,
            dtype,
            **norm_kwargs,
        )
        self._init_activation(activation, num_features)

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        traced = self._fx_leaf_call(input, residual)
        if traced is not None:
            return traced
        self._check_input_dim(input)
        exponential_average_factor = _count_step_and_momentum(self)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        return F.batch_norm(
            input,
            self.running_mean if use_running else None,
            self.running_var if use_running else None,
            self.weight,
            self.bias,
            bn_training,
            exponential_average_factor,
            self.eps,
            activation=self.activation,
            residual=residual,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + self._activation_repr()


class BatchNorm1d(_FusedBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` + activation (+ residual), fused."""


class BatchNorm2d(_FusedBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` + activation (+ residual), fused."""


class BatchNorm3d(_FusedBatchNorm, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` + activation (+ residual), fused."""


class GroupNorm(_FusedActivationMixin, nn.GroupNorm):
    """``nn.GroupNorm`` + activation (+ residual), fused. Unlike torch's, the output
    keeps input's memory format (channels_last in, channels_last out)."""

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device=None,
        dtype=None,
        *,
        activation: ActivationLike = None,
        **norm_kwargs,
    ) -> None:
        self._init_norm(nn.GroupNorm, num_groups, num_channels, eps, affine, device, dtype, **norm_kwargs)
        self._init_activation(activation, num_channels)

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        traced = self._fx_leaf_call(input, residual)
        if traced is not None:
            return traced
        return F.group_norm(
            input, self.num_groups, self.weight, self.bias, self.eps, activation=self.activation, residual=residual
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + self._activation_repr()


class _FusedInstanceNorm(_FusedActivationMixin, nn.modules.instancenorm._InstanceNorm):
    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device=None,
        dtype=None,
        *,
        activation: ActivationLike = None,
        **norm_kwargs,
    ) -> None:
        self._init_norm(
            nn.modules.instancenorm._InstanceNorm,
            num_features,
            eps,
            momentum,
            affine,
            track_running_stats,
            device,
            dtype,
            **norm_kwargs,
        )
        self._init_activation(activation, num_features)

    def _apply_instance_norm(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        return F.instance_norm(
            input,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
            activation=self.activation,
            residual=residual,
        )

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        traced = self._fx_leaf_call(input, residual)
        if traced is not None:
            return traced
        # torch.nn's _InstanceNorm.forward, with the residual carried along.
        self._check_input_dim(input)
        feature_dim = input.dim() - self._get_no_batch_dim()
        if input.size(feature_dim) != self.num_features:
            if self.affine:
                raise ValueError(
                    f"expected input's size at dim={feature_dim} to match num_features"
                    f" ({self.num_features}), but got: {input.size(feature_dim)}."
                )
            warnings.warn(
                f"input's size at dim={feature_dim} does not match num_features. "
                "You can silence this warning by not passing in num_features, "
                "which is not used because affine=False",
                stacklevel=2,
            )
        if input.dim() == self._get_no_batch_dim():
            unbatched_residual = residual.unsqueeze(0) if residual is not None else None
            return self._apply_instance_norm(input.unsqueeze(0), unbatched_residual).squeeze(0)
        return self._apply_instance_norm(input, residual)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._activation_repr()


class InstanceNorm1d(_FusedInstanceNorm, nn.InstanceNorm1d):
    """``nn.InstanceNorm1d`` + activation (+ residual), fused."""


class InstanceNorm2d(_FusedInstanceNorm, nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` + activation (+ residual), fused."""


class InstanceNorm3d(_FusedInstanceNorm, nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` + activation (+ residual), fused."""


class _FusedBatchLayerNorm(_FusedActivationMixin, nn.modules.batchnorm._NormBase):
    """Batch-Layer Normalization (Ziaee & Cano 2022, arXiv 2209.08898) + activation
    (+ residual), fused; see fusednorm.functional.batch_layer_norm for the formula.

    batch_size is the m of the mixing weights 1/m, fixed as in the authors' layer
    (the training batch size; inference uses the same weights). Running statistics
    (``running_mean``/``running_var`` per channel, ``running_feature_mean``/
    ``running_feature_var`` one element each) are population estimates; with the
    default momentum=None they are the average over every training batch since
    reset_running_stats(), the authors' estimate (they reset at every epoch); as
    with torch.nn.BatchNorm2d(momentum=None), that reads num_batches_tracked on the
    host, so torch.compile(fullgraph=True) of a training step needs a float momentum.
    use_running_stats picks, at inference, running (True) or mini-batch (False)
    statistics for the batch mean, batch variance, feature mean and feature
    variance; the default is the authors' layer's. eps defaults to theirs, 1e-3."""

    def __init__(
        self,
        num_features: int,
        batch_size: int,
        eps: float = 1e-3,
        momentum: Optional[float] = None,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        use_running_stats: Sequence[bool] = (True, True, False, False),
        activation: ActivationLike = None,
        **norm_kwargs,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, **norm_kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if len(use_running_stats) != 4:
            raise ValueError(f"use_running_stats must have 4 entries, got {len(use_running_stats)}")
        self.batch_size = batch_size
        self.use_running_stats = tuple(bool(flag) for flag in use_running_stats)
        if track_running_stats:
            factory_kwargs = {"device": device, "dtype": dtype}
            self.register_buffer("running_feature_mean", torch.zeros(1, **factory_kwargs))
            self.register_buffer("running_feature_var", torch.ones(1, **factory_kwargs))
        else:
            self.register_buffer("running_feature_mean", None)
            self.register_buffer("running_feature_var", None)
        self._init_activation(activation, num_features)

    def reset_running_stats(self) -> None:
        super().reset_running_stats()
        # Also called by _NormBase.__init__, before the feature statistics exist.
        if getattr(self, "running_feature_mean", None) is not None:
            self.running_feature_mean.zero_()
            self.running_feature_var.fill_(1)

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        traced = self._fx_leaf_call(input, residual)
        if traced is not None:
            return traced
        self._check_input_dim(input)
        momentum = _count_step_and_momentum(self)
        return F.batch_layer_norm(
            input,
            self.running_mean,
            self.running_var,
            self.running_feature_mean,
            self.running_feature_var,
            self.weight,
            self.bias,
            self.training,
            momentum,
            self.eps,
            batch_size=self.batch_size,
            use_running_stats=self.use_running_stats if self.track_running_stats else (False,) * 4,
            activation=self.activation,
            residual=residual,
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, batch_size={self.batch_size}, use_running_stats={self.use_running_stats}"
            + self._activation_repr()
        )


class BatchLayerNorm1d(_FusedBatchLayerNorm):
    """Batch-Layer Normalization of (N, C) or (N, C, L) input + activation (+ residual), fused."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


class BatchLayerNorm2d(_FusedBatchLayerNorm):
    """Batch-Layer Normalization of (N, C, H, W) input + activation (+ residual), fused."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")


class LayerNorm(_FusedActivationMixin, nn.LayerNorm):
    """``nn.LayerNorm`` + activation (+ residual), fused: ``activation(layer_norm(input) + residual)``.

    A PReLU named by string gets one shared slope; pass ``nn.PReLU(C)`` for one per
    channel of input dim 1, as ``torch.nn.PReLU`` applies it."""

    def __init__(
        self,
        normalized_shape,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        activation: ActivationLike = None,
        **norm_kwargs,
    ) -> None:
        # norm_kwargs: keywords newer torch versions may add.
        super().__init__(normalized_shape, eps, elementwise_affine, bias, device, dtype, **norm_kwargs)
        self._init_activation(activation, 1)

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        traced = self._fx_leaf_call(input, residual)
        if traced is not None:
            return traced
        return F.layer_norm(
            input,
            self.normalized_shape,
            self.weight,
            self.bias,
            self.eps,
            activation=self.activation,
            residual=residual,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + self._activation_repr()


class RMSNorm(_FusedActivationMixin, nn.RMSNorm):
    """``nn.RMSNorm`` + activation (+ residual), fused: ``activation(rms_norm(input) + residual)``.

    ``eps=None`` is torch's default (the accumulation dtype's machine epsilon).
    PReLU as for :class:`LayerNorm`."""

    def __init__(
        self,
        normalized_shape,
        eps: Optional[float] = None,
        elementwise_affine: bool = True,
        device=None,
        dtype=None,
        *,
        activation: ActivationLike = None,
    ) -> None:
        super().__init__(normalized_shape, eps, elementwise_affine, device, dtype)
        self._init_activation(activation, 1)

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        traced = self._fx_leaf_call(input, residual)
        if traced is not None:
            return traced
        return F.rms_norm(
            input, self.normalized_shape, self.weight, self.eps, activation=self.activation, residual=residual
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + self._activation_repr()
