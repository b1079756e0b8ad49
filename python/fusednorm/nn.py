"""Drop-in fused modules: subclasses of the torch.nn norm classes with the same
constructor and state_dict, plus a keyword ``activation`` and an optional
``residual`` argument to forward: ``activation(norm(input) + residual)``."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from . import functional as F
from .activations import ActivationLike, make_activation_module

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "RMSNorm"]


class _FusedActivationMixin:
    """Keeps the activation as a child module named ``activation`` (so a PReLU's
    weight is in state_dict and trained); parameter-free activations add no keys."""

    def _init_activation(self, activation: ActivationLike, num_parameters: int) -> None:
        self.activation = make_activation_module(activation, num_parameters)

    def _activation_repr(self) -> str:
        return "" if isinstance(self.activation, nn.Identity) else f", activation={self.activation}"


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
        # norm_kwargs: keywords newer torch versions add (e.g. bias=False in 2.14).
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, **norm_kwargs)
        self._init_activation(activation, num_features)

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        self._check_input_dim(input)
        # Same bookkeeping as torch.nn's _BatchNorm.forward.
        if self.momentum is None:
            exponential_average_factor = 0.0
        else:
            exponential_average_factor = self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                exponential_average_factor = 1.0 / float(self.num_batches_tracked)
            else:
                exponential_average_factor = self.momentum
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
        return F.rms_norm(
            input, self.normalized_shape, self.weight, self.eps, activation=self.activation, residual=residual
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + self._activation_repr()
