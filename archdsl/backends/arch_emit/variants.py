"""Instances of one block definition that differ in structure, written as one definition.

A definition whose body picks ``residual {...}`` or a plain chain, a ``slice`` or a
sub-block, or has layers only some instances have, gives instances with several
bodies (*variants*). The writer keeps them one definition: its body is

    input x
    if <condition of variant 0> { <body 0> } elif ... else { <body k-1> }

and every call passes the argument the conditions read. That argument is one of
the definition's own bool, int or float arguments whose values separate the variants
(each value occurs with one variant only, and there are few values, at most one more
than variants: ``if stride == 2``, ``if use_se``),
else a new ``variant: int = 0`` numbering the variants in order of appearance.

Pair attributes (kernel sizes, paddings) are written ``k`` where square and
``[h, w]`` otherwise; instances that mix the two share one parameter holding
either (:func:`unify_pairs`), as Inception's ``basic_conv(c, [1, 7], padding=[0, 3])``.
"""
from __future__ import annotations

from .structure import Hole, get as _get, graft as _graft, walk_holes
from .tokens import value_text

# a condition lists at most this many values of its argument (`stride in [1, 3]`); more read worse than
# a `variant` argument
MAX_VALUES = 2


def pair_value(v):
    """A pair attribute's value as a call passes it: ``k`` for (k, k), ``(h, w)`` otherwise."""
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(type(x) is int for x in v):
        return v[0] if v[0] == v[1] else tuple(v)
    return v


def _pair_slots(t, path=()):
    """The paths of the pair attributes in ``t``: square (a Hole with ``pair``) or ``("@pair", h, w)``."""
    if isinstance(t, Hole):
        if t.pair:
            yield path
    elif isinstance(t, tuple) and t:
        if isinstance(t[0], str) and t[0] == "@pair":
            yield path
            return
        for i, x in enumerate(t):
            yield from _pair_slots(x, path + (i,))


def _at(t, path):
    try:
        return _get(t, path)
    except (TypeError, IndexError):      # a part (a shortcut) this tree lacks
        return None


def unify_pairs(trees: list) -> list:
    """``trees`` (of one body) with every pair attribute that is square in some and not in others made one
    Hole of kind ``pair`` whose values are ``k`` or ``(h, w)``."""
    slots: dict = {}
    for t in trees:
        for path in _pair_slots(t):
            slots.setdefault(path, None)
    for path in slots:
        forms = [_at(t, path) for t in trees]
        square = {isinstance(f, Hole) for f in forms if f is not None}
        if len(square) != 2:
            continue
        hint = next(f.hint for f in forms if isinstance(f, Hole))
        out = []
        for t, f in zip(trees, forms):
            if f is not None:
                v = (f.value, f.value) if isinstance(f, Hole) else (f[1].value, f[2].value)
                t = _graft(t, path, Hole(pair_value(v), "pair", hint))
            out.append(t)
        trees = out
    return trees


def _inputs(tree) -> tuple:
    k = 0
    while k < len(tree) and tree[k][0] == "@input":
        k += 1
    return tree[:k]


def shared_inputs(reps: list):
    """The input statements all variants start with, or None where they differ (no one definition then)."""
    heads = {_inputs(t) for t in reps}
    return next(iter(heads)) if len(heads) == 1 else None


def lift(path: tuple, n_in: int, j: int) -> tuple:
    """The path in the joined body of ``path`` in the body of variant ``j`` (``n_in`` inputs first)."""
    return (n_in, 2, j, path[0] - n_in) + path[1:]


def joined(head: tuple, reps: list, conds: tuple) -> tuple:
    """The body that chooses between the variants ``reps`` (each a full body starting with ``head``)."""
    n_in = len(head)
    return head + (("@if", conds, tuple(t[n_in:] for t in reps)),)


def selector(parts: list):
    """The argument that tells the variants apart: ``(name, kind, else index, [values of each part])``, or
    None. ``parts`` holds the regions of each variant. Bools first, then the int (or float) with the fewest
    values;
    the ``else`` variant is the one with the most values (the last on a tie)."""
    regions = [r for part in parts for r in part]
    args = [r.info.args if r.info is not None else {} for r in regions]
    if not args or not args[0]:
        return None
    best = None
    for name in args[0]:
        if not all(name in a for a in args):
            continue
        vals = [[r.info.args[name] for r in part] for part in parts]
        flat = [v for part in vals for v in part]
        if all(isinstance(v, bool) for v in flat):
            kind = "bool"
        elif all(type(v) is int for v in flat):
            kind = "int"
        elif all(type(v) is float for v in flat):
            kind = "float"           # exact values, as the calls pass them: `expand_ratio == 1.0`
        else:
            continue
        sets = [set(part) for part in vals]
        if sum(len(s) for s in sets) != len(set(flat)):
            continue                     # a value occurs with two variants: it does not separate them
        sizes = [len(s) for s in sets]
        other = max(range(len(sets)), key=lambda j: (sizes[j], j)) if kind != "bool" else \
            next(j for j, s in enumerate(sets) if s == {False}) if {False} in sets else len(sets) - 1
        if any(n > MAX_VALUES for j, n in enumerate(sizes) if j != other) or len(set(flat)) > len(parts) + 1:
            continue                     # many values separating few variants: a coincidence, likely
        score = (kind != "bool", len(set(flat)), kind == "float")
        if best is None or score < best[0]:
            best = (score, (name, kind, other, [sorted(s) for s in sets]))
    return None if best is None else best[1]


def condition(name: str, kind: str, values: list) -> str:
    """The condition that is true for ``values`` of the argument ``name``."""
    if kind == "bool":
        return name if values == [True] else f"not {name}"
    if len(values) == 1:
        return f"{name} == {value_text(values[0])}"
    return f"{name} in {value_text(list(values))}"


_SCOPED = ("@seq", "@res", "@par", "@dense", "@stn")


def roles(tree) -> dict:
    """What every hole of ``tree`` is, as the same number of another variant of the body is: the path of
    scopes to its layer, the layer (its label, or the how-manieth unlabelled layer of its op or block in
    its scope), and the argument. A layer only some variants have shifts the positions, not these counts."""
    out: dict = {}

    def walk(t, path, scope, counters):
        if isinstance(t, Hole):
            out[path] = scope + ("?",)
            return
        if not (isinstance(t, tuple) and t):
            return
        tag = t[0] if isinstance(t[0], str) else None
        if tag in ("@op", "@callg"):
            key = (tag, t[2])
            ident = ("=", t[1]) if t[1] else ("#", key, counters.get(key, 0))
            if not t[1]:
                counters[key] = counters.get(key, 0) + 1
            for p, _ in walk_holes(t, path):
                out[p] = scope + (ident,) + p[len(path):]
            return
        if tag == "@if":
            for j, body in enumerate(t[2]):
                walk(body, path + (2, j), scope, {})
            return
        if tag in _SCOPED and (t[1] or tag == "@seq"):       # a labelled construct or a sequence: a scope
            ident = ("=", t[1]) if t[1] else ("#", tag, counters.get(tag, 0))
            if not t[1]:
                counters[tag] = counters.get(tag, 0) + 1
            scope, counters = scope + (ident,), {}
        for i, x in enumerate(t):
            walk(x, path + (i,), scope, counters)
    walk(tree, (), (), {})
    return out
