"""``fusednorm.convert(model)``: put fusednorm's fused layers into an existing model.

Two steps, both in place:

1. Swap. Every ``torch.nn`` norm layer that has a fused counterpart in
   ``fusednorm.nn`` is replaced by it, keeping the very same Parameter and
   buffer objects (so requires_grad, device, dtype, memory format, tied
   weights and optimizer state carry over), its training mode, hooks and
   attributes. ``nn.SyncBatchNorm`` becomes :class:`BatchNormAnyRank` when no
   process group with more than one rank is running.
2. Fuse (``fuse=True``). A norm is given the activation that follows it, and
   a residual add between the two becomes the fused op's ``residual=``:
   directly inside ``nn.Sequential`` (the activation's slot becomes
   ``nn.Identity``), and in every other module through ``torch.fx``: each
   module's own ``forward`` is traced shallowly (submodules are leaves) in
   training and in eval mode, the pattern is rewritten in the graph, and the
   rewritten graph becomes that module's ``forward`` (running with the module
   itself as ``self``, so parameters, buffers and submodules stay live).

What fusion never does is change what ``model(...)`` computes. So a norm is
fused only where every place it is called is known and agrees on the
activation; never when it or the activation has hooks (a hook would see
other tensors), never with PReLU (its weight would gain a second state_dict
key) or RReLU (its random slopes would be drawn differently); modules whose
forward fx cannot trace, whose forward takes optional arguments (fx would
specialise on them), or that belong to ``torch.nn`` itself keep their forward,
and the norms they call are swapped but not fused. The report says where and
why. A residual add is guarded at run time: when the other operand does not
have the norm output's shape, dtype and device (a broadcasting add), the
unfused computation runs instead.

Caveat of the fused forward: torch.fx records one path through Python
control flow, re-recorded per training mode; a forward whose Python-level
behaviour depends on other state (flags flipped after conversion, counters)
should be converted with ``fuse=False``. Methods other than ``forward`` that
call a fused norm directly get the norm's activation applied inside it.
"""

from __future__ import annotations

import copy
import inspect
import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from . import nn as fused_nn
from .activations import spec_of

__all__ = ["convert", "ConvertReport", "ConvertedLayer", "BatchNormAnyRank", "fused_class_for"]


class BatchNormAnyRank(fused_nn._FusedBatchNorm):
    """What :func:`convert` puts in place of ``nn.SyncBatchNorm`` in a single
    process: batch norm (+ activation + residual) over ``(N, C, *)`` inputs of
    any rank, as SyncBatchNorm accepts them. Without other ranks to sync with,
    SyncBatchNorm computes plain batch norm, and so does this. It is not
    resolved to BatchNorm1d/2d/3d because a SyncBatchNorm does not know the rank
    it will see: deciding at the first forward would mutate the module inside
    ``torch.compile`` and reject a later input of another rank. Same constructor
    and state_dict as ``nn.BatchNorm2d``."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


# torch class -> the name of its fused counterpart in fusednorm.nn. Looked up when
# convert runs, so a fused class added to fusednorm.nn later is picked up as is.
_FUSED_CLASS_NAMES = {
    cls: cls.__name__
    for cls in (
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
        nn.LayerNorm,
        getattr(nn, "RMSNorm", None),
        nn.GroupNorm,
        nn.InstanceNorm1d,
        nn.InstanceNorm2d,
        nn.InstanceNorm3d,
    )
    if cls is not None
}

# Constructor arguments that do not carry over to the fused layer.
_DROPPED_CONSTRUCTOR_ARGS = {"self", "device", "dtype", "process_group"}


def fused_class_for(torch_cls: type) -> Optional[type]:
    """The fused class :func:`convert` swaps an exact ``torch_cls`` instance for, or None."""
    if torch_cls is nn.SyncBatchNorm:
        return BatchNormAnyRank
    name = _FUSED_CLASS_NAMES.get(torch_cls)
    return getattr(fused_nn, name, None) if name else None


def _is_norm_class(cls: type) -> bool:
    return cls is nn.SyncBatchNorm or cls in _FUSED_CLASS_NAMES


# --------------------------------------------------------------------------- report


@dataclass
class ConvertedLayer:
    """One norm layer of the model (a module shared under several names is one layer)."""

    name: str
    torch_type: str
    fused_type: Optional[str] = None  # None: left as it was (note says why)
    activation: Optional[str] = None  # the activation fused into it, e.g. "relu", "leaky_relu(0.2)"
    residual_sites: int = 0  # call sites fused with the residual add that follows
    note: Optional[str] = None  # why it was not converted, or not (fully) fused


@dataclass
class ConvertReport:
    """What :func:`convert` did; ``print(report)`` shows it as a table."""

    layers: list[ConvertedLayer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # modules whose forward was not traced, and why
    fuse: bool = True

    @property
    def converted(self) -> dict[str, int]:
        """torch type -> number of layers swapped for a fused one."""
        return dict(Counter(layer.torch_type for layer in self.layers if layer.fused_type))

    @property
    def not_converted(self) -> dict[str, int]:
        """torch type -> number of layers left as they were."""
        return dict(Counter(layer.torch_type for layer in self.layers if not layer.fused_type))

    @property
    def fused_activations(self) -> dict[str, int]:
        """activation -> number of layers it was fused into."""
        return dict(Counter(layer.activation for layer in self.layers if layer.activation))

    @property
    def residual_sites(self) -> int:
        """Number of call sites where a residual add was fused into the norm."""
        return sum(layer.residual_sites for layer in self.layers)

    def layer(self, name: str) -> ConvertedLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def __str__(self) -> str:
        total = len(self.layers)
        swapped = sum(1 for layer in self.layers if layer.fused_type)
        with_activation = sum(1 for layer in self.layers if layer.activation)
        lines = [
            f"fusednorm.convert: {swapped} of {total} norm layers converted, "
            f"{with_activation} fused with an activation, {self.residual_sites} residual adds fused"
            + ("" if self.fuse else " (fuse=False)")
        ]
        header = ("torch.nn", "fused as", "layers", "+ activation", "+ residual")
        rows = []
        for torch_type in dict.fromkeys(layer.torch_type for layer in self.layers):
            group = [layer for layer in self.layers if layer.torch_type == torch_type]
            for fused_type in dict.fromkeys(layer.fused_type for layer in group):
                members = [layer for layer in group if layer.fused_type == fused_type]
                activations = Counter(layer.activation for layer in members if layer.activation)
                rows.append(
                    (
                        torch_type,
                        f"fusednorm.{fused_type}" if fused_type else "(not converted)",
                        str(len(members)),
                        ", ".join(f"{name} x{count}" for name, count in activations.items()) or "-",
                        str(sum(layer.residual_sites for layer in members)) if fused_type else "-",
                    )
                )
        if rows:
            widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
            for row in [header, *rows]:
                lines.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        explained = [layer for layer in self.layers if layer.note]
        if explained:
            lines.append("not converted or not fused:")
            lines += [f"  {layer.name or '(model)'} ({layer.torch_type}): {layer.note}" for layer in explained]
        if self.notes:
            lines.append("not traced:")
            lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


# --------------------------------------------------------------------------- swap


def _constructor_kwargs(module: nn.Module) -> dict[str, Any]:
    """The module's constructor arguments, read back from the module."""
    kwargs = {}
    for name, param in inspect.signature(type(module).__init__).parameters.items():
        if name in _DROPPED_CONSTRUCTOR_ARGS or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in module._parameters:
            # A bool flag whose outcome is an optional parameter (LayerNorm's `bias`).
            kwargs[name] = module._parameters[name] is not None
        elif hasattr(module, name):
            kwargs[name] = getattr(module, name)
        else:
            raise TypeError(f"cannot read constructor argument {name!r} back from the module")
    return kwargs


_STATE_CONTAINERS = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set")


def _swap_one(module: nn.Module, fused_cls: type) -> nn.Module:
    """A fused_cls layer holding module's very Parameter and buffer objects,
    training mode, hooks and attributes."""
    # On the meta device: nothing is allocated or initialised, the tensors are replaced below.
    fused = fused_cls(**_constructor_kwargs(module), device="meta")
    if set(fused._parameters) != set(module._parameters) or set(fused._buffers) != set(module._buffers):
        raise TypeError(
            f"{fused_cls.__name__} has parameters {sorted(fused._parameters)} and buffers {sorted(fused._buffers)}, "
            f"not {sorted(module._parameters)} and {sorted(module._buffers)}"
        )
    fused._parameters.update(module._parameters)
    fused._buffers.update(module._buffers)
    fused._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    # Training flag, hook dictionaries (the same objects, so existing handles still
    # remove their hooks), user attributes.
    for key, value in vars(module).items():
        if key not in _STATE_CONTAINERS:
            fused.__dict__[key] = value
    return fused


def _distributed_world_size(module: nn.Module) -> int:
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(getattr(module, "process_group", None))


# --------------------------------------------------------------------------- activations

_MODULE_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh)

# call_function target -> (activation module class, names of the arguments after the input)
_FUNCTION_ACTIVATIONS = {
    F.relu: (nn.ReLU, ("inplace",)),
    F.relu_: (nn.ReLU, ()),
    torch.relu: (nn.ReLU, ()),
    torch.relu_: (nn.ReLU, ()),
    F.leaky_relu: (nn.LeakyReLU, ("negative_slope", "inplace")),
    F.leaky_relu_: (nn.LeakyReLU, ("negative_slope",)),
    F.elu: (nn.ELU, ("alpha", "inplace")),
    F.elu_: (nn.ELU, ("alpha",)),
    F.selu: (nn.SELU, ("inplace",)),
    F.selu_: (nn.SELU, ()),
    torch.selu: (nn.SELU, ()),
    torch.selu_: (nn.SELU, ()),
    F.celu: (nn.CELU, ("alpha", "inplace")),
    F.celu_: (nn.CELU, ("alpha",)),
    torch.celu: (nn.CELU, ("alpha",)),
    torch.celu_: (nn.CELU, ("alpha",)),
    F.gelu: (nn.GELU, ("approximate",)),
    F.silu: (nn.SiLU, ("inplace",)),
    F.sigmoid: (nn.Sigmoid, ()),
    torch.sigmoid: (nn.Sigmoid, ()),
    torch.sigmoid_: (nn.Sigmoid, ()),
    F.tanh: (nn.Tanh, ()),
    torch.tanh: (nn.Tanh, ()),
    torch.tanh_: (nn.Tanh, ()),
}
# call_method target (Tensor method) -> activation module class; these take no arguments.
_METHOD_ACTIVATIONS = {
    "relu": nn.ReLU,
    "relu_": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "sigmoid_": nn.Sigmoid,
    "tanh": nn.Tanh,
    "tanh_": nn.Tanh,
}


def _has_hooks(module: nn.Module) -> bool:
    return any(
        getattr(module, name, None)
        for name in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        )
    )


def _global_hooks_registered() -> bool:
    registry = nn.modules.module
    return any(
        getattr(registry, name, None)
        for name in (
            "_global_forward_hooks",
            "_global_forward_pre_hooks",
            "_global_backward_hooks",
            "_global_backward_pre_hooks",
        )
    )


def _activation_key(activation: nn.Module) -> tuple:
    spec = spec_of(activation)
    return (spec.name, spec.params)


def _activation_label(activation: nn.Module) -> str:
    name, params = _activation_key(activation)
    return f"{name}({', '.join(f'{p:g}' for p in params)})" if params else name


def _sequential_activation(module: nn.Module) -> Optional[nn.Module]:
    """module as a fusable activation (exact supported type, no hooks), else None."""
    if type(module) in _MODULE_ACTIVATIONS and not _has_hooks(module):
        return module
    return None


def _node_activation(scope: nn.Module, node: fx.Node, input_node: fx.Node) -> Optional[nn.Module]:
    """The activation a graph node applies to input_node, as a fresh module, or None."""
    if not node.args or node.args[0] is not input_node:
        return None
    rest, kwargs = node.args[1:], dict(node.kwargs)
    if any(isinstance(arg, fx.Node) for arg in [*rest, *kwargs.values()]):
        return None  # an argument computed at run time
    if node.op == "call_module":
        module = scope.get_submodule(node.target)
        if rest or kwargs or _sequential_activation(module) is None:
            return None
        return copy.deepcopy(module)
    if node.op == "call_method":
        cls = _METHOD_ACTIVATIONS.get(node.target)
        return cls() if cls is not None and not rest and not kwargs else None
    if node.op == "call_function" and node.target in _FUNCTION_ACTIVATIONS:
        cls, names = _FUNCTION_ACTIVATIONS[node.target]
        if len(rest) > len(names) or not set(kwargs) <= set(names):
            return None
        kwargs.update(zip(names, rest))
        try:
            return cls(**kwargs)
        except TypeError:
            return None
    return None


# --------------------------------------------------------------------------- fused forward


def _residual_of(add: fx.Node, norm: fx.Node) -> Optional[fx.Node]:
    """The other operand when `add` adds a tensor to the norm's output, else None."""
    if add.kwargs or len(add.args) != 2:
        return None  # alpha=, out=
    first, second = add.args
    if add.op == "call_function" and add.target in (operator.add, torch.add):
        other = second if first is norm else first if second is norm else None
    elif (add.op == "call_function" and add.target is operator.iadd) or (
        add.op == "call_method" and add.target in ("add", "add_")
    ):
        # The in-place forms mutate their first operand: only the norm's own output may be it.
        other = second if first is norm else None
    else:
        return None
    if not isinstance(other, fx.Node) or other is norm:
        return None
    return other


def _unfused_norm(norm: nn.Module, input: torch.Tensor) -> torch.Tensor:
    """The norm without its activation: the forward of the torch.nn class it derives from."""
    for cls in type(norm).__mro__:
        if cls.__module__.startswith("torch.") and "forward" in vars(cls):
            return cls.forward(norm, input)
    raise TypeError(f"{type(norm).__name__} does not derive from a torch.nn norm")


def _norm_with_residual(norm: nn.Module, input: torch.Tensor, residual: Any) -> torch.Tensor:
    """``norm.activation(norm(input) + residual)``: one fused call when residual
    has the output's shape, dtype and device; unfused otherwise (a broadcasting
    or type-promoting add), which is what the model computed before."""
    if isinstance(input, fx.Proxy):  # torch.fx tracing the converted model: stay one call
        return input.tracer.create_proxy("call_function", _norm_with_residual, (norm, input, residual), {})
    if (
        isinstance(residual, torch.Tensor)
        and residual.shape == input.shape
        and residual.dtype == input.dtype
        and residual.device == input.device
    ):
        return norm(input, residual=residual)
    return norm.activation(_unfused_norm(norm, input) + residual)


def _fused_subclass(cls: type, train_code: fx.GraphModule, eval_code: fx.GraphModule) -> type:
    """A subclass of cls (same name) whose forward is cls's forward as traced by
    torch.fx with the norms fused: the code of train_code in training mode, of
    eval_code in eval mode. The code runs with the module itself as ``self``, so
    parameters, buffers and submodules are looked up live; the GraphModules only
    hold that code (and pickle it). A class rather than an instance attribute
    because torch.fx traces ``type(root).forward``."""
    if eval_code is train_code:
        forward = type(train_code).forward
    else:
        train_forward, eval_forward = type(train_code).forward, type(eval_code).forward

        def forward(self, *args, **kwargs):
            return (train_forward if self.training else eval_forward)(self, *args, **kwargs)

    def __reduce_ex__(self, protocol):
        return (_rebuild_fused_module, (cls, train_code, eval_code), self.__dict__)

    return type(
        cls.__name__,
        (cls,),
        {
            "forward": forward,
            "__reduce_ex__": __reduce_ex__,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "_fusednorm_unfused_class": cls,
        },
    )


def _rebuild_fused_module(cls: type, train_code: fx.GraphModule, eval_code: fx.GraphModule) -> nn.Module:
    """Unpickles (and deep-copies) a module whose forward convert fused; its state follows."""
    fused_cls = _fused_subclass(cls, train_code, eval_code)
    return fused_cls.__new__(fused_cls)


class _ShallowTracer(fx.Tracer):
    """Traces one module's own forward: every submodule call is a leaf."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


@dataclass
class _Site:
    """One call of a converted norm: in a traced graph or as an nn.Sequential entry."""

    norm: nn.Module
    activation: Optional[nn.Module]  # what follows the norm (after the add, if any)
    # graph call sites
    graph: Optional[fx.Graph] = None
    norm_node: Optional[fx.Node] = None
    add_node: Optional[fx.Node] = None
    residual: Optional[fx.Node] = None
    activation_node: Optional[fx.Node] = None
    # nn.Sequential call sites
    sequential: Optional[nn.Sequential] = None
    activation_key: Optional[str] = None  # the Sequential entry of the activation


def _graph_sites(scope: nn.Module, graph: fx.Graph, converted: dict[int, nn.Module]) -> list[_Site]:
    sites = []
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        norm = scope.get_submodule(node.target)
        if id(norm) not in converted:
            continue
        site = _Site(norm, None, graph=graph, norm_node=node)
        sites.append(site)
        if len(node.args) != 1 or node.kwargs or len(node.users) != 1:
            continue  # the norm's output is used more than once: nothing to fuse it with
        (user,) = node.users
        residual = _residual_of(user, node)
        if residual is not None:
            site.add_node, site.residual = user, residual
            if len(user.users) != 1:
                continue  # the sum is used more than once: fuse the add only
            (user,) = user.users
        activation = _node_activation(scope, user, site.add_node or node)
        if activation is not None:
            site.activation, site.activation_node = activation, user
    return sites


def _sequential_sites(sequential: nn.Sequential, converted: dict[int, nn.Module]) -> list[_Site]:
    sites = []
    entries = list(sequential._modules.items())
    for index, (_, module) in enumerate(entries):
        if module is None or id(module) not in converted:
            continue
        site = _Site(module, None, sequential=sequential)
        if index + 1 < len(entries):
            key, following = entries[index + 1]
            activation = _sequential_activation(following) if following is not None else None
            if activation is not None:
                site.activation, site.activation_key = copy.deepcopy(activation), key
        sites.append(site)
    return sites


def _rewrite_graph_site(site: _Site, fuse_activation: bool) -> bool:
    """Rewrites one graph call site; False when there is nothing to rewrite."""
    graph, norm_node = site.graph, site.norm_node
    if site.add_node is not None:
        # [act](norm(x) + r) -> _norm_with_residual(norm, x, r); the activation goes
        # with it when the norm carries it, else it stays a separate op.
        last = site.activation_node if fuse_activation else site.add_node
        with graph.inserting_before(site.add_node):
            norm_ref = graph.get_attr(norm_node.target)
            fused = graph.call_function(_norm_with_residual, (norm_ref, norm_node.args[0], site.residual))
        last.replace_all_uses_with(fused)
        for node in ([site.activation_node] if fuse_activation else []) + [site.add_node, norm_node]:
            graph.erase_node(node)
        return True
    if fuse_activation:
        site.activation_node.replace_all_uses_with(norm_node)
        graph.erase_node(site.activation_node)
        return True
    return False


# --------------------------------------------------------------------------- convert


def _forward_signature_problem(module: nn.Module) -> Optional[str]:
    if "forward" in vars(module):
        return "its forward was replaced on the instance"
    if "_fusednorm_unfused_class" in vars(type(module)):
        return "convert already fused its forward"
    try:
        params = list(inspect.signature(type(module).forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return "its forward has no signature"
    for param in params:
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            return f"its forward takes *args/**kwargs or keyword-only '{param.name}'"
        if param.default is not param.empty:
            return f"its forward takes optional '{param.name}' (fx would specialise on it)"
    return None


def _trace_both_modes(scope: nn.Module) -> tuple[dict[bool, fx.Graph], dict[str, Any]]:
    """Graphs of scope's own forward in training and eval mode (the same graph
    object for both when they agree), and the attributes the tracer stored on
    scope (tensor constants), taken off scope again."""
    # Flags are set directly: a model's own train() may do more (freeze layers).
    flags = [(module, module.training) for module in scope.modules()]
    before = set(vars(scope))
    graphs = {}
    try:
        for mode in (True, False):
            for module, _ in flags:
                module.training = mode
            graphs[mode] = _ShallowTracer().trace(scope)
    finally:
        for module, flag in flags:
            module.training = flag
        added = {key: scope.__dict__.pop(key) for key in set(vars(scope)) - before}
    if graphs[True].python_code("self").src == graphs[False].python_code("self").src:
        graphs[False] = graphs[True]
    return graphs, added


def _install_forward(scope: nn.Module, graphs: dict[bool, fx.Graph], added: dict[str, Any]) -> None:
    scope.__dict__.update(added)
    name = f"Fused{type(scope).__name__}"
    train_code = fx.GraphModule(scope, graphs[True], class_name=name)
    eval_code = train_code if graphs[False] is graphs[True] else fx.GraphModule(scope, graphs[False], class_name=name)
    scope.__class__ = _fused_subclass(type(scope), train_code, eval_code)


class _Fuser:
    """Finds every call of the converted norms, decides per norm which activation
    it takes, rewrites the call sites and installs the rewritten forwards."""

    def __init__(self, model: nn.Module, layer_of: dict[int, ConvertedLayer], norms: dict[int, nn.Module]):
        self.model = model
        self.layer_of = layer_of  # id of a fused norm -> its report entry
        self.norms = norms  # id -> fused norm
        self.paths = list(model.named_modules(remove_duplicate=False))
        # id of a module -> None when every call it makes of its children is known, else why not
        self.status: dict[int, Optional[str]] = {}
        self.traced: list[tuple[nn.Module, dict[bool, fx.Graph], dict[str, Any]]] = []
        self.sites: list[_Site] = []
        self.notes: list[str] = []

    def parents(self, module: nn.Module) -> list[tuple[str, nn.Module]]:
        """(path, parent) for every place module is registered."""
        return [
            (path.rpartition(".")[0], self.model.get_submodule(path.rpartition(".")[0]))
            for path, candidate in self.paths
            if candidate is module and path
        ]

    def scan(self) -> None:
        """Traces (or reads, for nn.Sequential) every module above a converted norm."""
        holders = set()
        for path, module in self.paths:
            if id(module) in self.norms:
                parts = path.split(".") if path else []
                holders.update(".".join(parts[:i]) for i in range(len(parts)))
        for path, module in self.paths:
            if path not in holders or id(module) in self.status:
                continue
            self.status[id(module)] = self.scan_module(path, module)

    def scan_module(self, path: str, module: nn.Module) -> Optional[str]:
        cls = type(module)
        if isinstance(module, nn.Sequential) and cls.forward is nn.Sequential.forward:
            # Sequential subclasses that keep its forward too (torchvision's Conv2dNormActivation).
            self.sites += _sequential_sites(module, self.norms)
            return None
        if cls in (nn.ModuleList, nn.ModuleDict):
            return _CONTAINER
        if cls.__module__.startswith("torch.nn."):
            return f"torch.nn.{cls.__name__} keeps its own forward"
        problem = _forward_signature_problem(module)
        if problem is None:
            try:
                graphs, added = _trace_both_modes(module)
            except Exception as error:
                message = str(error).strip().splitlines()[0] if str(error).strip() else ""
                problem = f"torch.fx could not trace it ({type(error).__name__}: {message})"
        if problem is not None:
            self.notes.append(f"{path or '(model)'} ({cls.__name__}): {problem}")
            return problem
        self.traced.append((module, graphs, added))
        for graph in dict.fromkeys(graphs.values()):
            self.sites += _graph_sites(module, graph, self.norms)
        return None

    def calls_unknown(self, module: nn.Module, seen: frozenset = frozenset()) -> Optional[str]:
        """Why the calls module makes of its children are not all known, else None.
        A ModuleList/ModuleDict's children are called by the container's parents."""
        problem = self.status.get(id(module), "it was not traced")
        if problem is not _CONTAINER:
            return problem
        for path, parent in self.parents(module):
            if id(parent) not in seen and self.calls_unknown(parent, seen | {id(module)}) is not None:
                return f"the container is used by {path or '(model)'}, whose calls are not known"
        return None

    def why_not_fusable(self, norm: nn.Module, sites: list[_Site]) -> Optional[str]:
        for path, parent in self.parents(norm):
            problem = self.calls_unknown(parent)
            if problem is not None:
                return f"not fused: {path or '(model)'}, which calls it, is not traced: {problem}"
        if _has_hooks(norm):
            return "not fused: it has hooks, which would see the fused output"
        if not sites:
            return "not fused: no call of it was found"
        return None

    def fuse(self) -> None:
        by_norm: dict[int, list[_Site]] = {}
        for site in self.sites:
            by_norm.setdefault(id(site.norm), []).append(site)
        train_graphs = {id(graphs[True]) for _, graphs, _ in self.traced}
        rewritten: set[int] = set()
        for norm_id, norm in self.norms.items():
            layer, sites = self.layer_of[norm_id], by_norm.get(norm_id, [])
            layer.note = self.why_not_fusable(norm, sites)
            if layer.note is not None:
                continue
            keys = {_activation_key(site.activation) if site.activation is not None else None for site in sites}
            fuse_activation = len(keys) == 1 and None not in keys
            if fuse_activation:
                norm.activation = sites[0].activation
                layer.activation = _activation_label(norm.activation)
            elif any(site.activation is not None for site in sites):
                layer.note = "activation not fused: the places it is called differ in what follows it"
            for site in sites:
                if site.sequential is not None:
                    if fuse_activation:
                        site.sequential._modules[site.activation_key] = nn.Identity()
                elif _rewrite_graph_site(site, fuse_activation):
                    rewritten.add(id(site.graph))
                    if site.add_node is not None and id(site.graph) in train_graphs:
                        layer.residual_sites += 1
        for module, graphs, added in self.traced:
            if any(id(graph) in rewritten for graph in graphs.values()):
                for graph in dict.fromkeys(graphs.values()):
                    graph.lint()
                _install_forward(module, graphs, added)


_CONTAINER = "container"


def convert(model: nn.Module, fuse: bool = True) -> tuple[nn.Module, ConvertReport]:
    """Swaps model's torch.nn norm layers for fusednorm's fused ones, in place,
    and (``fuse=True``) fuses each with the activation and residual add that
    follow it. Returns ``(model, report)``; model is the same object unless it
    is itself a norm layer. ``print(report)`` shows what was converted and fused,
    and why anything was not."""
    report = ConvertReport(fuse=fuse)
    norm_paths = [
        (path, module) for path, module in model.named_modules(remove_duplicate=False) if _is_norm_class(type(module))
    ]
    # One fused layer per norm object, put in every place that object is registered.
    swapped: dict[int, nn.Module] = {}  # id of the torch layer -> its fused replacement
    layer_of: dict[int, ConvertedLayer] = {}  # id of the torch layer -> its report entry
    for path, module in norm_paths:
        if id(module) in layer_of:
            continue
        layer = layer_of[id(module)] = ConvertedLayer(path, type(module).__name__)
        report.layers.append(layer)
        fused_cls = fused_class_for(type(module))
        if fused_cls is None:
            layer.note = f"fusednorm.nn has no {type(module).__name__}"
        elif type(module) is nn.SyncBatchNorm and _distributed_world_size(module) > 1:
            layer.note = "SyncBatchNorm in a process group of more than one rank is kept"
        else:
            try:
                swapped[id(module)] = _swap_one(module, fused_cls)
            except Exception as error:  # a fused class that does not mirror its torch class
                layer.note = f"not swapped: {error}"
                continue
            prefix = "convert." if fused_cls is BatchNormAnyRank else "nn."
            layer.fused_type = prefix + fused_cls.__name__
    for path, module in norm_paths:
        if id(module) not in swapped:
            continue
        if not path:
            return swapped[id(module)], report  # the model is a norm layer itself
        parent_path, _, name = path.rpartition(".")
        model.get_submodule(parent_path)._modules[name] = swapped[id(module)]
    if not fuse or not swapped:
        return model, report
    fused_layer_of = {id(swapped[key]): layer_of[key] for key in swapped}
    if _global_hooks_registered():
        for layer in fused_layer_of.values():
            layer.note = "not fused: global module hooks are registered"
        return model, report
    fuser = _Fuser(model, fused_layer_of, {id(norm): norm for norm in swapped.values()})
    fuser.scan()
    fuser.fuse()
    report.notes += fuser.notes
    return model, report
