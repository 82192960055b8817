"""IR to an in-memory ``torch.nn.Module``.

Every op is lowered as :mod:`.torch_lowering` says: ops with a module form
become that ``torch.nn`` module, installed at its scope path (``layer1.0.conv1``),
so ``state_dict`` keys equal the IR's parameter names and load into torchvision
twins and back; every other op is a function call. ``forward`` runs the nodes in
topological order and frees each intermediate tensor after its last use.
A scope name may be anything (``block1-0``, ``if``, ``train``, ``training``):
modules are registered under it in ``_modules`` (see :class:`AnyNames`), so
``state_dict`` and ``named_parameters`` keep the spec's names exactly.

With weights (the default) the modules are built on the meta device, which
allocates and initialises nothing, and the IR's arrays are then assigned as
the parameters and buffers (``load_state_dict(..., assign=True)``): each value
is copied once, from NumPy, and carries the IR's dtype. Without weights the
modules are built for real, with PyTorch's default initialisation, in the IR's
dtypes.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..ir.graph import Graph
from .inplace import inplace_nodes
from ..ir import ops
from .torch_layers import CLASSES
from .torch_lowering import Module, factory_dtype, init_tensor, lowering
from .torch_tensors import ir_state, resolve_device, torch_dtype


TORCH_MAX_BYTES = 2 ** 63        # PyTorch computes a storage's size in bytes as an int64


def check_sizes(graph: Graph) -> None:
    """An ArchError at the layer whose parameter PyTorch cannot hold (over 2**63 bytes, or a dimension over
    int64), instead of the RuntimeError or OverflowError that building it would raise."""
    from ..diagnostics import ArchError
    from ..ir.types import numpy_dtype
    owner = {pname: nid for nid in graph.node_ids() for pname in graph.data(nid)["params"].values()}
    for name, p in graph.params.items():
        if all(d < TORCH_MAX_BYTES for d in p.shape) and p.numel * numpy_dtype(p.dtype).itemsize < TORCH_MAX_BYTES:
            continue
        d = graph.data(owner[name]) if name in owner else {}
        raise ArchError(f"Parameter '{name}' of shape {tuple(p.shape)} needs {p.numel:,} elements, more than a "
                        "PyTorch tensor can hold (2**63 bytes); make the layer smaller to build the model in "
                        "PyTorch.", d.get("span"))


def build_layer(form: Module, d: dict, in_shapes: list, dtype: str | None) -> nn.Module:
    """``nn.<cls>(*args, **kwargs)`` for a node, in ``dtype`` when it is not float32."""
    args, kwargs = form.values(d["attrs"], in_shapes)
    if dtype is not None:
        kwargs["dtype"] = torch_dtype(dtype)
    name = form.class_name(len(in_shapes[0]), d["attrs"])
    return (CLASSES[name] if name in CLASSES else getattr(nn, name))(*args, **kwargs)


def _install_parameter(root: nn.Module, graph: Graph, nid: int, local: str) -> tuple:
    """An op's bare parameter (scale's) as ``nn.Parameter`` on the module of the enclosing scope, named by
    the node's own label (torchvision's ``layer_scale``); ``(owner path, attribute)``."""
    d = graph.data(nid)
    p = graph.params[d["params"][local]]
    parent, _, name = d["scope"].rpartition(".")
    owner = _scope(root, parent.split(".") if parent else ())
    value = torch.empty(p.shape, dtype=torch_dtype(p.dtype))
    if not value.is_meta:                     # built without the IR's weights: the spec's initialiser
        init_tensor(value, p.init, p.fan_in, p.fan_out)
    _register(owner, name, nn.Parameter(value, requires_grad=p.trainable))
    return parent, name


def _with_parameter(owner: nn.Module, name: str, fn):
    """``fn(parameter, *operands)``, reading the parameter at each call (load_state_dict may replace it)."""
    return lambda *xs: fn(owner._parameters[name], *xs)


class AnyNames(nn.Module):
    """A module whose children and parameters may have any name, ``train`` or ``training`` included.

    Such a name is registered in ``_modules`` (``_parameters``) only, so ``state_dict`` keys are the
    scope names while ``self.train`` stays the method; writing another kind of value to it
    (``self.training = False`` in ``eval()``) sets an ordinary attribute instead of failing.
    """

    def __setattr__(self, name: str, value) -> None:
        if value is not None and not isinstance(value, (nn.Module, torch.Tensor)) and (
                name in self.__dict__.get("_modules", ()) or name in self.__dict__.get("_parameters", ())):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class Scope(AnyNames):
    """A scope of the graph (``layer1``, ``layer1.0``) that holds modules."""


def _register(owner: nn.Module, name: str, value) -> None:
    """``owner.add_module(name, value)`` (or ``register_parameter``), also for names that are attributes
    of ``nn.Module`` (``train``), which ``add_module`` refuses."""
    if not name or "." in name:
        raise ValueError(f"{name!r} is not a module name")
    param = isinstance(value, nn.Parameter)
    if not hasattr(owner, name):
        (owner.register_parameter if param else owner.add_module)(name, value)
    else:
        (owner._parameters if param else owner._modules)[name] = value


def _scope(root: nn.Module, parts) -> nn.Module:
    """The module at the scope path ``parts`` (made of :class:`Scope` where missing)."""
    owner = root
    for part in parts:
        child = owner._modules.get(part)
        if child is None:
            child = Scope()
            _register(owner, part, child)
        owner = child
    return owner


def _install(root: nn.Module, path: str, module: nn.Module) -> None:
    parts = path.split(".")
    _register(_scope(root, parts[:-1]), parts[-1], module)


def _resolve(root: nn.Module, path: str) -> nn.Module:
    m = root
    for part in path.split("."):
        m = m._modules[part]
    return m


class ArchModule(AnyNames):
    """A ``torch.nn.Module`` that runs an archdsl graph."""

    def __init__(self, graph: Graph, load_weights: bool = True, device=None):
        super().__init__()
        if not isinstance(graph, Graph):
            from ..diagnostics import ArchError
            raise ArchError(f"to_torch takes a Graph (from archdsl.load), not {type(graph).__name__}; for a spec "
                            "file, archdsl.to_torch(archdsl.load(path)).")
        check_sizes(graph)
        self.graph_name = graph.name
        target = resolve_device(device) if device is not None else torch.get_default_device()
        if load_weights:
            place = torch.device("meta")
        else:
            place = target if device is not None else contextlib.nullcontext()
        with place:
            self._build(graph)
        if load_weights:
            self.load_state_dict(ir_state(graph, target), strict=True, assign=True)

    def _build(self, graph: Graph) -> None:
        order = graph.node_ids()
        pos = {nid: i for i, nid in enumerate(order)}
        last_use: dict[int, int] = {}
        for nid in order:
            for src in graph.data(nid)["inputs"]:
                last_use[src] = pos[nid]
        self._inputs = list(graph.inputs)
        self._outputs = list(graph.outputs)
        program = []
        inplace = inplace_nodes(graph)
        for i, nid in enumerate(order):
            d = graph.data(nid)
            if d["op"] == "input":
                continue
            low = lowering(d["op"])
            bare = ops.get(d["op"]).bare
            if bare:                                     # scale: a parameter of the enclosing module
                owner, name = _install_parameter(self, graph, nid, bare)
                fn = ("parameter", owner, name, low.run(d["attrs"], [graph.type_of(s) for s in d["inputs"]]))
            elif low.module is not None and low.module.factory is not None:     # integer or shared weights
                module = low.module.factory(graph, nid)
                _install(self, d["scope"], module)
                fn = ("module", d["scope"])
            elif low.module is not None:
                module = build_layer(low.module, d, [graph.data(s)["shape"] for s in d["inputs"]],
                                     factory_dtype(graph, nid))
                if nid in inplace:                       # relu: see inplace.py
                    module.inplace = True
                _install(self, d["scope"], module)
                fn = ("module", d["scope"])
            elif nid in inplace:                         # add: see inplace.py
                fn = ("function", low.inplace.run)
            else:
                fn = ("function", low.run(d["attrs"], [graph.type_of(s) for s in d["inputs"]]))
            free = tuple(s for s in set(d["inputs"]) if last_use.get(s) == i and s not in self._outputs)
            program.append((nid, fn, tuple(d["inputs"]), free))
        # resolve module references once construction is complete
        self._program = [(nid, _resolve(self, fn[1]) if fn[0] == "module" else
                          _with_parameter(_resolve(self, fn[1]) if fn[1] else self, fn[2], fn[3])
                          if fn[0] == "parameter" else fn[1], ins, free)
                         for nid, fn, ins, free in program]

    def load_ir_weights(self, graph: Graph) -> None:
        """Copy the graph's weights into this module's parameters and buffers (by name, strictly)."""
        self.load_state_dict(ir_state(graph), strict=True)

    def forward(self, *inputs):
        if len(inputs) != len(self._inputs):
            raise TypeError(f"{self.graph_name} takes {len(self._inputs)} inputs but got {len(inputs)}")
        env = dict(zip(self._inputs, inputs))
        for nid, fn, ins, free in self._program:
            env[nid] = fn(*[env[i] for i in ins])
            for i in free:
                del env[i]
        outs = [env[o] for o in self._outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)


def to_torch(graph: Graph, load_weights: bool = True, device=None) -> nn.Module:
    """An ``nn.Module`` computing ``graph``, with its weights (or PyTorch's initialisation), on ``device``.

    ``device`` defaults to torch's current default device (``with torch.device(...)``).
    """
    return ArchModule(graph, load_weights, device)
