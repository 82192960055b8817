"""IR to an in-memory ``torch.nn.Module``.

Layers with parameters become the usual ``torch.nn`` modules, installed at
their scope paths (``layer1.0.conv1``), so ``state_dict`` keys equal the IR's
parameter names and load into torchvision twins and back. Every other op is
a function call. ``forward`` runs the nodes in topological order and frees
each intermediate tensor after its last use.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..ir.graph import Graph
from .inplace import inplace_nodes


def _conv(n, ins):
    a = n["attrs"]
    return nn.Conv2d(ins[0][1], a["out_channels"], a["kernel_size"], a["stride"], a["padding"], a["dilation"],
                     a["groups"], a["bias"])


def _linear(n, ins):
    a = n["attrs"]
    return nn.Linear(ins[0][-1], a["out_features"], a["bias"])


def _bn(n, ins):
    a = n["attrs"]
    cls = nn.BatchNorm2d if len(ins[0]) == 4 else nn.BatchNorm1d
    return cls(ins[0][1], a["eps"], a["momentum"], a["affine"])


def _pool(cls):
    def make(n, ins):
        a = dict(n["attrs"])
        return cls(**a)
    return make


MODULES = {
    "conv": _conv,
    "linear": _linear,
    "bn": _bn,
    "relu": lambda n, ins: nn.ReLU(),
    "relu6": lambda n, ins: nn.ReLU6(),
    "sigmoid": lambda n, ins: nn.Sigmoid(),
    "tanh": lambda n, ins: nn.Tanh(),
    "gelu": lambda n, ins: nn.GELU(),
    "silu": lambda n, ins: nn.SiLU(),
    "hardswish": lambda n, ins: nn.Hardswish(),
    "hardsigmoid": lambda n, ins: nn.Hardsigmoid(),
    "identity": lambda n, ins: nn.Identity(),
    "leaky_relu": lambda n, ins: nn.LeakyReLU(n["attrs"]["negative_slope"]),
    "elu": lambda n, ins: nn.ELU(n["attrs"]["alpha"]),
    "softmax": lambda n, ins: nn.Softmax(n["attrs"]["dim"]),
    "log_softmax": lambda n, ins: nn.LogSoftmax(n["attrs"]["dim"]),
    "dropout": lambda n, ins: nn.Dropout(n["attrs"]["p"]),
    "dropout2d": lambda n, ins: nn.Dropout2d(n["attrs"]["p"]),
    "lrn": lambda n, ins: nn.LocalResponseNorm(**n["attrs"]),
    "maxpool": _pool(nn.MaxPool2d),
    "avgpool": _pool(nn.AvgPool2d),
    "adaptive_avgpool": lambda n, ins: nn.AdaptiveAvgPool2d(n["attrs"]["output_size"]),
    "adaptive_maxpool": lambda n, ins: nn.AdaptiveMaxPool2d(n["attrs"]["output_size"]),
}


def _concat(a):
    dim = a["dim"]
    return lambda *xs: torch.cat(xs, dim)


def _add(a):
    def add(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out
    return add


def _add_(out, *xs):
    """``out += x`` for each x: the sum written over the first operand (see inplace.py)."""
    for x in xs:
        out = out.add_(x)
    return out


def _mul(a):
    def mul(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out
    return mul


FUNCTIONS = {
    "concat": _concat,
    "add": _add,
    "mul": _mul,
    "flatten": lambda a: (lambda x: torch.flatten(x, a["start_dim"], a["end_dim"])),
    "reshape": lambda a: (lambda x: x.reshape(x.shape[0], *a["shape"])),
    "transpose": lambda a: (lambda x: x.transpose(a["dim0"], a["dim1"])),
    "slice": lambda a: (lambda x: x.narrow(a["dim"], a["start"], a["end"] - a["start"])),
    "affine_grid": lambda a: (lambda t: F.affine_grid(t, [t.shape[0], *a["size"]], align_corners=a["align_corners"])),
    "grid_sample": lambda a: (lambda x, g: F.grid_sample(x, g, mode=a["mode"], padding_mode=a["padding_mode"],
                                                          align_corners=a["align_corners"])),
}


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

    def __init__(self, graph: Graph, load_weights: bool = True):
        super().__init__()
        self.graph_name = graph.name
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
            in_shapes = [graph.data(s)["shape"] for s in d["inputs"]]
            if d["op"] in MODULES:
                module = MODULES[d["op"]](d, in_shapes)
                if nid in inplace:                       # relu: see inplace.py
                    module.inplace = True
                _install(self, d["scope"], module)
                fn = ("module", d["scope"])
            elif nid in inplace:                         # add: see inplace.py
                fn = ("function", _add_)
            elif d["op"] in FUNCTIONS:
                fn = ("function", FUNCTIONS[d["op"]](d["attrs"]))
            else:
                raise NotImplementedError(f"the PyTorch backend has no rule for op '{d['op']}'")
            free = tuple(s for s in set(d["inputs"]) if last_use.get(s) == i and s not in self._outputs)
            program.append((nid, fn, tuple(d["inputs"]), free))
        # resolve module references once construction is complete
        self._program = [(nid, _resolve(self, fn[1]) if fn[0] == "module" else fn[1], ins, free)
                         for nid, fn, ins, free in program]
        if load_weights:
            self.load_ir_weights(graph)

    def load_ir_weights(self, graph: Graph) -> None:
        state = {name: torch.from_numpy(np.array(p.value, copy=True)) for name, p in graph.params.items()}
        self.load_state_dict(state, strict=True)

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


def to_torch(graph: Graph, load_weights: bool = True) -> nn.Module:
    return ArchModule(graph, load_weights)
