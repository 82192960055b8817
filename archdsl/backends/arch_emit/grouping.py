"""Grouping block instances: one block definition per definition of the graph's blocks.

The instances of one definition are grouped by their body with every number
taken out (:func:`_key`); instances that differ only by the presence of a
residual shortcut share a body with a flag. Bodies that differ otherwise are the
variants of one definition that chooses between them with ``if``
(:mod:`.variants`). The numbers that differ between instances become parameters,
named after the definition's own arguments where they agree with them (or
``planes * 4``), and each call site passes its instance's values.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...diagnostics import ArchError
from . import variants
from .structure import MISSING, Hole, Lit, get as _get, graft as _graft, walk_holes as _walk_holes
from .tokens import NAME, identifier, language_names, unique, value_text
from .variants import pair_value
from .writer import Writer

# the factors tried for `a * k` and `a // k` (a block's widths and paddings are such multiples; wider
# searches find coincidences such as `padding=c // 9`)
_TIMES = (2, 3, 4, 6, 8)
_DIVIDED = (2, 4)


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


def _kind(v) -> str:
    return "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "pair" if isinstance(v, tuple) \
        else "float"


def _arg_kind(vec) -> str | None:
    """The kind of parameter an argument with the values ``vec`` (pairs made :func:`pair_value`) can be."""
    kinds = {_kind(v) for v in vec if isinstance(v, (int, float, tuple))}
    if len(kinds) != 1 and kinds != {"int", "pair"} or len(vec) != sum(isinstance(v, (int, float, tuple))
                                                                        for v in vec):
        return None
    return "pair" if "pair" in kinds else kinds.pop()


def _key(t, abstract: bool = False):
    if isinstance(t, Hole):
        return ("?pair",) if t.pair or t.kind == "pair" else ("?", t.kind)
    if isinstance(t, Lit):
        return ("=", t.key)
    if isinstance(t, tuple):
        if t and isinstance(t[0], str) and t[0] == "@pair":       # (h, w): a pair as a square one is
            return ("?pair",)
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


@dataclass
class Param:
    name: str
    kind: str
    vec: list
    flag: bool = False
    role: tuple = ()             # the op (or block) and argument of the hole it was made for
    roles: set = field(default_factory=set)     # an argument's: the roles of the numbers it gives
    arg: bool = False            # named after an argument of the definition, with its values
    default_text: str | None = None

    @property
    def optional(self) -> bool:
        return self.flag or self.default_text is not None or any(v is MISSING for v in self.vec)

    @property
    def default(self) -> str:
        """The text of the value an optional parameter has where a call leaves it out."""
        return self.default_text if self.default_text is not None else "false" if self.flag else "none"

    @property
    def signature(self) -> str:
        """The parameter as the block's signature declares it (a pair parameter takes k or [h, w]: no type)."""
        annotation = {"pair": "", "variant": ": int"}.get(self.kind, f": {self.kind}")
        if not self.optional:
            return self.name + annotation
        if self.flag:
            return f"{self.name}: bool = false"
        if self.default_text is not None:
            return f"{self.name}{annotation} = {self.default_text}"
        return f"{self.name} = none"


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
        self.selector: str | None = None   # the parameter that chooses the variant, if the body has several

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
        parts = []          # (members, residual paths whose shortcut only some members have)
        for members in buckets.values():
            # a skeleton shared by instances that differ in residual shortcuts: merge them with flags
            shortcuts: dict = {}
            for _, t in members:
                for path, short in _res_paths(t):
                    shortcuts.setdefault(path, []).append(None if short is None else _key(short))
            mergeable = all(len({k for k in keys if k is not None}) <= 1 for keys in shortcuts.values())
            if mergeable:
                parts.append((members, [p for p, keys in shortcuts.items()
                                        if None in keys and any(k is not None for k in keys)]))
            else:
                sub: dict = {}
                for r, t in members:
                    sub.setdefault(_key(t), []).append((r, t))
                parts.extend((part, []) for part in sub.values())
        parts.sort(key=lambda part: part[0][0][0].first)
        if len(parts) > 1 and self._make_variants(defname, parts):
            return
        for members, flag_paths in parts:
            self._make_group(defname, members, flag_paths)

    @staticmethod
    def _part(members, flag_paths):
        """The regions, trees and representative body of instances of one body (pairs unified, every
        optional shortcut grafted on)."""
        regions = [r for r, _ in members]
        trees = variants.unify_pairs([t for _, t in members])
        rep = trees[0]
        for path in sorted(flag_paths, key=len):
            if _get(rep, path)[3] is None:
                donor = next(t for t in trees if _get(t, path)[3] is not None)
                rep = _graft(rep, path, _get(rep, path)[:3] + (_get(donor, path)[3],))
        return regions, trees, rep

    def _make_group(self, defname, members, flag_paths) -> None:
        regions, trees, rep = self._part(members, flag_paths)
        gr = Group(len(self.groups), defname, regions, trees)
        gr.rep = rep
        flags = [(path, [_get(t, path)[3] is not None for t in trees]) for path in flag_paths]
        self._params(gr, [dict(_walk_holes(t)) for t in trees], flags)
        self._register(gr)

    def _make_variants(self, defname, parts) -> bool:
        """One group for the variants ``parts`` (see :mod:`.variants`); False where they cannot share one."""
        built = [self._part(members, flag_paths) for members, flag_paths in parts]
        head = variants.shared_inputs([rep for _, _, rep in built])
        if head is None:
            return False
        sel = variants.selector([regions for regions, _, _ in built])
        order = list(range(len(built)))
        if sel is not None:
            order.remove(sel[2])
            order.append(sel[2])         # the `else` variant last
        else:                            # `variant` 0, which calls leave out, the most common body
            order.sort(key=lambda k: -len(built[k][0]))
        n_in = len(head)
        regions, trees, holes, flags = [], [], [], []
        for j, k in enumerate(order):
            part_regions, part_trees, _ = built[k]
            start = len(regions)
            regions += part_regions
            trees += part_trees
            holes += [{variants.lift(p, n_in, j): h for p, h in _walk_holes(t)} for t in part_trees]
            for path in parts[k][1]:
                vec = [MISSING] * start + [_get(t, path)[3] is not None for t in part_trees]
                flags.append((variants.lift(path, n_in, j), vec))
        flags = [(path, vec + [MISSING] * (len(regions) - len(vec))) for path, vec in flags]
        gr = Group(len(self.groups), defname, regions, trees)
        gr.rep = variants.joined(head, [built[k][2] for k in order], ())
        where = [j for j, k in enumerate(order) for _ in built[k][0]]
        if sel is None:
            choice = ("variant", "variant", where, "0")
        else:
            name, kind, _, _ = sel
            choice = (name, kind, [r.info.args[name] for r in regions], None)
        self._params(gr, holes, flags, choice)
        if sel is None:
            conds = tuple(f"{gr.selector} == {j}" for j in range(len(order) - 1))
        else:
            conds = tuple(variants.condition(gr.selector, sel[1], sel[3][k]) for k in order[:-1])
        gr.rep = variants.joined(head, [built[k][2] for k in order], conds)
        self._register(gr)
        return True

    def _register(self, gr: Group) -> None:
        self.groups.append(gr)
        for r in gr.instances:
            self.group_of[r] = gr

    def _params(self, gr: Group, holes: list, flags: list, choice=None) -> None:
        """The parameters of ``gr`` and the text of every hole of its body (``gr.resolved``). ``holes`` maps
        hole paths to holes for every instance, ``flags`` lists (residual path, has a shortcut per instance),
        ``choice`` is (name, kind, values, default) of the parameter that picks a variant."""
        order = [p for p, _ in _walk_holes(gr.rep)]
        hints = dict(_walk_holes(gr.rep))
        avoid = set(self.w.reserved) | set(body_vars(gr.rep))
        args = [r.info.args if r.info is not None else {} for r in gr.instances]
        arg_names = [a for a in args[0] if all(a in x for x in args)] if args else []
        arg_vecs, arg_kinds = {}, {}
        for a in arg_names:
            vec = [pair_value(x[a]) for x in args]
            kind = _arg_kind(vec)
            if kind is not None:
                arg_vecs[a], arg_kinds[a] = vec, kind
        taken: set = set()
        params: list[Param] = []
        several = choice is not None     # a body of variants: most numbers are absent from most instances

        def fits(vec, pvec):
            return all(v is MISSING or q is MISSING or _same(v, q) for v, q in zip(vec, pvec))

        def may_share(p, vec, role):
            # in a body of variants, numbers of different variants share a parameter where it is an
            # argument's, or where they have the same role (an argument of the same op or block)
            return not several or p.arg or p.role == role or any(
                v is not MISSING and q is not MISSING for v, q in zip(vec, p.vec))

        def merge(p, vec):
            p.vec = [q if q is not MISSING else v for v, q in zip(vec, p.vec)]

        def new_param(name, kind, vec, flag=False, role=(), arg=False):
            name = unique(identifier(name, "p"), taken, avoid)
            taken.add(name)
            p = Param(name, kind, list(vec), flag=flag, role=role, arg=arg,
                      default_text="0" if kind == "variant" else None)     # an inner block's choice
            params.append(p)
            return p

        for path, vec in flags:
            short = _get(gr.rep, path)[3]
            first = short[0] if short else None
            want = first[1] if first and len(short) == 1 and len(first) > 1 and isinstance(first[1], str) \
                and NAME.match(first[1]) else "shortcut"
            hit = next((a for a, v in arg_vecs.items() if arg_kinds[a] == "bool" and fits(vec, v)
                        and any(x is not MISSING for x in vec)), None)
            p = new_param(hit or want, "bool", vec, flag=True)
            gr.flags[path] = p.name
        def vector(path):
            return [h[path].value if path in h else MISSING for h in holes]

        roles = variants.roles(gr.rep)
        by_arg: dict = {}            # argument name -> its parameter
        # first the numbers that are arguments of the definition, so that the others can be written
        # over them (`out // 2`); in a body of variants, a number together with those of the same role
        # in the other variants (the width of the first conv with or without a residual)
        for path in order:
            vec = vector(path)
            if several:
                for other in order:
                    if roles[other] == roles[path] and fits(vec, vector(other)):
                        vec = [v if v is not MISSING else q for v, q in zip(vec, vector(other))]
            present = [v for v in vec if v is not MISSING]
            kind = hints[path].kind
            if present and not all(_same(v, present[0]) for v in present):
                hit = next((a for a in arg_vecs if arg_kinds[a] == kind and fits(vec, arg_vecs[a])
                            and (a in by_arg or a not in taken)), None)
                if hit is not None:
                    if hit not in by_arg:
                        by_arg[hit] = new_param(hit, kind, arg_vecs[hit], arg=True)
                    by_arg[hit].roles.add(roles[path])
        if choice is not None and choice[3] is None:     # the argument that picks the variant, if not yet
            name, kind, vec, _ = choice
            if name not in by_arg:
                by_arg[name] = new_param(name, kind, vec, arg=True)
            gr.selector = by_arg[name].name
        for path in order:
            vec = vector(path)
            present = [v for v in vec if v is not MISSING]
            if not present:
                continue                 # only parameters left out where called: their defaults
            kind = hints[path].kind
            hint = hints[path].hint
            if all(_same(v, present[0]) for v in present):
                # a number of an optional part reads better as the parameter it agrees with
                # (in a body of variants: the argument that gives the number of this role in other variants)
                hit = next((p for p in params if MISSING in vec and not p.flag and p.kind == kind
                            and MISSING not in p.vec and fits(vec, p.vec)
                            and (not several or p.arg and roles[path] in p.roles)), None)
                gr.resolved[path] = hit.name if hit is not None else value_text(present[0])
                continue
            text = None
            for p in params:
                if not p.flag and p.kind == kind and fits(vec, p.vec) and may_share(p, vec, roles[path]):
                    merge(p, vec)
                    text = p.name
                    break
            if text is None:
                hit = next((a for a in arg_vecs if arg_kinds[a] == kind and a not in taken
                            and fits(vec, arg_vecs[a])), None)
                if hit is not None:
                    p = new_param(hit, kind, arg_vecs[hit], arg=True)
                    merge(p, vec)
                    text = p.name
            if text is None and kind == "int":
                text = self._expression(vec, params)
            if text is None:
                text = new_param(hint, kind, vec, role=roles[path]).name
            gr.resolved[path] = text
        if choice is not None and choice[3] is not None:     # a new `variant: int = 0`
            name, kind, vec, default = choice
            gr.selector = new_param(name, kind, vec).name
        # the definition's own arguments first, in its order, then the other numbers, then the optional ones
        position = {a: k for k, a in enumerate(arg_names)}
        params.sort(key=lambda p: (p.optional, not p.arg, position.get(p.name, 0) if p.arg else 0))
        gr.params = params

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
