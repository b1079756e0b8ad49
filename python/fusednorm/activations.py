"""Activation specs: a name (``"relu"``) or a ``torch.nn`` activation module,
turned into the (name, params, weight) triple the ops take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn

ActivationLike = Union[None, str, nn.Module]

# name -> (nn module class, constructor) for names given as strings
_NAME_TO_MODULE = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "rrelu": nn.RReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "celu": nn.CELU,
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}

ACTIVATION_NAMES = tuple(name for name in _NAME_TO_MODULE if name != "swish")

# Specs of activations given by name, built once: a name always means the same
# module, and building one costs more than a small fused op on the CPU.
_SPECS_OF_NAMES: dict = {}


@dataclass(frozen=True)
class ActivationSpec:
    """What the fused ops need to know about an activation."""

    name: str
    params: tuple = ()
    weight: Optional[torch.Tensor] = None  # PReLU's learnable slope
    random: bool = False  # RReLU in training mode


def make_activation_module(activation: ActivationLike, num_parameters: int = 1) -> nn.Module:
    """The torch.nn module a fused layer keeps as its ``activation`` child.

    A module is kept as is (so a PReLU's weight stays shared and trainable);
    a name builds the matching module with torch's defaults."""
    if activation is None:
        return nn.Identity()
    if isinstance(activation, nn.Module):
        spec_of(activation)  # reject unsupported modules early
        return activation
    if isinstance(activation, str):
        key = activation.lower()
        if key not in _NAME_TO_MODULE:
            raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATION_NAMES)}")
        if key == "prelu":
            return nn.PReLU(num_parameters)
        return _NAME_TO_MODULE[key]()
    raise TypeError(f"activation must be None, a name or a torch.nn module, got {type(activation).__name__}")


def spec_of(activation: ActivationLike) -> ActivationSpec:
    """The ActivationSpec of a name or torch.nn activation module."""
    if activation is None:
        return ActivationSpec("identity")
    if isinstance(activation, str):
        key = activation.lower()
        if key not in _NAME_TO_MODULE:
            raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATION_NAMES)}")
        if key == "prelu":
            raise ValueError("activation 'prelu' needs a weight: pass a torch.nn.PReLU module")
        if key not in _SPECS_OF_NAMES:
            _SPECS_OF_NAMES[key] = spec_of(make_activation_module(key))
        return _SPECS_OF_NAMES[key]
    m = activation
    if isinstance(m, nn.Identity):
        return ActivationSpec("identity")
    if isinstance(m, nn.ReLU):
        return ActivationSpec("relu")
    if isinstance(m, nn.LeakyReLU):
        return ActivationSpec("leaky_relu", (float(m.negative_slope),))
    if isinstance(m, nn.PReLU):
        return ActivationSpec("prelu", weight=m.weight)
    if isinstance(m, nn.RReLU):
        return ActivationSpec("rrelu", (float(m.lower), float(m.upper)), random=m.training)
    if isinstance(m, nn.ELU):
        return ActivationSpec("elu", (float(m.alpha),))
    if isinstance(m, nn.SELU):
        return ActivationSpec("selu")
    if isinstance(m, nn.CELU):
        return ActivationSpec("celu", (float(m.alpha),))
    if isinstance(m, nn.GELU):
        return ActivationSpec("gelu_tanh" if m.approximate == "tanh" else "gelu")
    if isinstance(m, nn.SiLU):
        return ActivationSpec("silu")
    if isinstance(m, nn.Sigmoid):
        return ActivationSpec("sigmoid")
    if isinstance(m, nn.Tanh):
        return ActivationSpec("tanh")
    raise ValueError(
        f"activation module {type(m).__name__} is not supported; supported: Identity, ReLU, LeakyReLU, PReLU, "
        "RReLU, ELU, SELU, CELU, GELU, SiLU, Sigmoid, Tanh"
    )


def draw_seed() -> torch.Tensor:
    """A fresh RReLU seed from PyTorch's default CPU generator (torch.manual_seed reproduces it)."""
    return torch.randint(0, 2**62, (1,), dtype=torch.int64)
