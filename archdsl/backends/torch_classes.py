"""From the IR's scope tree to Python classes: which scopes become which modules.

Every scope that holds nodes is a module of the generated model:

* a block instance is an instance of the class named after its definition;
* a ``[...]`` sequence whose members form a single chain of module-able layers
  is an ``nn.Sequential`` written inline in its parent's ``__init__``;
* any other scope (a labelled ``parallel``/``dense``/``residual``/``stn``, a
  sequence that is not a chain) is an instance of a class named after its label
  or its construct;
* the model itself is the top-level class.

A class's body is a list of :class:`Item` (layers and child modules, with the
members of inline sequences flattened in and tagged with their ``container``),
read off one instance. Instances of one definition share a class when their
items agree in everything but numbers; numbers become expressions over the
class's arguments (:mod:`.torch_exprs`). Instances that differ only by the
presence of a named single-input, single-output part (a projection shortcut)
share a class with a boolean argument per such part; any other structural
difference gives one class per structure, numbered.
"""
from __future__ import annotations

import builtins
import heapq
import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..ir import ops as op_registry
from ..ir.graph import Graph
from .torch_exprs import Lin, infer, is_int
from .torch_layers import CLASSES as LAYER_CLASSES
from .torch_lowering import Same, factory_dtype, lowering

# registry channel kinds whose output has the first input's channel count ("mix": softmax, LRN keep the shape)
KEEPS_CHANNELS = frozenset({"same", "elementwise", "sample", "mix", "broadcast"})
CONSTRUCT_CLASS = {"seq": "Sequence", "parallel": "Parallel", "dense": "DenseBlock", "residual": "Residual",
                   "stn": "SpatialTransformer"}
# names the generated file defines or uses besides its classes; Python's built-ins (``int``, ``range``,
# ``getattr`` appear in generated code) are never argument or variable names either
RESERVED = ({"nn", "F", "torch", "Tensor", "OrderedDict", "partial", "rename_keys", "self", "super", "WEIGHTS",
             "load_weights"} | set(LAYER_CLASSES) | {n for n in dir(builtins) if not n.startswith("__")})
# attributes of a module that a child must not be stored under: nn.Module's and nn.Sequential's
# methods and properties, the attributes every instance has (``training``, ``_modules``) and those
# PyTorch sets later (``torch.compile``, backward hooks)
NN_MEMBERS = frozenset(dir(nn.Sequential)) | frozenset(vars(nn.Module())) | {
    "_compiled_call_impl", "_is_full_backward_hook"}


def camel(name: str) -> str:
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    out = "".join(p[:1].upper() + p[1:] for p in parts) or "Block"
    if out[0].isdigit():
        out = "Block" + out
    return out + "Block" if out in RESERVED or keyword.iskeyword(out) else out


def is_position(name: str) -> bool:
    return name.isdigit()


def identifier(name: str) -> str:
    """An ASCII Python identifier for ``name``: other characters become ``_`` (so no two names that
    Python would read as one, after NFKC normalisation, can both appear), a leading digit gets ``v``,
    keywords and reserved names a trailing ``_``."""
    name = re.sub(r"[^0-9A-Za-z_]", "_", name)
    if not name or name[0].isdigit():
        name = "v" + name
    return name + "_" if keyword.iskeyword(name) or name in RESERVED else name


def is_attribute(name: str) -> bool:
    """Whether ``self.<name>`` may hold a child module: an ASCII identifier that is no keyword and
    no member of nn.Module or nn.Sequential."""
    return name.isascii() and name.isidentifier() and not keyword.iskeyword(name) and name not in NN_MEMBERS


def parent(path: str) -> str:
    return path.rpartition(".")[0]


@dataclass(eq=False)
class Item:
    """One layer or child module of a class body, in forward order."""
    name: str                   # its name in its container (the last path component)
    container: tuple            # the inline nn.Sequential names it sits in, outermost first
    nid: int | None             # the node, for a layer
    unit: "Inst | None"         # the child module, for a class instance
    inputs: tuple               # refs: ("in", k) or ("it", item index, output index)
    outputs: tuple              # node ids
    key: tuple = ()
    slots: dict = field(default_factory=dict)     # slot name -> value
    hints: dict = field(default_factory=dict)     # slot name -> ref whose channel count it is
    rows: list = field(default_factory=list)      # a dense loop: its layers (child Inst), in order
    stem: str = ""              # a dense loop: layer i is named f"{stem}{i + offset}"
    offset: int = 0

    @property
    def entity(self) -> str:
        return self.container[0] if self.container else self.name


@dataclass(eq=False)
class Inst:
    """One scope of the graph that becomes a module."""
    path: str
    info: object
    inputs: list
    outputs: list
    kind: str = "class"         # "model" | "class" | "sequential"
    items: list = field(default_factory=list)
    group: tuple = ()
    cls: "ClassDef | None" = None
    values: dict = field(default_factory=dict)     # constructor argument -> value for this instance

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]


@dataclass
class Param:
    name: str
    kind: str                   # "channels" | "arg" | "extra" | "flag"
    annotation: str
    default: object = ...
    index: int = 0              # for "channels": which input


@dataclass(eq=False)
class ClassDef:
    name: str
    kind: str                   # "model", "block" or a construct kind
    spec_name: str
    base: Inst
    insts: list
    maps: dict                  # id(inst) -> [instance item index or None per base item]
    optional: dict = field(default_factory=dict)   # entity name -> flag parameter name
    params: list = field(default_factory=list)
    exprs: dict = field(default_factory=dict)      # (base item index, slot) -> Lin
    sequential: bool = False    # a chain of named layers: an nn.Sequential subclass
    lifted: dict = field(default_factory=dict)     # argument -> the words the spec wrote for it


class Analysis:
    """The module tree of a graph and the classes that build it.

    ``model_args`` limits the model's parameters its class may take as arguments (None: no
    limit); ``static_ok(class name, parameter)`` says whether a block class may take a parameter
    that has the same value in every instance. :mod:`.torch_args` decides which are sound.
    """

    def __init__(self, graph: Graph, model_args=None, static_ok=None):
        self.graph = graph
        self.model_args = None if model_args is None else frozenset(model_args)
        self.static_ok = static_ok if static_ok is not None else (lambda cls, a: True)
        self.order = graph.node_ids()
        self.pos = {nid: i for i, nid in enumerate(self.order)}
        self.users: dict[int, list] = {nid: [] for nid in self.order}
        for nid in self.order:
            for src in graph.data(nid)["inputs"]:
                self.users[src].append(nid)
        self.texts: dict = {}
        members: dict[str, list] = {"": []}
        for nid in self.order:
            d = graph.data(nid)
            if d["op"] == "input":
                continue
            path = d["scope"]
            while path:
                path = parent(path)
                members.setdefault(path, []).append(nid)
        self.members = {p: set(v) for p, v in members.items()}
        self.children: dict[str, list] = {p: [] for p in members}
        for p in members:
            if p:
                self.children[parent(p)].append(p)
        self.insts: dict[str, Inst] = {}
        self.classes: list[ClassDef] = []
        self.top = self._instance("")
        self._build_classes()

    # ---- instances and their items
    def _instance(self, path: str) -> Inst:
        g = self.graph
        mem = self.members[path]
        if path == "":
            inputs, outputs = list(g.inputs), list(g.outputs)
        else:
            inputs, seen = [], set()
            for nid in sorted(mem, key=self.pos.get):
                for src in g.data(nid)["inputs"]:
                    if src not in mem and src not in seen:
                        seen.add(src)
                        inputs.append(src)
            outputs = [nid for nid in sorted(mem, key=self.pos.get)
                       if nid in g.outputs or any(u not in mem for u in self.users[nid])]
        info = g.scopes.get(path)
        inst = Inst(path, info, inputs, outputs)
        self.insts[path] = inst
        for child in self.children[path]:
            self._instance(child)
        return inst

    def _direct(self, path: str) -> list:
        """The layers and child scopes of ``path``: (name, node id or None, child Inst or None)."""
        out = []
        for nid in self.members[path]:
            scope = self.graph.data(nid)["scope"]
            if parent(scope) == path:
                out.append((scope.rpartition(".")[2], nid, None, self.pos[nid]))
        for child in self.children[path]:
            out.append((child.rpartition(".")[2], None, self.insts[child],
                        min(self.pos[n] for n in self.members[child])))
        return out

    def _is_chain(self, inst: Inst) -> bool:
        """A sequence of single-input, single-output module-able members, each feeding the next only."""
        if len(inst.inputs) != 1 or len(inst.outputs) != 1:
            return False
        members = sorted(self._direct(inst.path), key=lambda m: m[3])
        prev, prev_users = inst.inputs[0], None
        for name, nid, child, _ in members:
            if nid is not None:
                d = self.graph.data(nid)
                if lowering(d["op"]).module is None or tuple(d["inputs"]) != (prev,):
                    return False
                here, out = {nid}, nid
            else:
                if child.kind == "model" or len(child.inputs) != 1 or len(child.outputs) != 1 \
                        or child.inputs[0] != prev:
                    return False
                here, out = self.members[child.path], child.outputs[0]
            if prev_users is not None and not prev_users <= here:
                return False
            prev, prev_users = out, set(self.users[out])
        return prev == inst.outputs[0]

    def _items(self, inst: Inst) -> list:
        """The flattened body of a class instance, in a dependency order."""
        raw = []

        def collect(path: str, container: tuple):
            for name, nid, child, pos in self._direct(path):
                if child is not None and child.kind == "sequential":
                    collect(child.path, container + (name,))
                elif child is not None:
                    raw.append((pos, Item(name, container, None, child, (), tuple(child.outputs))))
                else:
                    raw.append((pos, Item(name, container, nid, None, (), (nid,))))
        collect(inst.path, ())
        produced = {}
        for idx, (_, it) in enumerate(raw):
            for o, nid in enumerate(it.outputs):
                produced[nid] = (idx, o)
        needs = []
        for _, it in raw:
            srcs = self.graph.data(it.nid)["inputs"] if it.unit is None else it.unit.inputs
            needs.append(list(srcs))
        deps = [{produced[s][0] for s in srcs if s in produced} for srcs in needs]
        order, done = [], set()
        heap = [(raw[i][0], i) for i in range(len(raw)) if not deps[i]]
        heapq.heapify(heap)
        waiting = {i: set(d) for i, d in enumerate(deps) if d}
        while heap:
            _, i = heapq.heappop(heap)
            order.append(i)
            done.add(i)
            for j in [j for j, d in waiting.items() if i in d]:
                waiting[j].discard(i)
                if not waiting[j]:
                    del waiting[j]
                    heapq.heappush(heap, (raw[j][0], j))
        new_index = {old: new for new, old in enumerate(order)}
        in_index = {nid: k for k, nid in enumerate(inst.inputs)}
        items = []
        for old in order:
            it = raw[old][1]
            refs = []
            for s in needs[old]:
                if s in produced:
                    refs.append(("it", new_index[produced[s][0]], produced[s][1]))
                else:
                    refs.append(("in", in_index[s]))
            it.inputs = tuple(refs)
            items.append(it)
        return items

    # ---- keys and slots
    def _describe(self, it: Item) -> None:
        """Fill ``key`` (everything but numbers) and ``slots`` (the numbers) of an item."""
        if it.rows:
            it.key = ("dense", id(it.unit.cls), it.container, it.stem, it.offset, it.inputs, 1)
            it.slots["num_layers"] = len(it.rows)
            return
        if it.unit is not None:
            cls = it.unit.cls
            it.key = ("unit", id(cls), it.container, it.name, it.inputs, len(it.outputs))
            for p in cls.params:
                it.slots[p.name] = it.unit.values[p.name]
                if p.kind == "channels":
                    it.hints[p.name] = it.inputs[p.index]
            return
        d = self.graph.data(it.nid)
        op, attrs = d["op"], d["attrs"]
        low = lowering(op)
        kinds = {a.name: a.kind for a in op_registry.get(op).args}
        in_shapes = [self.graph.data(s)["shape"] for s in d["inputs"]]
        struct = []
        for k in sorted(attrs):
            v = attrs[k]
            if kinds.get(k) == "init":
                continue
            if kinds.get(k) in ("pair", "pair?") and isinstance(v, tuple) and v[0] == v[1]:
                v = v[0]
            if k not in low.literals and (is_int(v) or isinstance(v, float)
                                          or (isinstance(v, tuple) and all(is_int(x) for x in v))):
                it.slots[k] = v
            else:
                struct.append((k, v if not isinstance(v, list) else tuple(v)))
        if low.module is not None and low.module.features:
            name, dim = low.module.features[0], low.module.feature_dim(attrs)
            it.slots = {name: in_shapes[0][dim], **it.slots}
            if dim % len(in_shapes[0]) == 1:            # the input's channel count: follow the dataflow
                it.hints[name] = it.inputs[0]
        inits = []
        for local, pname in sorted(d["params"].items()):
            init = self.graph.params[pname].init
            if init != low.default_init(local):
                inits.append((local, tuple(init) if isinstance(init, list) else init))
        named = bool(it.container) or not is_position(it.name) or bool(d["params"])
        it.key = ("op", op, it.container, it.name if named else None, it.inputs,
                  tuple(len(s) for s in in_shapes) if low.by_rank else (),
                  tuple(struct), tuple(inits), factory_dtype(self.graph, it.nid))

    # ---- classes
    def _group(self, inst: Inst) -> tuple:
        info = inst.info
        if inst.path == "":
            return ("model", info.name if info else self.graph.name)
        if info is not None and info.kind == "block":
            return ("block", info.name)
        kind = info.kind if info is not None else "seq"
        stem = inst.name.rstrip("0123456789")
        name = camel(stem) if stem and not is_position(inst.name) else CONSTRUCT_CLASS.get(kind, "Sequence")
        if name.lower() == CONSTRUCT_CLASS.get(kind, "").lower():
            name = CONSTRUCT_CLASS[kind]
        return (kind, name, inst.path.count("."))

    def _build_classes(self) -> None:
        by_depth = sorted(self.insts.values(), key=lambda i: -(i.path.count(".") + 1 if i.path else 0))
        # kinds first, deepest first (a chain check needs its members' kinds)
        for inst in by_depth:
            if inst.path == "":
                inst.kind = "model"
            elif (inst.info is None or inst.info.kind == "seq") and self._is_chain(inst):
                inst.kind = "sequential"
            else:
                inst.kind = "class"
        for inst in self.insts.values():
            if inst.kind != "sequential":
                inst.group = self._group(inst)
        # groups in dependency order: a group after every group used inside its instances
        groups: dict[tuple, list] = {}
        for inst in sorted(self.insts.values(), key=lambda i: self._first(i)):
            if inst.kind != "sequential":
                groups.setdefault(inst.group, []).append(inst)
        deps = {g: set() for g in groups}
        for g, insts in groups.items():
            for inst in insts:
                for p in self.insts:
                    if p.startswith(inst.path + ".") if inst.path else p:
                        sub = self.insts[p]
                        if sub.kind != "sequential" and sub.group != g:
                            deps[g].add(sub.group)
        done: list = []
        while len(done) < len(groups):
            ready = [g for g in groups if g not in done and deps[g] <= set(done)]
            if not ready:       # cannot happen for blocks; constructs are keyed by depth
                raise AssertionError("cyclic class dependencies")
            ready.sort(key=lambda g: self._first(groups[g][0]))
            g = ready[0]
            done.append(g)
            for inst in groups[g]:
                inst.items = _reroll_dense(self._items(inst), self.graph)
                for it in inst.items:
                    self._describe(it)
            self._make_classes(g, groups[g])

    def _first(self, inst: Inst) -> int:
        mem = self.members[inst.path]
        return min((self.pos[n] for n in mem), default=-1) if inst.path else -1

    def _make_classes(self, group: tuple, insts: list) -> None:
        clusters: list[list] = []
        for inst in insts:
            for cl in clusters:
                if _unify(cl + [inst]) is not None:
                    cl.append(inst)
                    break
            else:
                clusters.append([inst])
        kind = group[0]
        base_name = camel(group[1]) if kind in ("model", "block") else group[1]
        names = self._class_names(base_name, len(clusters))
        for name, cl in zip(names, clusters):
            base, maps, optional = _unify(cl)
            cls = ClassDef(name, kind, group[1], base, cl, maps)
            cls.optional = {e: e for e in optional}
            for inst in cl:
                inst.cls = cls
            self._infer(cls)
            self.classes.append(cls)

    def _class_names(self, base: str, n: int) -> list:
        taken = {c.name for c in self.classes}
        if n == 1 and base not in taken:
            return [base]
        out, k = [], 1
        while len(out) < n:
            if f"{base}{k}" not in taken:
                out.append(f"{base}{k}")
            k += 1
        return out

    # ---- expressions for the numbers of a class
    def _infer(self, cls: ClassDef) -> None:
        insts, base = cls.insts, cls.base
        envs = [dict() for _ in insts]
        atoms, channel_atoms, channel_index = [], set(), {}
        # channel counts of the inputs, then the definition's numeric arguments
        ranks = [len(self.graph.data(n)["shape"]) for n in base.inputs]
        for k, rank in enumerate(ranks):
            if rank < 2 or cls.kind == "model":
                continue
            stem = "in_features" if rank == 2 else "in_channels"
            name = stem if len(ranks) == 1 else f"{stem}{k + 1}"
            atoms.append(name)
            channel_atoms.add(name)
            channel_index[name] = k
            for env, inst in zip(envs, insts):
                env[name] = self.graph.data(inst.inputs[k])["shape"][1]
        args = dict(base.info.args) if base.info is not None else {}
        for a, v in args.items():
            if (is_int(v) or isinstance(v, float)) and identifier(a) == a and a not in atoms and all(
                    a in (i.info.args if i.info else {}) and type(i.info.args[a]) is type(v) for i in insts) \
                    and self._admits(cls, a):
                atoms.append(a)
                for env, inst in zip(envs, insts):
                    env[a] = inst.info.args[a]
        chan: dict = {}
        extras: list = []

        def present(j):
            return [(env, inst, cls.maps[id(inst)][j]) for env, inst in zip(envs, insts)
                    if cls.maps[id(inst)][j] is not None]

        def channels(ref):
            if ref in chan:
                return chan[ref]
            chan[ref] = None
            if ref[0] == "in":
                name = next((a for a, k in channel_index.items() if k == ref[1]), None)
                chan[ref] = Lin.of(("atom", name)) if name else None
                return chan[ref]
            j = ref[1]
            it = base.items[j]
            hints = []
            if it.unit is None:
                op = self.graph.data(it.nid)["op"]
                kind, width = op_registry.get(op).channels.kind, op_registry.get(op).channels.width
                if kind == "produce" and width:
                    hints.append(cls.exprs.get((j, width)))
                elif kind in KEEPS_CHANNELS:
                    hints.append(channels(it.inputs[0]))
                elif kind == "concat" and it.slots.get("dim") == 1:
                    parts = [channels(r) for r in it.inputs]
                    if all(p is not None for p in parts):
                        total = parts[0]
                        for p in parts[1:]:
                            total = total + p
                        hints.append(total)
            rows = present(j)
            values, row_envs = [], []
            for env, inst, k in rows:
                shape = self.graph.data(inst.items[k].outputs[ref[2]])["shape"]
                if len(shape) < 2:
                    return None
                values.append(shape[1])
                row_envs.append(env)
            chan[ref] = infer(values, row_envs, atoms, hints, None, frozenset(channel_atoms))
            return chan[ref]

        for j, it in enumerate(base.items):
            words = self._words(it)
            for slot in it.slots:
                rows = present(j)
                values = [inst.items[k].slots[slot] for _, inst, k in rows]
                row_envs = [env for env, _, _ in rows]
                hint = channels(it.hints[slot]) if slot in it.hints else None
                same = _same_default(it, slot, self.graph)
                if hint is None and same in it.slots and (words is None or slot not in words):
                    hint = cls.exprs.get((j, same))     # a pool's unwritten stride is its kernel size
                expr = infer(values, row_envs, atoms, (hint,), None if words is None else words.get(slot, set()),
                             frozenset(channel_atoms))
                if expr is None:
                    name = self._fresh(slot if it.rows else f"{it.name}_{slot}", atoms + extras)
                    extras.append(name)
                    for env, inst in zip(envs, insts):
                        k = cls.maps[id(inst)][j]
                        env[name] = inst.items[k].slots[slot] if k is not None else values[0]
                    expr = Lin.of(("atom", name))
                    if not is_int(values[0]):
                        expr = _AtomRef(name)
                cls.exprs[(j, slot)] = expr
            if it.rows:
                self._infer_rows(cls, j, it, present(j), atoms, extras, envs, channels)
        used = set()
        for e in cls.exprs.values():
            used |= e.atoms()
        used.discard("i")
        for a in atoms:
            if a in used:
                kind = "channels" if a in channel_atoms else "arg"
                sample = envs[0][a]
                cls.params.append(Param(a, kind, type(sample).__name__,
                                        sample if cls.kind == "model" else ..., channel_index.get(a, 0)))
        for a in extras:
            cls.params.append(Param(a, "extra", _annotation(envs[0][a]), envs[0][a] if cls.kind == "model" else ...))
        for entity in sorted(cls.optional, key=lambda e: next(j for j, it in enumerate(base.items)
                                                              if it.entity == e)):
            name = self._fresh(identifier(entity), [p.name for p in cls.params])
            cls.optional[entity] = name
            cls.params.append(Param(name, "flag", "bool", False))
        for env, inst in zip(envs, insts):
            for p in cls.params:
                if p.kind == "flag":
                    entity = next(e for e, f in cls.optional.items() if f == p.name)
                    inst.values[p.name] = any(it.entity == entity for it in inst.items)
                else:
                    inst.values[p.name] = env[p.name]

    def _admits(self, cls: ClassDef, a: str) -> bool:
        """Whether the definition's parameter ``a`` may be an argument of ``cls`` (see the class docstring)."""
        if cls.kind == "model":
            return self.model_args is None or a in self.model_args
        if len({_typed(i.info.args[a]) for i in cls.insts}) > 1:
            return True
        return self.static_ok(cls.name, a)

    def offered(self) -> list:
        """The model's parameters its class takes as arguments."""
        top = next(c for c in self.classes if c.kind == "model")
        return [p.name for p in top.params if p.kind == "arg"]

    def static(self) -> dict:
        """``(class name, parameter) -> {instance path: value}`` for the arguments of block classes that
        have one value in every instance."""
        out = {}
        for cls in self.classes:
            if cls.kind == "model":
                continue
            for p in cls.params:
                values = {i.path: _typed(i.values[p.name]) for i in cls.insts}
                if p.kind == "arg" and len(set(values.values())) == 1:
                    out[(cls.name, p.name)] = values
        return out

    def _infer_rows(self, cls, j, it, present, atoms, extras, envs, channels) -> None:
        """Arguments of the layers of a dense loop, as expressions of the class's arguments and ``i``."""
        rows = [(dict(env, i=i), inst.items[k].rows[i], inst) for env, inst, k in present
                for i in range(len(inst.items[k].rows))]
        row_envs = [env for env, _, _ in rows]
        words = self._words(Item(it.name, (), None, it.unit, (), ()))
        construct = cls.kind not in ("block", "model")
        params = sorted(it.unit.cls.params, key=lambda p: p.kind == "channels")
        for p in params:
            if p.kind == "channels":
                outs = [self.graph.data(child.outputs[0])["shape"][1] for _, child, _ in rows]
                growth = infer(outs, row_envs, atoms + extras, (), set(atoms + extras) - channel_atoms_of(cls))
                start = channels(it.inputs[0])
                hint = None
                if start is not None and growth is not None and len(growth.terms) <= 1 and not growth.const \
                        or growth is not None and growth.is_const:
                    if growth.is_const:
                        hint = start + Lin.of(("atom", "i"), growth.const) if start is not None else None
                    elif growth.terms[0][0][0] == "atom":
                        hint = start + Lin.of(("mul", "i", growth.terms[0][0][1]), growth.terms[0][1])
                # layers that grow by different widths (a pruned block): the input is the block's input
                # and every earlier layer's output, `in_channels + sum(growths[:i])`, with the growths a table
                tables = [cls.exprs[(j, ("row", q.name))] for q in params if (j, ("row", q.name)) in cls.exprs]
                hints = (hint, *(_GrowthRef(start, t.terms[0][0][1]) for t in tables
                                 if start is not None and isinstance(t, _RowRef)))
            else:
                hints = ()
            values = [child.values[p.name] for _, child, _ in rows]
            expr = infer(values, row_envs, atoms + extras + ["i"], hints,
                         None if words is None else words.get(p.name, set()))
            if expr is None or (construct and expr.is_const and p.kind != "channels"):
                expr = self._lift_row(cls, j, p, words, atoms, extras, envs, rows)
            cls.exprs[(j, ("row", p.name))] = expr

    def _lift_row(self, cls, j, p, words, atoms, extras, envs, rows) -> Lin:
        """A dense loop's layer argument that no expression gives, as a new argument of the class: one value
        where every layer of an instance has the same, else a table with one entry per layer (a pruned
        block's widths), read as ``name[i]``."""
        name = self._fresh(p.name, atoms + extras + ["i", "num_layers"])
        extras.append(name)
        if words is not None and p.name in words:
            cls.lifted[name] = words[p.name]
        tables = {}
        for env, inst in zip(envs, cls.insts):
            k = cls.maps[id(inst)][j]
            tables[id(inst)] = tuple(r.values[p.name] for r in inst.items[k].rows) if k is not None else ()
        per_layer = any(len(set(map(_typed, t))) > 1 for t in tables.values())
        sample = rows[0][1].values[p.name]
        for env, inst in zip(envs, cls.insts):
            t = tables[id(inst)]
            env[name] = t if per_layer else (t[0] if t else sample)
        for env, _, inst in rows:
            env[name] = tables[id(inst)] if per_layer else tables[id(inst)][0]
        if per_layer:
            return _RowRef(name)
        return Lin.of(("atom", name)) if is_int(sample) else _AtomRef(name)

    @staticmethod
    def _fresh(name: str, taken) -> str:
        name = identifier(name)
        out, k = name, 2
        while out in taken:
            out = f"{name}{k}"
            k += 1
        return out

    def _text(self, span) -> str | None:
        if span is None:
            return None
        if span.file not in self.texts:
            path = Path(span.file)
            if span.file.startswith("std/"):
                path = Path(__file__).resolve().parent.parent / "stdlib" / span.file[4:]
            try:
                self.texts[span.file] = path.read_text().splitlines()
            except (OSError, ValueError):
                self.texts[span.file] = None
        lines = self.texts[span.file]
        if lines is None or not 1 <= span.line <= span.end_line <= len(lines):
            return None
        chunk = lines[span.line - 1:span.end_line]
        if len(chunk) == 1:
            return chunk[0][span.col - 1:span.end_col - 1]
        return "\n".join([chunk[0][span.col - 1:], *chunk[1:-1], chunk[-1][:span.end_col - 1]])

    def _words(self, it: Item) -> dict | None:
        """Per slot, the identifiers the spec's text wrote for it (None when the text is unknown).

        Only an argument named there may stand for a value that is the same in
        every instance; this keeps ``conv(planes, 3, padding=1)`` from reading
        ``padding=stride`` where stride happens to be 1.
        """
        if it.unit is not None:
            info = it.unit.info
            names = list(info.args) if info is not None else []
            text = self._text(info.span) if info is not None else None
        else:
            d = self.graph.data(it.nid)
            opdef = op_registry.get(d["op"])
            names = [a.name for a in opdef.args] if opdef is not None else []
            text = self._text(d["span"])
        if text is None:
            return None
        lifted = it.unit.cls.lifted if it.unit is not None and it.unit.cls is not None else {}
        parsed = _call_args(text)
        if parsed is None and lifted:
            parsed = [], {}
        if parsed is None:
            return {}
        pos, kw = parsed
        out = {}
        for i, seg in enumerate(pos):
            if i < len(names):
                out[names[i]] = seg
        out.update(kw)
        words = {k: set(re.findall(r"[A-Za-z_]\w*", v)) for k, v in out.items()}
        for k, v in lifted.items():
            words.setdefault(k, v)
        return words


def _call_args(text: str):
    """The positional and keyword argument texts of the first call in ``text``."""
    depth_brace, start = 0, None
    for i, ch in enumerate(text):
        if ch == "{":
            depth_brace += 1
        elif ch == "}":
            depth_brace -= 1
        elif ch == "(" and depth_brace == 0:
            start = i
            break
        elif ch in "[" and depth_brace == 0:
            return None
    if start is None:
        return None
    depth, cur, parts = 0, "", []
    for ch in text[start + 1:]:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                break
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    pos, kw = [], {}
    for part in parts:
        m = re.match(r"\s*([A-Za-z_]\w*)\s*=(?!=)(.*)$", part, re.S)
        if m:
            kw[m.group(1)] = m.group(2)
        else:
            pos.append(part)
    return pos, kw


class _AtomRef(Lin):
    """A non-integer argument passed through unchanged."""

    def __init__(self, name: str):
        super().__init__(((("atom", name), 1),), 0)

    def eval(self, env):
        return env[self.terms[0][0][1]]


class _RowRef(Lin):
    """Layer ``i``'s entry of a table argument of a dense loop: ``name[i]``."""

    def __init__(self, name: str):
        super().__init__(((("atom", name), 1),), 0)

    def eval(self, env):
        return env[self.terms[0][0][1]][env["i"]]

    def render(self) -> str:
        return f"{self.terms[0][0][1]}[i]"

    def renamed(self, names: dict) -> "Lin":
        name = self.terms[0][0][1]
        return _RowRef(names.get(name, name))


class _GrowthRef(Lin):
    """A dense layer's input channels when the layers' widths are a table: ``start + sum(table[:i])``."""

    def __init__(self, start: Lin, table: str):
        super().__init__(start.terms + ((("atom", table), 1),), start.const)
        object.__setattr__(self, "start", start)      # not a field: equality is the terms'

    def eval(self, env):
        return self.start.eval(env) + sum(env[self.terms[-1][0][1]][:env["i"]])

    def render(self) -> str:
        return f"{self.start.render()} + sum({self.terms[-1][0][1]}[:i])"

    def renamed(self, names: dict) -> "Lin":
        table = self.terms[-1][0][1]
        return _GrowthRef(self.start.renamed(names), names.get(table, table))


def _typed(v) -> tuple:
    return type(v).__name__, v


def _same_default(it: Item, slot: str, graph: Graph) -> str | None:
    """The attribute whose value the layer's ``slot`` defaults to (a pool's stride: its kernel size)."""
    if it.unit is not None or it.nid is None:
        return None
    form = lowering(graph.data(it.nid)["op"]).module
    return next((d.other for n, d in (form.args + form.kwargs if form else ()) if n == slot and isinstance(d, Same)),
                None)


def channel_atoms_of(cls: ClassDef) -> set:
    return {p.name for p in cls.params if p.kind == "channels"} | {"in_channels", "in_features"}


def _annotation(v) -> str:
    if isinstance(v, tuple):
        return "tuple"
    return type(v).__name__


# ---- a dense block written as a loop

def _reroll_dense(items: list, graph: Graph) -> list:
    """A body that is exactly one dense block of named layers, as one loop item.

    The pattern: layer 1 takes the input ``x``; layer i > 1 takes
    ``concat(x, out_1, ..., out_{i-1})``; the body returns ``concat(x, out_1, ..., out_n)``.
    The layers are instances of one class named ``stem{i + offset}``.
    """
    units = [it for it in items if it.unit is not None]
    if not units or len(items) != 2 * len(units) or any(it.container for it in items):
        return items
    m = re.fullmatch(r"(.*?)(\d+)", units[0].name)
    if m is None or not is_attribute(m.group(1)) or any(not is_attribute(u.name) for u in units):
        return items
    stem, offset = m.group(1), int(m.group(2))
    n = len(units)
    expect = [("in", 0)]
    for k in range(n):
        unit = items[2 * k]
        src = ("in", 0) if k == 0 else ("it", 2 * k - 1, 0)
        if k > 0 and not _is_concat(items[2 * k - 1], graph, expect):
            return items
        if unit.unit is None or unit.inputs != (src,) or unit.name != f"{stem}{k + offset}" \
                or len(unit.outputs) != 1 or unit.unit.cls is not units[0].unit.cls:
            return items
        expect = expect + [("it", 2 * k, 0)]
    last = items[-1]
    if not _is_concat(last, graph, expect):
        return items
    order = [items[2 * k] for k in range(n)]
    loop = Item(stem, (), None, units[0].unit, (("in", 0),), tuple(last.outputs))
    loop.rows = [it.unit for it in order]
    loop.stem, loop.offset = stem, offset
    return [loop]


def _is_concat(it: Item, graph: Graph, refs: list) -> bool:
    if it.unit is not None or it.nid is None:
        return False
    d = graph.data(it.nid)
    return op_registry.get(d["op"]).channels.kind == "concat" and d["attrs"].get("dim") == 1 \
        and list(it.inputs) == refs


# ---- unifying the structures of a definition's instances

def _entities(items: list) -> set:
    """The names of the named parts of a body (layers named by position are not parts)."""
    return {it.entity for it in items if it.container or it.unit is not None or it.key[3] is not None}


def _keys(items: list) -> tuple:
    return tuple(it.key for it in items)


def _out_refs(inst: Inst) -> tuple:
    where = {nid: (j, o) for j, it in enumerate(inst.items) for o, nid in enumerate(it.outputs)}
    return tuple(("it", *where[n]) if n in where else ("in", inst.inputs.index(n)) for n in inst.outputs)


def _remove(items: list, entities: set, class_outs: tuple = ()):
    """The item keys (and output refs) with the named single-input, single-output parts bypassed."""
    keep = [j for j, it in enumerate(items) if it.entity not in entities]
    removed = [j for j, it in enumerate(items) if it.entity in entities]
    # each removed entity must take one value in and give one value out
    through = {}
    for e in entities:
        js = [j for j in removed if items[j].entity == e]
        if not js:
            return None
        inside = set(js)
        ins = {r for j in js for r in items[j].inputs if not (r[0] == "it" and r[1] in inside)}
        outs = {(j, o) for j in js for o in range(len(items[j].outputs))}
        used = {(r[1], r[2]) for k, it in enumerate(items) if k not in inside
                for r in it.inputs if r[0] == "it" and r[1] in inside}
        used |= {(r[1], r[2]) for r in class_outs if r[0] == "it" and r[1] in inside}
        if len(ins) != 1 or len(used) != 1 or not (used <= outs):
            return None
        if not items[js[0]].container and items[js[0]].unit is None and is_position(items[js[0]].name):
            return None
        through[next(iter(used))] = next(iter(ins))
    new_index = {old: new for new, old in enumerate(keep)}

    def remap(r):
        while r[0] == "it" and (r[1], r[2]) in through:
            r = through[(r[1], r[2])]
        if r[0] == "it":
            if r[1] not in new_index:
                raise KeyError
            return ("it", new_index[r[1]], r[2])
        return r
    try:
        keys = []
        for j in keep:
            k = items[j].key
            pos = 4 if k[0] == "op" else 4
            keys.append(k[:pos] + (tuple(remap(r) for r in items[j].inputs),) + k[pos + 1:])
        return (tuple(keys), tuple(remap(r) for r in class_outs)), keep
    except KeyError:
        return None


def _unify(insts: list):
    """(base instance, item maps, optional entities) when the instances can share a class, else None."""
    base = max(insts, key=lambda i: (len(i.items), -insts.index(i)))
    maps, optional = {}, set()
    names = _entities(base.items)
    for inst in insts:
        if _keys(inst.items) == _keys(base.items) and _out_refs(inst) == _out_refs(base):
            maps[id(inst)] = list(range(len(base.items)))
            continue
        missing = names - _entities(inst.items)
        if not missing or not _entities(inst.items) <= names:
            return None
        cut = _remove(base.items, missing, _out_refs(base))
        if cut is None or cut[0] != (_keys(inst.items), _out_refs(inst)):
            return None
        keep = cut[1]
        m = [None] * len(base.items)
        for k, j in enumerate(keep):
            m[j] = k
        maps[id(inst)] = m
        optional |= missing
    return base, maps, optional
