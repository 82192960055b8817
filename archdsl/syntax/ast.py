"""The abstract syntax of .arch files: small frozen dataclasses, each with a ``span``.

Class names match the rule aliases in ``grammars/arch.lark``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from ..diagnostics import Span


@dataclass(frozen=True, slots=True)
class Node:
    span: Span


# ---- expressions -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Literal(Node):
    value: Any            # int, float, str, bool or None


@dataclass(frozen=True, slots=True)
class Var(Node):
    name: str


@dataclass(frozen=True, slots=True)
class TupleExpr(Node):
    items: tuple


@dataclass(frozen=True, slots=True)
class ListExpr(Node):
    items: tuple


@dataclass(frozen=True, slots=True)
class Comp(Node):
    targets: "Target"
    iter: "Expr"
    cond: "Expr | None" = None     # `for t in xs if cond`: items where cond is false are skipped


@dataclass(frozen=True, slots=True)
class ListComp(Node):
    elt: "Expr"
    comp: Comp


@dataclass(frozen=True, slots=True)
class BinOp(Node):
    op: str
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True, slots=True)
class Compare(Node):
    left: "Expr"
    ops: tuple            # of str
    rights: tuple         # of Expr


@dataclass(frozen=True, slots=True)
class BoolOp(Node):
    op: str               # "and" | "or"
    values: tuple


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str               # "-" | "+" | "not"
    operand: "Expr"


@dataclass(frozen=True, slots=True)
class Ternary(Node):
    then: "Expr"
    cond: "Expr"
    orelse: "Expr"


@dataclass(frozen=True, slots=True)
class KwArg(Node):
    name: str
    value: "Expr"


@dataclass(frozen=True, slots=True)
class Args(Node):
    positional: tuple     # of Expr
    keywords: tuple       # of KwArg


@dataclass(frozen=True, slots=True)
class CallExpr(Node):
    func: "Expr"
    args: Args


@dataclass(frozen=True, slots=True)
class Index(Node):
    obj: "Expr"
    index: "Expr"


@dataclass(frozen=True, slots=True)
class Attr(Node):
    obj: "Expr"
    name: str


@dataclass(frozen=True, slots=True)
class Chain(Node):
    """``source -> layer -> layer ...``"""
    source: "Expr"
    layers: tuple


# ---- layers (what follows ``->``) -----------------------------------------

@dataclass(frozen=True, slots=True)
class Label(Node):
    """``block{i}-{j}:``: text pieces (str) and interpolated expressions, in order; the first is a str."""
    parts: tuple


@dataclass(frozen=True, slots=True)
class LayerCall(Node):
    label: Label | None
    callee: tuple         # dotted name parts
    args: Args
    callee_span: Span


@dataclass(frozen=True, slots=True)
class Seq(Node):
    """``[a -> b for t in xs]`` after ``->``, or as a value (``b = [conv(8, 3) -> relu]``)."""
    label: Label | None
    body: tuple           # of layers
    comp: Comp | None


@dataclass(frozen=True, slots=True)
class Branch(Node):
    body: tuple
    comp: Comp | None


@dataclass(frozen=True, slots=True)
class Parallel(Node):
    label: Label | None
    args: Args
    branches: tuple


@dataclass(frozen=True, slots=True)
class Dense(Node):
    label: Label | None
    args: Args
    branches: tuple


@dataclass(frozen=True, slots=True)
class Shortcut(Node):
    cond: "Expr | None"
    body: tuple


@dataclass(frozen=True, slots=True)
class Residual(Node):
    label: Label | None
    body: tuple
    shortcut: Shortcut | None


@dataclass(frozen=True, slots=True)
class Stn(Node):
    label: Label | None
    args: Args
    body: tuple


Layer = Union[LayerCall, Seq, Parallel, Dense, Residual, Stn]
Expr = Union[Literal, Var, TupleExpr, ListExpr, ListComp, BinOp, Compare, BoolOp, Unary,
             Ternary, CallExpr, Index, Attr, Chain, Seq]


# ---- assignment targets ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NameTarget(Node):
    name: str


@dataclass(frozen=True, slots=True)
class TupleTarget(Node):
    items: tuple


Target = Union[NameTarget, TupleTarget]


# ---- statements --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Input(Node):
    name: str
    shape: "Expr | None"


@dataclass(frozen=True, slots=True)
class Output(Node):
    values: tuple


@dataclass(frozen=True, slots=True)
class Assign(Node):
    target: Target
    value: "Expr"


@dataclass(frozen=True, slots=True)
class If(Node):
    branches: tuple       # of (cond, body) pairs
    orelse: tuple | None


@dataclass(frozen=True, slots=True)
class For(Node):
    target: Target
    iter: "Expr"
    body: tuple


@dataclass(frozen=True, slots=True)
class Assert(Node):
    cond: "Expr"
    message: "Expr | None"


@dataclass(frozen=True, slots=True)
class Return(Node):
    """``return expr``: ends a function with a value (functions only)."""
    value: "Expr"


@dataclass(frozen=True, slots=True)
class SetItem(Node):
    """``xs[i] = v`` (``xs[i][j] = v``): rebinds ``xs`` to a copy with the item replaced."""
    name: str
    name_span: Span
    indices: tuple        # of Expr, outermost first
    value: "Expr"


# ---- top level ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Param(Node):
    name: str
    type: str | None
    default: "Expr | None"
    type_span: Span | None = None    # where the type annotation is written (for "unknown type" errors)


@dataclass(frozen=True, slots=True)
class Definition(Node):
    """A ``block`` or ``model``; models declare input shapes and can be compiled."""
    kind: str             # "block" | "model"
    name: str
    name_span: Span
    params: tuple
    body: tuple


@dataclass(frozen=True, slots=True)
class Function(Node):
    """``def name(params) { ... return expr }``: a pure function of compile-time values."""
    name: str
    name_span: Span
    params: tuple
    body: tuple
    kind: str = "def"


@dataclass(frozen=True, slots=True)
class ModelAlias(Node):
    """``model resnet50 = resnet(bottleneck, [3, 4, 6, 3])``: a model with some arguments fixed."""
    name: str
    name_span: Span
    target: tuple         # dotted name of the model it instantiates
    target_span: Span
    args: Args
    kind: str = "model"


@dataclass(frozen=True, slots=True)
class Import(Node):
    path: str             # "file.arch" relative to the importer, or "std.name"
    is_std: bool
    alias: str | None


@dataclass(frozen=True, slots=True)
class Const(Node):
    name: str
    value: "Expr"


@dataclass(frozen=True, slots=True)
class Module(Node):
    items: tuple
