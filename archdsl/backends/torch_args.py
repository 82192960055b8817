"""Which numbers of a spec the generated classes may take as constructor arguments.

The source generator reads expressions off the numbers the IR holds
(:mod:`.torch_exprs`), so a layer's ``0.1`` may be the model's
``stochastic_depth_prob`` or merely equal to it, and a parameter may also
decide numbers the generator writes as constants (ConvNeXt's other drop
rates, ``drop_rate * k / (K - 1)``), the number of layers or a flattened width.
An argument is offered only where the spec shows that it is sound:

* a model parameter ``a`` is an argument of the model's class only if the spec,
  elaborated again with two other values ``a'`` (all offered parameters moved at
  once), gives the same classes, letter for letter but for the constructor's
  defaults. Then ``Model(a=a')`` runs the very code that the source generated
  for ``load(spec, a=a')`` runs with its defaults, which builds that graph;
* a block parameter that has the same value in every instance is an argument of
  its class only if one of those probes moves it (it then follows an offered
  model parameter). One that varies across the instances is an argument where
  one expression fits every instance, as before.

Anything else is written as the number the spec was compiled with. Where the
spec cannot be elaborated again (spec text rather than a file, a graph changed
by passes) no model parameter is offered. Probe values: ``v + 1``, ``v - 1``,
``v + 2``, ... for ints; ``0.75 v + 1/16``, ``v / 2 + 5/32``, ... for floats (the
first ones stay in [0, 1) for a probability); a probe that does not elaborate
is skipped, and two must.
"""
from __future__ import annotations

from pathlib import Path

from ..diagnostics import ArchError
from ..ir.graph import Graph
from .torch_classes import Analysis
from .torch_exprs import is_int

INT_PROBES = (1, -1, 2, -2, 3, 5)
FLOAT_PROBES = ((0.75, 0.0625), (0.5, 0.15625), (0.875, 0.03125), (0.625, 0.09375), (1.25, 0.03125), (0.25, 0.0))


def probe_value(v, k: int):
    """The k-th probe value for a number ``v`` of the spec."""
    if is_int(v):
        return v + INT_PROBES[k]
    a, b = FLOAT_PROBES[k]
    return v * a + b


class Prober:
    """Elaborates the graph's spec again with some model parameters changed and compares the sources."""

    def __init__(self, graph: Graph, render):
        self.graph, self.render = graph, render        # render(analysis) -> the classes' text, defaults hidden
        info = graph.scopes.get("")
        self.args = dict(info.args) if info is not None else {}
        file, model = graph.meta.get("file"), graph.meta.get("model")
        self.source = Path(file) if isinstance(file, str) and file.endswith(".arch") and Path(file).is_file() \
            else None
        self.model = model if isinstance(model, str) else None
        self.graphs: dict = {}

    @property
    def usable(self) -> bool:
        return self.source is not None and self.model is not None

    def reload(self, changes: dict) -> Graph | None:
        """The spec's model elaborated with ``changes`` to its arguments (None where that fails)."""
        key = tuple(sorted((k, type(v).__name__, v) for k, v in changes.items()))
        if key not in self.graphs:
            from ..api import _gc_paused, _load
            from ..frontend.layers import DEFAULT_MAX_NODES
            args = {**self.args, **changes}
            try:
                with _gc_paused():
                    self.graphs[key] = _load(self.source, self.model, max(DEFAULT_MAX_NODES, 4 * len(self.graph)),
                                             0, None, args)
            except ArchError:
                self.graphs[key] = None
        return self.graphs[key]

    def check(self, names, denied, probes=None) -> tuple:
        """``(sound, suspect, passed)``: whether two of the ``probes`` (changes to the model's
        arguments; by default the k-th probe value of each of ``names``) that elaborate leave the source of
        the analysis with the model arguments ``names`` (and no static argument in ``denied``)
        unchanged; the static block arguments a probe moved while their class's text changed; the
        probes that passed. ``sound`` is None where fewer than two probes elaborate, none differing."""
        if probes is None:
            probes = [{n: probe_value(self.args[n], k) for n in names} for k in range(len(INT_PROBES))]
        base = Analysis(self.graph, names, _allow(denied))
        texts, fixed = self.render(base), base.static()
        suspect, passed = set(), []
        for changes in probes:
            g = self.reload(changes)
            if g is None:
                continue
            other = Analysis(g, names, _allow(denied))
            there, theirs = other.static(), self.render(other)
            suspect |= {key for key, values in fixed.items()
                        if there.get(key) != values and theirs.get(key[0]) != texts[key[0]]}
            if theirs != texts:
                return False, suspect, passed
            passed.append(changes)
            if len(passed) == 2:
                return True, suspect, passed
        return None, suspect, passed


def _allow(denied):
    return None if denied is None else (lambda cls, a: denied is ALL or (cls, a) not in denied)


ALL = object()      # every static block argument denied


def sound_analysis(graph: Graph, render) -> Analysis:
    """The graph's classes, taking only the arguments the module docstring calls sound.

    ``render(analysis)`` gives ``{class name: text}`` with the model's defaults hidden. The model's
    parameters are probed all at once; where that fails, one at a time, and then all that pass
    at once with values each took alone (a joint probe that does not elaborate is skipped)."""
    first = Analysis(graph)
    names = first.offered()
    if not names:
        return first
    prober = Prober(graph, render)
    if not prober.usable or any(n not in prober.args for n in names):
        return Analysis(graph, (), _allow(ALL))
    sound, denied, _ = prober.check(names, None)
    if sound:
        return _final(prober, names, denied, None)
    kept, denied, values = [], set(), {}
    for n in names:
        ok, suspect, passed = prober.check([n], None)
        denied |= suspect
        if ok:
            kept.append(n)
            values[n] = [p[n] for p in passed]
    return _final(prober, kept, denied, values)


def _final(prober: Prober, names: list, denied: set, values: dict | None) -> Analysis:
    """The analysis with ``names`` and without ``denied``, if a last joint probe agrees."""
    graph = prober.graph
    final = Analysis(graph, names, _allow(denied))
    names = final.offered()
    if not names:
        return final
    probes = None if values is None else [{n: values[n][i] for n in names} for i in range(2)]
    if prober.check(names, denied, probes)[0] is not False:
        return final
    return Analysis(graph, (), _allow(denied))
