"""IR to an in-memory ``torch.nn.Module``.

Every op is lowered as :mod:`.torch_lowering` says: ops with a module form
become that ``torch.nn`` module, installed at its scope path (``layer1.0.conv1``),
so ``state_dict`` keys equal the IR's parameter names and load into torchvision
twins and back; every other op is a function call. ``forward`` runs the nodes in
topological order and frees each intermediate tensor after its last use.

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
from .torch_lowering import Module, factory_dtype, lowering
from .torch_tensors import ir_state, resolve_device, torch_dtype


def build_layer(form: Module, d: dict, in_shapes: list, dtype: str | None) -> nn.Module:
    """``nn.<cls>(*args, **kwargs)`` for a node, in ``dtype`` when it is not float32."""
    args, kwargs = form.values(d["attrs"], in_shapes)
    if dtype is not None:
        kwargs["dtype"] = torch_dtype(dtype)
    return getattr(nn, form.class_name(len(in_shapes[0])))(*args, **kwargs)


def _install(root: nn.Module, path: str, module: nn.Module) -> None:
    parts = path.split(".")
    parent = root
    for part in parts[:-1]:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    parent.add_module(parts[-1], module)


def _resolve(root: nn.Module, path: str) -> nn.Module:
    m = root
    for part in path.split("."):
        m = m._modules[part]
    return m


class ArchModule(nn.Module):
    """A ``torch.nn.Module`` that runs an archdsl graph."""

    def __init__(self, graph: Graph, load_weights: bool = True, device=None):
        super().__init__()
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
            if low.module is not None and low.module.factory is not None:     # integer or shared weights
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
        self._program = [(nid, _resolve(self, fn[1]) if fn[0] == "module" else fn[1], ins, free)
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
