"""The structure recovered from the IR, and the trees the writer makes of it.

A :class:`Region` is a scope of the graph (the model, a block instance, a
sequence, a labelled construct) with its :class:`Child` members; a
:class:`Unit` is one layer of a region's data flow; a :class:`Stmt` is one
statement of a body.

The writer turns the model and every block instance into a body, a tuple of
statements: ``("@input", name, shape or None)``, ``("@assign", results, sources,
layers)`` and ``("@output", items)``, an item being ``("@var", name)`` or
``("@chain", sources, layers)``. A layer is ``("@gap",)``, ``("@op", label, op,
((argument, value), ...))``, ``("@call", label, region, hint)`` (after grouping
``("@callg", label, group id, ((parameter, Hole), ...))``), ``("@seq", label,
layers)``, ``("@res", label, main, shortcut or None)``, ``("@par", label, merge,
branches)``, ``("@dense", label, items)`` or ``("@stn", label, layers, size or
None, align_corners)``. A value is a :class:`Hole`, a :class:`Lit`,
``("@list", value, ...)`` or ``("@pair", Hole, Hole)`` (a pair attribute (h, w) with h != w).
A block definition whose instances differ in structure has the body ``(inputs...,
("@if", conditions, bodies))``: one body per variant, the last one the ``else``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class _Missing:
    """A value an instance does not have (a part of the body it lacks)."""
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


@dataclass(eq=False)
class Hole:
    """A number in a block body that may differ between instances."""
    value: object
    kind: str          # "int" | "float" | "bool" | "pair" (k or (h, w)) | "variant" (an int choosing a body)
    hint: str          # how a parameter for it would be named
    pair: bool = False # a pair attribute (k, k), written as k


@dataclass(frozen=True)
class Lit:
    """A structural literal (a bool, a string, a list of initial values, none)."""
    value: object

    @property
    def key(self):
        v = self.value
        return ("list", tuple(v)) if isinstance(v, (list, tuple)) else (type(v).__name__, v)


class Region:
    """A scope of the graph: the model, a block instance, a sequence or a labelled construct."""

    def __init__(self, path: str, info):
        self.path = path
        self.info = info
        self.kind = info.kind if info is not None else "seq"
        self.name = info.name if info is not None else "seq"
        self.local = path.rsplit(".", 1)[-1] if path else ""
        self.children: list[Child] = []
        self.nodes: list[int] = []
        self.nodeset: set = set()
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.first = -1
        self.tree = None          # block and model regions: the body


class Child:
    """A direct member of a region: one node or one sub-region, with its label and the places before it."""

    def __init__(self, local: str, first: int, node: int | None = None, region: Region | None = None):
        self.local = local
        self.first = first
        self.node = node
        self.region = region
        self.label: str | None = None
        self.gaps = 0


@dataclass(eq=False)
class Unit:
    """A piece of a region's data flow that is one layer of a chain: an op, a call, a construct..."""
    kind: str                  # op call seq res par dense stn input
    inputs: list
    outputs: list
    first: int
    nodes: set
    child: Child | None = None
    parts: dict = field(default_factory=dict)
    label: str | None = None   # constructs and sequences: their label
    gaps: int = 0              # places to hold before the layer


class Stmt:
    def __init__(self, source, units, result):
        self.source = list(source)
        self.units = list(units)
        self.result = list(result)
        self.input = None     # an input statement: the tensor


def walk_holes(t, path=()):
    if isinstance(t, Hole):
        yield path, t
    elif isinstance(t, tuple):
        for i, x in enumerate(t):
            yield from walk_holes(x, path + (i,))


def get(t, path):
    for i in path:
        t = t[i]
    return t


def graft(t, path, value):
    if not path:
        return value
    i = path[0]
    return t[:i] + (graft(t[i], path[1:], value),) + t[i + 1:]
