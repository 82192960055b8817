"""Grouping block instances: one block definition per group of instances that share a body.

The instances of one definition are grouped by their body with every number
taken out (:func:`_key`); instances that differ only by the presence of a
residual shortcut share a group with a flag. In each group the numbers that
differ between instances become parameters, named after the definition's own
arguments where they agree with them (or ``planes * 4``), and each call site
passes its instance's values.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...diagnostics import ArchError
from .structure import MISSING, Hole, Lit
from .tokens import NAME, identifier, language_names, unique, value_text
from .writer import Writer

# the factors tried for `a * k` and `a // k` (a block's widths and paddings are such multiples; wider
# searches find coincidences such as `padding=c // 9`)
_TIMES = (2, 3, 4, 6, 8)
_DIVIDED = (2, 4)


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


def _kind(v) -> str:
    return "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "float"


def _walk_holes(t, path=()):
    if isinstance(t, Hole):
        yield path, t
    elif isinstance(t, tuple):
        for i, x in enumerate(t):
            yield from _walk_holes(x, path + (i,))


def _key(t, abstract: bool = False):
    if isinstance(t, Hole):
        return ("?", t.kind, t.pair)
    if isinstance(t, Lit):
        return ("=", t.key)
    if isinstance(t, tuple):
        if abstract and t and t[0] == "@res":
            return ("@res", t[1], _key(t[2], True), "?shortcut")
        return tuple(_key(x, abstract) for x in t)
    return t


def _res_paths(t, path=()):
    """(path, shortcut or None) of every residual in ``t``."""
    if isinstance(t, tuple) and t:
        if t[0] == "@res":
            yield path, t[3]
        for i, x in enumerate(t):
            yield from _res_paths(x, path + (i,))


def _get(t, path):
    for i in path:
        t = t[i]
    return t


def _graft(t, path, value):
    if not path:
        return value
    i = path[0]
    return t[:i] + (_graft(t[i], path[1:], value),) + t[i + 1:]


@dataclass
class Param:
    name: str
    kind: str
    vec: list
    flag: bool = False

    @property
    def optional(self) -> bool:
        return self.flag or any(v is MISSING for v in self.vec)

    @property
    def default(self) -> str:
        """The text of the value an optional parameter has where a call leaves it out."""
        return "false" if self.flag else "none"


class Group:
    def __init__(self, gid: int, defname: str, instances: list, trees: list):
        self.id = gid
        self.defname = defname
        self.name = defname
        self.instances = instances     # regions
        self.trees = trees             # finalised trees, one per instance
        self.flags: dict = {}          # residual path -> flag parameter name (set later)
        self.params: list[Param] = []
        self.resolved: dict = {}       # hole path -> text
        self.rep = trees[0]

    def value(self, region, p: Param):
        return p.vec[self.instances.index(region)]

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)


class Grouper:
    def __init__(self, w: Writer):
        self.w = w
        self.group_of: dict = {}      # region -> Group
        self.groups: list[Group] = []

    def run(self) -> None:
        w = self.w
        by_def: dict[str, list] = {}
        for r in w.blocks:
            by_def.setdefault(r.name, []).append(r)
        for regions in by_def.values():
            regions.sort(key=lambda r: r.first)
        order = self._definition_order(by_def)
        for name in order:
            self._group(name, by_def[name])
        self.groups.sort(key=lambda gr: gr.id)
        self._name_groups()

    def _calls(self, t):
        if isinstance(t, tuple) and t:
            if t[0] == "@call":
                yield t[2]
            for x in t:
                yield from self._calls(x)

    def _definition_order(self, by_def) -> list[str]:
        deps = {name: {c.name for r in regions for c in self._calls(r.tree)} for name, regions in by_def.items()}
        order, state = [], {}

        def visit(name, stack):
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise ArchError(f"The block definitions {' and '.join(sorted(set(stack)))} contain instances of "
                                "each other; the spec writer cannot group them.")
            state[name] = 1
            for dep in sorted(deps[name]):
                if dep != name:
                    visit(dep, stack + [dep])
            state[name] = 2
            order.append(name)
        for name in sorted(by_def, key=lambda n: by_def[n][0].first):
            visit(name, [name])
        return order

    def finalise(self, t):
        """``t`` with every call of an instance replaced by a call of its group with the instance's values."""
        if isinstance(t, tuple) and t:
            if t[0] == "@call":
                _, label, region, hint = t
                gr = self.group_of[region]
                args = tuple((p.name, Hole(gr.value(region, p), p.kind, f"{hint}_{p.name}")) for p in gr.params)
                return ("@callg", label, gr.id, args)
            return tuple(self.finalise(x) for x in t)
        return t

    def _group(self, defname: str, regions: list) -> None:
        trees = [self.finalise(r.tree) for r in regions]
        buckets: dict = {}
        for r, t in zip(regions, trees):
            buckets.setdefault(_key(t, abstract=True), []).append((r, t))
        for members in buckets.values():
            # a skeleton shared by instances that differ in residual shortcuts: merge them with flags
            shortcuts: dict = {}
            for _, t in members:
                for path, short in _res_paths(t):
                    shortcuts.setdefault(path, []).append(None if short is None else _key(short))
            mergeable = all(len({k for k in keys if k is not None}) <= 1 for keys in shortcuts.values())
            if mergeable:
                self._make_group(defname, members, [p for p, keys in shortcuts.items()
                                                     if None in keys and any(k is not None for k in keys)])
            else:
                sub: dict = {}
                for r, t in members:
                    sub.setdefault(_key(t), []).append((r, t))
                for part in sub.values():
                    self._make_group(defname, part, [])

    def _make_group(self, defname, members, flag_paths) -> None:
        regions = [r for r, _ in members]
        trees = [t for _, t in members]
        gr = Group(len(self.groups), defname, regions, trees)
        rep = trees[0]
        for path in sorted(flag_paths, key=len):
            if _get(rep, path)[3] is None:
                donor = next(t for t in trees if _get(t, path)[3] is not None)
                rep = _graft(rep, path, _get(rep, path)[:3] + (_get(donor, path)[3],))
        gr.rep = rep
        self._params(gr, flag_paths)
        self.groups.append(gr)
        for r in regions:
            self.group_of[r] = gr

    def _params(self, gr: Group, flag_paths) -> None:
        holes = [dict(_walk_holes(t)) for t in gr.trees]
        order = [p for p, _ in _walk_holes(gr.rep)]
        hints = dict(_walk_holes(gr.rep))
        avoid = set(self.w.reserved) | set(body_vars(gr.rep))
        args = [r.info.args if r.info is not None else {} for r in gr.instances]
        arg_names = [a for a in args[0] if all(a in x for x in args)] if args else []
        arg_vecs = {a: [x[a] for x in args] for a in arg_names
                    if all(isinstance(x[a], (int, float)) for x in args)}
        taken: set = set()
        params: list[Param] = []

        def fits(vec, pvec):
            return all(v is MISSING or q is MISSING or _same(v, q) for v, q in zip(vec, pvec))

        def merge(p, vec):
            p.vec = [q if q is not MISSING else v for v, q in zip(vec, p.vec)]

        def new_param(name, kind, vec, flag=False):
            name = unique(identifier(name, "p"), taken, avoid)
            taken.add(name)
            p = Param(name, kind, list(vec), flag)
            params.append(p)
            return p

        for path in flag_paths:
            vec = [_get(t, path)[3] is not None for t in gr.trees]
            short = _get(gr.rep, path)[3]
            first = short[0] if short else None
            want = first[1] if first and len(short) == 1 and len(first) > 1 and isinstance(first[1], str) \
                and NAME.match(first[1]) else "shortcut"
            hit = next((a for a, v in arg_vecs.items() if all(_same(x, y) for x, y in zip(vec, v))), None)
            p = new_param(hit or want, "bool", vec, flag=True)
            gr.flags[path] = p.name
        for path in order:
            vec = [h[path].value if path in h else MISSING for h in holes]
            present = [v for v in vec if v is not MISSING]
            kind = hints[path].kind
            if all(_same(v, present[0]) for v in present):
                # a number of an optional part reads better as the parameter it agrees with
                hit = next((p for p in params if MISSING in vec and not p.flag and p.kind == kind
                            and MISSING not in p.vec and fits(vec, p.vec)), None)
                gr.resolved[path] = hit.name if hit is not None else value_text(present[0])
                continue
            text = None
            for p in params:
                if not p.flag and p.kind == kind and fits(vec, p.vec):
                    merge(p, vec)
                    text = p.name
                    break
            if text is None:
                hit = next((a for a, v in arg_vecs.items() if _kind(v[0]) == kind and a not in taken
                            and all(_kind(x) == kind for x in v) and fits(vec, v)), None)
                if hit is not None:
                    p = new_param(hit, kind, arg_vecs[hit])
                    merge(p, vec)
                    text = p.name
            if text is None and kind == "int":
                text = self._expression(vec, params)
            if text is None:
                text = new_param(hints[path].hint, kind, vec).name
            gr.resolved[path] = text
        required = [p for p in params if not p.optional]
        gr.params = required + [p for p in params if p.optional]

    @staticmethod
    def _expression(vec, params):
        """``a * k`` or ``a // k`` over a parameter already in use that gives ``vec`` (``planes * 4``).

        Only parameters that some number equals directly are used, so a pruned block whose
        widths are all half its original ``planes`` takes the widths, not ``planes``."""
        for p in params:
            if p.flag or p.kind != "int" or any(v is not MISSING and q is MISSING for v, q in zip(vec, p.vec)):
                continue
            pairs = [(v, q) for v, q in zip(vec, p.vec) if v is not MISSING]
            for op, ks in (("*", _TIMES), ("//", _DIVIDED)):
                for k in ks:
                    if all(v == (q * k if op == "*" else q // k) for v, q in pairs):
                        return f"{p.name} {op} {k}"
        return None

    def _name_groups(self) -> None:
        w = self.w
        avoid = (language_names() | w.all_vars | {w.model_name}
                 | {p.name for g in self.groups for p in g.params})
        taken: set = set()
        for gr in self.groups:
            want = gr.defname if NAME.match(gr.defname) else identifier(gr.defname, "b")
            name = want
            if name in taken or name in avoid:
                name = unique(want if want not in avoid else want + "_block", taken, avoid)
            taken.add(name)
            gr.name = name


def body_vars(t) -> set:
    out = set()
    if isinstance(t, tuple) and t:
        if t[0] == "@input":
            out.add(t[1])
        elif t[0] == "@assign":
            out |= set(t[1])
        for x in t:
            out |= body_vars(x)
    return out
