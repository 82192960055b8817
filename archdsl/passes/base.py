"""The pass machinery: :class:`Pass`, its :class:`PassResult` and :class:`PassReport`, and the registry.

A pass is a dataclass whose fields are its options, with a registered ``name``
(``fold-bn``) and a one-line docstring. It implements ``rewrite(graph, report, ctx)``,
which edits ``graph`` through the :class:`~archdsl.ir.graph.Graph` methods only and
returns whether it changed anything; ``ctx`` is the :class:`~archdsl.passes.context.PassContext`
(data, device, seed, progress). :meth:`Pass.run` gives ``rewrite`` a copy (parameter
arrays are shared copy-on-write, so a pass that changes nothing copies none), so the
caller's graph is never touched, and measures both graphs itself: nodes removed and
added are the difference of the node sets, parameters and MACs come from
:func:`archdsl.ir.stats.totals`, so a pass cannot misreport them. Per-layer details
go into ``report.layer(...)`` (structured, printed and in ``--json``).

A lossy pass says how far it expects to move the outputs: ``expected_error()``
(the default 0 means exact up to float rounding) in the metric ``verify_metric``
(``"relative"``: max|after - before| / max|before|, or ``"cosine"``: 1 - cosine
similarity). ``--verify`` holds each pass to it, comparing with the pass's own input.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import re
import typing
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..diagnostics import ArchError, Span
from ..ir.graph import Graph
from ..ir.stats import totals
from .context import PassContext

PASSES: dict[str, type["Pass"]] = {}

OPTION_TYPES = (bool, int, float, str, int | None, float | None, str | None)
METRICS = ("relative", "cosine")


def register(cls: type["Pass"]) -> type["Pass"]:
    """Class decorator: make ``cls`` available by its ``name`` in pipelines and ``archc passes``."""
    if not cls.name or not isinstance(cls.name, str):
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a dataclass (its fields are the pass options)")
    if not (cls.__doc__ or "").strip() or cls.__doc__.startswith(cls.__name__ + "("):
        raise TypeError(f"{cls.__name__} needs a docstring (its first line is the pass's summary)")
    for f in dataclasses.fields(cls):
        if option_type(cls, f.name) not in OPTION_TYPES:
            raise TypeError(f"option {f.name} of {cls.__name__} must be one of bool, int, float, str (or None "
                            "with int, float or str)")
    if cls.verify_metric not in METRICS:
        raise TypeError(f"{cls.__name__}.verify_metric must be one of {', '.join(METRICS)}")
    if cls.name in PASSES and PASSES[cls.name] is not cls:
        raise ValueError(f"a pass named {cls.name!r} is already registered ({PASSES[cls.name].__name__})")
    PASSES[cls.name] = cls
    return cls


def registry() -> dict[str, type["Pass"]]:
    """Every registered pass by name, sorted (importing the package registers the built-in ones)."""
    from .. import passes  # noqa: F401  (registers the built-in passes)
    return dict(sorted(PASSES.items()))


def option_type(cls, name: str) -> type:
    return typing.get_type_hints(cls)[name]


class OptionError(ArchError, ValueError):
    """An option value, or a combination of options, that a pass refuses (raised by its ``__post_init__``).
    ``option`` names the option whose value the pipeline's diagnostic points at; None points at the pass.
    An :class:`ArchError` (and, as before, a ``ValueError``)."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option

    def __str__(self) -> str:
        return self.message


def listing(names, last: str = "and") -> str:
    """``a, b and c`` (or ``a, b or c``; ``nothing`` for none) for the names in a message."""
    names = list(names)
    if not names:
        return "nothing"
    return f"{', '.join(names[:-1])} {last} {names[-1]}" if len(names) > 1 else names[0]


def scope_patterns(text: str | None) -> list[str]:
    """The patterns of a ``keep``-style option: comma-separated scopes or shell wildcards over them."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def in_scopes(scope: str, patterns) -> bool:
    """Whether ``scope`` is one of ``patterns``, inside one (``layer1`` holds ``layer1.0.conv1``) or
    matches one as a shell wildcard (``*.conv1``)."""
    return any(fnmatch.fnmatchcase(scope, p) or scope.startswith(p + ".") or scope == p for p in patterns)


def note_unmatched(graph: Graph, patterns, option: str, report: "PassReport") -> None:
    """A note for every pattern of ``option`` that names no node of ``graph`` (a typo keeps nothing)."""
    scopes = [n.scope for n in graph.nodes() if n.scope]
    example = next((n.scope for n in graph.nodes() if n.op in ("conv", "linear") and n.scope), "conv1")
    for p in patterns:
        if not any(in_scopes(s, [p]) for s in scopes):
            report.note(f"The {option} pattern '{p}' matches no layer, so it keeps nothing; patterns are scopes "
                        f"such as '{example}', the scopes inside one, or shell wildcards over them ('*.conv1').")


def node_label(graph: Graph, nid: int) -> str:
    """How reports name a node: its scope, a model input's name, or ``%id``."""
    d = graph.data(nid)
    return d["scope"] or (d["attrs"].get("name") if d["op"] == "input" else None) or f"%{nid}"


@dataclass(frozen=True)
class Refusal:
    """A rewrite a pass considered and declined, with the reason (a full sentence)."""
    node: str
    op: str
    reason: str
    span: Span | None = None

    def __str__(self) -> str:
        return f"@{self.node} ({self.op}): {self.reason}"


@dataclass
class PassReport:
    """What one pass did: node and cost changes, one line per rewrite, and what it refused and why."""
    pass_name: str
    modified: bool = False
    nodes_before: int = 0
    nodes_after: int = 0
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    removed: list[str] = field(default_factory=list)     # labels of removed nodes (input graph order)
    added: list[str] = field(default_factory=list)       # labels of new nodes (output graph order)
    rewritten: list[str] = field(default_factory=list)   # labels of kept nodes whose data or weights changed
    rewired: list[str] = field(default_factory=list)     # labels of kept nodes whose operands alone changed
    actions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)       # what the user should know: a target missed, a fallback
    refused: list[Refusal] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)     # structured per-layer details, one dict per layer
    _touched: set = field(default_factory=set, repr=False, compare=False)

    @property
    def nodes_removed(self) -> int:
        return len(self.removed)

    @property
    def nodes_added(self) -> int:
        return len(self.added)

    def did(self, action: str) -> None:
        self.actions.append(action)

    def note(self, text: str) -> None:
        """Something the user should read even in the short summary: a target out of reach, an option
        that could not hold, a fallback taken (a full sentence)."""
        self.notes.append(text)

    def touched(self, nid: int) -> None:
        """Record that a kept node was changed in a way the graph diff cannot see (its weights' values)."""
        self._touched.add(nid)

    def layer(self, name: str, **details) -> None:
        """Record what the pass did to one layer (``name``: its scope): plain JSON values only."""
        self.layers.append({"layer": name, **details})

    def refuse(self, graph: Graph, nid: int, reason: str) -> None:
        d = graph.data(nid)
        self.refused.append(Refusal(node_label(graph, nid), d["op"], reason, d["span"]))

    def summary(self) -> str:
        """A short human-readable account, one line plus one per refusal."""
        state = "modified" if self.modified else "unchanged"
        head = (f"{self.pass_name}: {state}; nodes {self.nodes_before} -> {self.nodes_after} "
                f"({self.nodes_removed} removed, {self.nodes_added} added, {len(self.rewritten)} rewritten); "
                f"params {self.params_before:,} -> {self.params_after:,}; "
                f"MACs {self.macs_before:,} -> {self.macs_after:,}")
        lines = [head]
        for row in self.layers:
            rest = ", ".join(f"{k}={_text(v)}" for k, v in row.items() if k != "layer")
            lines.append(f"  @{row['layer']}: {rest}")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes] + [f"  refused {r}" for r in self.refused])

    def to_json(self) -> dict:
        return {"pass": self.pass_name, "modified": self.modified,
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                "params_before": self.params_before, "params_after": self.params_after,
                "macs_before": self.macs_before, "macs_after": self.macs_after,
                "removed": list(self.removed), "added": list(self.added), "rewritten": list(self.rewritten),
                "rewired": list(self.rewired), "actions": list(self.actions), "notes": list(self.notes),
                "layers": list(self.layers),
                "refused": [{"node": r.node, "op": r.op, "reason": r.reason,
                             "location": str(r.span) if r.span else None} for r in self.refused]}


def _text(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and len(v) > 8:
        return "[" + ", ".join(_text(x) for x in v[:8]) + f", ... {len(v)} in all]"
    return str(v)


@dataclass
class PassResult:
    graph: Graph | None        # None for the intermediate results a pipeline did not keep
    modified: bool
    report: PassReport


def _signature(d: dict) -> tuple:
    return (d["op"], repr(sorted(d["attrs"].items())), tuple(d["shape"]), tuple(sorted(d["params"].items())))


class Pass:
    """Base class of all passes; subclasses are ``@register``-ed dataclasses (fields are options)."""

    name: ClassVar[str] = ""
    verify_metric: ClassVar[str] = "relative"

    def __post_init__(self):
        """Refuse an option of the wrong type (a pass built from Python: the pipeline converts its text
        first). A pass whose options need more checks extends this, calling it first."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            typ = hints[f.name]
            optional = type(None) in typing.get_args(typ)
            base = next((a for a in typing.get_args(typ) if a is not type(None)), typ)
            if value is None and optional:
                continue
            numpy_number = isinstance(value, np.integer) or isinstance(value, np.floating) and base is float
            if numpy_number and base in (int, float):
                value = base(value)         # NumPy numbers are numbers: an np.int64 count is an int
                setattr(self, f.name, value)
            ok = (isinstance(value, base) and not (base is int and isinstance(value, bool))
                  or base is float and isinstance(value, int) and not isinstance(value, bool))
            if not ok:
                raise OptionError(f"{f.name} must be {TYPE_WORDS[base]}{' or None' if optional else ''}, but it is "
                                  f"{value!r} ({type(value).__name__}).", f.name)
            if base is float and value != value:
                raise OptionError(f"{f.name} must be a number, but it is nan.", f.name)

    def rewrite(self, graph: Graph, report: PassReport, ctx: PassContext) -> bool:
        """Edit ``graph`` (a private copy) in place; return whether anything changed."""
        raise NotImplementedError

    def expected_error(self) -> float:
        """How far this pass may move the outputs in ``verify_metric`` (0: exact up to rounding)."""
        return 0.0

    def run(self, graph: Graph, ctx: PassContext | None = None) -> PassResult:
        """Run on a copy of ``graph``; the report's counts are measured, not taken from the pass."""
        g = graph.copy()
        report = PassReport(self.name)
        before = totals(graph)
        modified = bool(self.rewrite(g, report, ctx if ctx is not None else PassContext()))
        after = totals(g)
        report.nodes_before, report.nodes_after = before["nodes"], after["nodes"]
        report.params_before, report.params_after = before["params"], after["params"]
        report.macs_before, report.macs_after = before["macs"], after["macs"]
        report.removed = [node_label(graph, i) for i in graph.node_ids() if i not in g]
        report.added = [node_label(g, i) for i in g.node_ids() if i not in graph]
        kept = [i for i in g.node_ids() if i in graph]
        rewritten = {i for i in kept if i in report._touched or _signature(g.data(i)) != _signature(graph.data(i))}
        report.rewritten = [node_label(g, i) for i in kept if i in rewritten]
        report.rewired = [node_label(g, i) for i in kept
                          if i not in rewritten and g.data(i)["inputs"] != graph.data(i)["inputs"]]
        changed = bool(report.removed or report.added or report.rewritten or report.rewired
                       or g.outputs != graph.outputs)
        report.modified = modified
        if changed != modified:
            raise RuntimeError(f"pass {self.name!r} returned modified={modified} but the graph "
                               f"{'changed' if changed else 'did not change'}")
        if any(graph.data(i)["span"] is not None for i in graph.node_ids()):
            for i in g.node_ids():
                if i not in graph and g.data(i)["span"] is None:
                    raise RuntimeError(f"pass {self.name!r} created node {node_label(g, i)} without a source "
                                       "location; use replace_node so it keeps the span of the node it replaces")
        return PassResult(g, modified, report)

    # ---- description
    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]

    @classmethod
    def options(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    def __str__(self) -> str:
        """The pipeline text of this pass, with the options that differ from their defaults."""
        opts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is dataclasses.MISSING or value != f.default:
                opts.append(f"{f.name}={format_value(value)}")
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}   # in messages


def format_value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z0-9_.+-]+", value) else '"' + value + '"'
    return repr(value)


def replace_node(graph: Graph, old: int, op: str | None = None, inputs=None, **fields) -> int:
    """Add a node standing in for ``old``, move every use of ``old`` to it and remove ``old``.

    Unspecified fields (op, inputs, attrs, type fields, span, scope, params, meta) are
    taken from ``old``, so the new node keeps the source location of the node it
    replaces. Returns the new node's id.
    """
    names = ("attrs", "shape", "dtype", "quant", "span", "scope", "params", "meta")
    unknown = set(fields) - set(names)
    if unknown:
        raise TypeError(f"replace_node got unknown fields {sorted(unknown)}")
    d = graph.data(old)
    data = {k: fields.get(k, d[k]) for k in names}
    new = graph.add_node(op or d["op"], d["inputs"] if inputs is None else inputs, **data)
    graph.replace_all_uses(old, new)
    graph.remove_node(old)
    return new
