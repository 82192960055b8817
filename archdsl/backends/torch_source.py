"""IR to a standalone, readable PyTorch source file.

The file holds one ``nn.Module`` class per block definition of the spec (see
:mod:`.torch_classes` for how scopes become classes and numbers become
constructor arguments), then the model's class, whose constructor arguments
default to the values the spec was compiled with. It imports only ``torch``.
Layers with parameters are attributes named by the spec's labels, so
``state_dict`` keys equal the IR's parameter names; unlabelled layers without
parameters are function calls in ``forward``. Spec-level initialisation that
differs from PyTorch's defaults (an STN's identity start, ``weight_init=``) is
written into the constructors. The text is formatted as ``black`` would format
it (88 columns) and depends on nothing but the graph, so the same spec always
gives the same bytes.

What each op becomes (its ``nn`` module and constructor arguments, or its
function form) comes from :mod:`.torch_lowering`, which the in-memory backend
reads too.

``build_module`` compiles the generated text in memory (no file, no bytecode cache), instantiates it on the
meta device and assigns the IR's weights; it never executes spec text.
"""
from __future__ import annotations

import hashlib
import linecache
import math
import re
import sys
import types
from pathlib import Path

from ..diagnostics import ArchError
from ..ir import ops as op_registry
from ..ir.graph import Graph
from ..ir.inits import Initialiser
from .inplace import may_overwrite, runs_inplace
from .torch_args import sound_analysis
from .torch_classes import NN_MEMBERS, Analysis, ClassDef, identifier, is_attribute, is_position
from .torch_exprs import literal, string_literal
from .torch_layers import SOURCES as LAYER_SOURCES
from .torch_lowering import Module, Same, Src, factory_dtype, is_const, lowering
from .torch_tensors import dtype_source, ir_state

WIDTH = 88
INDENT = "    "


def _fresh(name: str, taken) -> str:
    """``name``, or ``name_``, ``name_2``, ... : the first that is a free attribute name."""
    for k in range(1, len(taken) + 3):
        out = name if k == 1 else f"{name}_" if k == 2 else f"{name}_{k - 1}"
        if out not in taken and is_attribute(out):
            return out
    raise AssertionError(name)


# ---- small formatting helpers (black's layout for the shapes we emit)

def call(prefix: str, args: list, indent: str, suffix: str = "", trailing: bool = False) -> list:
    """``prefix(arg, ...)suffix`` as black lays it out at ``indent``."""
    one = f"{indent}{prefix}{', '.join(args)}){suffix}"
    if len(one) <= WIDTH and not trailing:
        return [one]
    inner = indent + INDENT
    joined = f"{inner}{', '.join(args)}"
    if len(joined) <= WIDTH and not trailing:
        return [f"{indent}{prefix}", joined, f"{indent}){suffix}"]
    out = [f"{indent}{prefix}"]
    for a in args:
        if "\n" in a:
            lines = a.split("\n")
            out.append(inner + lines[0])
            out.extend(lines[1:-1])
            out.append(lines[-1] + ",")
        else:
            out.append(f"{inner}{a},")
    out.append(f"{indent}){suffix}")
    return out


def E(expr) -> str:
    return expr.render()


# ---- layers as modules and as functions (the forms come from torch_lowering)

def module_call(form: Module, x: dict, attrs: dict, in_rank: int) -> tuple:
    """``(constructor, positional args, keyword args)`` for a layer as an ``nn`` module.

    Arguments at their defaults are left out (trailing ones, for positional arguments).
    """
    if form.factory is not None:
        raise ArchError(f"The generated PyTorch source cannot yet write the archdsl layer that stands for an "
                        f"nn.{form.class_name(in_rank)} with integer or shared weights (made by the quantize and "
                        "weight-share passes); use archdsl.to_torch(graph) or the ONNX target for such a graph.")
    def text(name):
        return E(x[name]) if name in x else literal(attrs[name])

    def at_default(name, default):
        if default is ...:
            return False
        if isinstance(default, Same):
            return x.get(name) == x.get(default.other)
        if name in x:
            return is_const(x[name], default)
        return attrs[name] == default and type(attrs[name]) is type(default)
    args = [(text(n), at_default(n, d)) for n, d in form.args]
    while args and args[-1][1]:
        args.pop()
    kw = [f"{n}={text(n)}" for n, d in form.kwargs if not at_default(n, d)]
    name = form.class_name(in_rank, attrs)
    return (name if name in LAYER_SOURCES else f"nn.{name}"), [a for a, _ in args], kw


def init_lines(op: str, local: str, init, target: str, param, indent: str) -> list:
    """Statements that give a parameter the spec's initialisation (``local`` empty: ``target`` is the
    parameter itself, an op's bare parameter)."""
    p = f"{target}.{local}" if local else target
    if isinstance(init, Initialiser):
        return [f"{indent}{init.torch_source(p, tuple(param.shape), param.fan_in, param.fan_out)}"]
    if isinstance(init, (list, tuple)):
        values = ", ".join(literal(float(v)) for v in init)
        shaped = ".view_as(" + p + ")" if len(param.shape) >= 2 else ""
        return [f"{indent}with torch.no_grad():",
                f"{indent}{INDENT}{p}.copy_(torch.tensor([{values}]){shaped})"]
    if init in ("zeros", "ones"):
        return [f"{indent}nn.init.{init}_({p})"]
    if len(param.shape) >= 2:
        if init == "kaiming_normal":
            return [f'{indent}nn.init.kaiming_normal_({p}, mode="fan_out", nonlinearity="relu")']
        if init == "kaiming_uniform":
            return [f'{indent}nn.init.kaiming_uniform_({p}, nonlinearity="relu")']
        if init in ("xavier_uniform", "xavier_normal"):
            return [f"{indent}nn.init.{init}_({p})"]
    fi, fo = max(param.fan_in, 1), max(param.fan_out, 1)
    if init == "kaiming_normal":
        return [f"{indent}nn.init.normal_({p}, std={math.sqrt(2.0 / fo)!r})"]
    if init == "kaiming_uniform":
        b = math.sqrt(6.0 / fi)
        return [f"{indent}nn.init.uniform_({p}, {-b!r}, {b!r})"]
    if init == "xavier_uniform":
        b = math.sqrt(6.0 / (fi + fo))
        return [f"{indent}nn.init.uniform_({p}, {-b!r}, {b!r})"]
    if init == "xavier_normal":
        return [f"{indent}nn.init.normal_({p}, std={math.sqrt(2.0 / (fi + fo))!r})"]
    return []


# ---- one class

class ClassWriter:
    def __init__(self, analysis: Analysis, cls: ClassDef, uses: set, hide_defaults: bool = False):
        self.a, self.cls, self.uses = analysis, cls, uses
        self.hide_defaults = hide_defaults
        self.g = analysis.graph
        self.items = cls.base.items
        self.seq_mode = False

    def x(self, j: int) -> dict:
        return {slot: self.cls.exprs[(j, slot)] for slot in self.items[j].slots}

    def data(self, j: int) -> dict:
        return self.g.data(self.items[j].nid)

    def low(self, j: int):
        """The lowering of item j when it is a layer (None for a child module)."""
        it = self.items[j]
        return lowering(self.data(j)["op"]) if it.unit is None and it.nid is not None else None

    def has_module(self, j: int) -> bool:
        it = self.items[j]
        if it.unit is not None:
            return True
        d = self.data(j)
        return self.low(j).module is not None and (self.seq_mode or bool(it.container) or bool(d["params"])
                                                   or not is_position(it.name))

    def inplace_ok(self, j: int) -> bool:
        """Whether layer j may overwrite its first operand (the rules of archdsl/backends/inplace.py)."""
        it = self.items[j]
        if it.unit is not None or it.nid is None or not it.inputs or not runs_inplace(self.data(j)["op"]):
            return False
        r = it.inputs[0]
        if r[0] != "it" or list(it.inputs).count(r) != 1 or r in {self._ref_of(n) for n in self.cls.base.outputs}:
            return False
        prod = self.items[r[1]]
        if prod.unit is not None or prod.nid is None or not may_overwrite(self.data(r[1])["op"]):
            return False
        return sum(list(o.inputs).count(r) for o in self.items) == 1

    def function_expr(self, j: int, args: list) -> str:
        """Layer j as an expression over its operands' variables (its function form)."""
        d = self.data(j)
        param = self.attr(self.items[j].name) if op_registry.get(d["op"]).bare else ""
        kept = {a: f"self.{n}" for a, n in self.kept.items()}
        x = {slot: e.renamed(kept) for slot, e in self.x(j).items()}
        text = self.low(j).text(Src(x, d["attrs"], args, [self.g.type_of(s) for s in d["inputs"]], param))
        for a, n in self.kept.items():
            if re.search(rf"\bself\.{n}\b", text):
                self.used.add(a)
        return text

    def parameter_lines(self, j: int, indent: str) -> list:
        """``self.<label> = nn.Parameter(...)`` for an op's bare parameter (scale's ``layer_scale``): filled
        with a constant initialiser's value, else empty and initialised by :meth:`init_statements`."""
        d = self.data(j)
        bare = op_registry.get(d["op"]).bare
        if not bare:
            return []
        p = self.g.params[d["params"][bare]]
        shape = E(self.x(j)["shape"])
        dtype = factory_dtype(self.g, self.items[j].nid)
        dt = f", dtype={dtype_source(dtype)}" if dtype is not None else ""
        if isinstance(p.init, Initialiser) and p.init.name == "constant":
            value = f"torch.full({shape}, {p.init['value']!r}{dt})"
        else:
            value = f"torch.empty({shape}{dt})"
        return self.assign(self.items[j].name, [f"nn.Parameter({value})"], indent, "register_parameter")

    def module_expr(self, j: int) -> str:
        it = self.items[j]
        if it.unit is not None:
            child = it.unit.cls
            args = []
            for p in child.params:
                e = self.cls.exprs[(j, p.name)]
                if p.kind == "flag":
                    if not is_const(e, False):
                        args.append(f"{p.name}={E(e)}")
                else:
                    args.append(E(e))
            return f"{child.name}({', '.join(args)})"
        d = self.data(j)
        low = self.low(j)
        ctor, args, kw = module_call(low.module, self.x(j), d["attrs"], len(self.g.data(d["inputs"][0])["shape"]))
        if low.inplace is not None and self.inplace_ok(j):
            kw = kw + ["inplace=True"]
        dtype = factory_dtype(self.g, self.items[j].nid)
        if dtype is not None:
            kw = kw + [f"dtype={dtype_source(dtype)}"]
        return f"{ctor}({', '.join(args + kw)})"

    # -- __init__
    def loop_init(self, ind: str) -> list:
        """A dense block's layers, added in a loop under their spec names."""
        it = self.items[0]
        child = it.unit.cls
        args = []
        for p in child.params:
            e = self.cls.exprs[(0, ("row", p.name))]
            if p.kind == "flag":
                if not is_const(e, False):
                    args.append(f"{p.name}={E(e)}")
            else:
                args.append(E(e))
        count = E(self.cls.exprs[(0, "num_layers")])
        name = f'f"{it.stem}{{i + {it.offset}}}"' if it.offset else f'f"{it.stem}{{i}}"'
        inner = ind + INDENT
        body = call(f"self.add_module({name}, {child.name}(", args, inner, ")")
        if len(body) > 1:
            body = call("self.add_module(", [name, f"{child.name}({', '.join(args)})"], inner)
            if max(map(len, body)) > WIDTH:
                body = [f"{inner}self.add_module(", f"{inner}{INDENT}{name},",
                        *call(f"{child.name}(", args, inner + INDENT, ","), f"{inner})"]
        return [f"{ind}for i in range({count}):", *body]

    def tree(self) -> list:
        """Top-level entries in order: ("item", j) or ("seq", name, [entries])."""
        root: list = []
        for j, it in enumerate(self.items):
            level = root
            for depth, name in enumerate(it.container):
                if level and level[-1][0] == "seq" and level[-1][1] == name:
                    level = level[-1][2]
                else:
                    node = ("seq", name, [])
                    level.append(node)
                    level = node[2]
            level.append(("item", j))
        return root

    def seq_expr(self, entries: list, indent: str, labels: tuple) -> list:
        """``nn.Sequential(...)`` lines (the first without indent) for the inline sequence ``labels``."""
        names = [self.items[e[1]].name if e[0] == "item" else e[1] for e in entries]
        positional = names == [str(i) for i in range(len(names))]
        # a nested sequence sits one level in (a positional member) or as a pair's second item
        nested = indent + INDENT if positional else indent + INDENT * 4
        exprs = []
        for e, n in zip(entries, names):
            if e[0] == "item":
                exprs.append(self.module_expr(e[1]))
            else:
                exprs.append("\n".join(self.seq_expr(e[2], nested, labels + (n,))))
        inner = indent + INDENT
        lines = ["nn.Sequential("]
        if positional:
            i = 0
            while i < len(exprs):
                k = i
                while k < len(exprs) and exprs[k] == exprs[i] and "\n" not in exprs[i]:
                    k += 1
                if k - i >= 3:
                    lines.append(f"{inner}*[{exprs[i]} for _ in range({k - i})],")
                    i = k
                    continue
                lines.extend(self._arg_lines(exprs[i], inner))
                i += 1
        else:
            self.uses.add("OrderedDict")
            lines = ["nn.Sequential(", f"{inner}OrderedDict("]
            lines.append(f"{inner}{INDENT}[")
            for n, ex in zip(names, exprs):
                n = string_literal(self.names[labels + (n,)])
                deeper = inner + INDENT * 2
                sub = ex.split("\n")
                if len(sub) > 1:
                    lines += [f"{deeper}(", f"{deeper}{INDENT}{n},", f"{deeper}{INDENT}{sub[0]}"]
                if len(sub) == 1:
                    one = f"{deeper}({n}, {ex}),"
                    if len(one) <= WIDTH:
                        lines.append(one)
                    else:
                        lines.append(f"{deeper}(")
                        lines.append(f"{deeper}{INDENT}{n},")
                        lines.extend(call(ex[:ex.index("(") + 1], _split_args(ex), deeper + INDENT, ",",
                                          trailing=False))
                        lines.append(f"{deeper}),")
                else:
                    lines += [*sub[1:-1], sub[-1] + ",", f"{deeper}),"]
            lines.append(f"{inner}{INDENT}]")
            lines.append(f"{inner}),")
        lines.append(f"{indent})")
        return lines

    def _arg_lines(self, ex: str, inner: str) -> list:
        if "\n" in ex:
            sub = ex.split("\n")
            return [inner + sub[0], *sub[1:-1], sub[-1] + ","]
        if len(inner + ex + ",") <= WIDTH:
            return [f"{inner}{ex},"]
        return call(ex[:ex.index("(") + 1], _split_args(ex), inner, ",")

    def plan_names(self) -> None:
        """Where each child lives (``self.names``: label path -> its name in ``_modules``) and which
        attributes keep constructor arguments (``self.kept``: argument -> attribute).

        A child is stored under its label, except where the label is a member of nn.Module
        (``train``, ``training``, ``to``): then under an attribute of its own (``train_``), and
        :func:`rename_keys` gives its state_dict keys the label (``self.renames``: (stored path,
        label path)). Labels that are no Python identifiers (``block1-0``, ``if``, ``0``) are
        reached with ``add_module``/``getattr``. Arguments that ``forward`` reads are kept as
        attributes named after them, unless a child or nn.Module has that name.
        """
        self.names, self.positional, self.renames = {}, {}, []

        def level(entries, labels, stored):
            names = [self.items[e[1]].name if e[0] == "item" else e[1] for e in entries]
            self.positional[labels] = names == [str(i) for i in range(len(names))]
            taken = set(names)
            for e, name in zip(entries, names):
                if not labels and e[0] == "item" and not self.has_module(e[1]) \
                        and not op_registry.get(self.data(e[1])["op"]).bare:
                    continue
                act = name
                if name in NN_MEMBERS:
                    base = identifier(name)
                    act = _fresh(base if base != name else name + "_", taken)
                    taken.add(act)
                    self.renames.append((".".join(stored + (act,)), ".".join(labels + (name,))))
                self.names[labels + (name,)] = act
                if e[0] == "seq":
                    level(e[2], labels + (name,), stored + (act,))
        level(self.tree(), (), ())
        top = {k[0] for k in self.names} | {v for k, v in self.names.items() if len(k) == 1}
        self.kept = {p.name: _fresh(p.name, top) for p in self.cls.params if p.kind != "flag"}
        self.used = set()

    @staticmethod
    def access(owner: str, name: str, index: bool = False) -> str:
        """The child ``name`` of the module ``owner`` (``owner[i]`` with ``index``, in a positional
        nn.Sequential)."""
        if index and is_position(name):
            return f"{owner}[{name}]"
        return f"{owner}.{name}" if is_attribute(name) else f"getattr({owner}, {string_literal(name)})"

    def attr(self, name: str) -> str:
        return self.access("self", self.names.get((name,), name))

    def assign(self, name: str, lines: list, indent: str, method: str = "add_module") -> list:
        """``self.name = <expr lines>`` (``add_module`` for names that are not attributes)."""
        name = self.names.get((name,), name)
        if is_attribute(name):
            head = f"{indent}self.{name} = "
            tail = ""
        else:
            head = f"{indent}self.{method}({string_literal(name)}, "
            tail = ")"
        if len(lines) == 1:
            one = head + lines[0] + tail
            if len(one) <= WIDTH:
                return [one]
            ex = lines[0]
            return call(head[len(indent):] + ex[:ex.index("(") + 1], _split_args(ex), indent, tail)
        return [head + lines[0], *lines[1:-1], lines[-1] + tail]

    def init_body(self) -> list:
        ind = INDENT * 2
        out = []
        for entry in self.tree():
            name = self.items[entry[1]].name if entry[0] == "item" else entry[1]
            if entry[0] == "item" and not self.has_module(entry[1]):
                flag = self.cls.optional.get(name)
                body = self.parameter_lines(entry[1], ind + INDENT if flag else ind)
                if flag and body:
                    out += [f"{ind}if {flag}:", *body, f"{ind}else:",
                            *self.assign(name, ["None"], ind + INDENT, "register_parameter")]
                else:
                    out.extend(body)
                continue
            flag = self.cls.optional.get(name)
            at = ind + INDENT if flag else ind
            if entry[0] == "item":
                body = self.assign(name, [self.module_expr(entry[1])], at)
            else:
                body = self.assign(name, self.seq_expr(entry[2], at, (name,)), at)
            if flag:
                out.append(f"{ind}if {flag}:")
                out.extend(body)
                out.append(f"{ind}else:")
                out.extend(self.assign(name, ["None"], ind + INDENT))
            else:
                out.extend(body)
        out.extend(self.init_statements(ind))
        return out

    def target(self, j: int) -> str:
        it = self.items[j]
        labels = it.container + (it.name,)
        path = self.attr(labels[0])
        for k in range(1, len(labels)):
            path = self.access(path, self.names[labels[:k + 1]], self.positional[labels[:k]])
        return path

    def init_statements(self, ind: str) -> list:
        out = []
        for j, it in enumerate(self.items):
            if it.unit is not None:
                continue
            d = self.data(j)
            for local, pname in sorted(d["params"].items()):
                p = self.g.params[pname]
                if p.init == self.low(j).default_init(local):
                    continue
                bare = op_registry.get(d["op"]).bare == local
                if bare and isinstance(p.init, Initialiser) and p.init.name == "constant":
                    continue                        # written as torch.full(...) by parameter_lines
                flag = self.cls.optional.get(it.entity)
                lines = init_lines(d["op"], "" if bare else local, p.init, self.target(j), p,
                                   ind + (INDENT if flag else ""))
                if flag and lines:
                    out.append(f"{ind}if {self.attr(it.entity)} is not None:")
                out.extend(lines)
        return out

    # -- forward
    def steps(self) -> list:
        """Forward steps: (kind, first item, last item, name) with kind "item" or "seq"."""
        out = []
        for entry in self.tree():
            if entry[0] == "item":
                out.append(("item", entry[1], entry[1], self.items[entry[1]].name))
            else:
                js = _flat(entry)
                out.append(("seq", js[0], js[-1], entry[1]))
        return out

    def forward_body(self, in_names: list) -> list:
        ind = INDENT * 2
        base = self.cls.base
        steps = self.steps()
        var: dict = {("in", k): n for k, n in enumerate(in_names)}
        produced = {}
        for s, (kind, first, last, name) in enumerate(steps):
            if kind == "item":
                for o in range(len(self.items[first].outputs)):
                    produced[("it", first, o)] = s
            else:
                produced[("it", last, 0)] = s
        step_inputs = []
        for kind, first, last, name in steps:
            step_inputs.append(list(self.items[first].inputs))
        # the results the class returns
        outs = []
        for nid in base.outputs:
            outs.append(self._ref_of(nid))
        consumers: dict = {}
        for s, ins in enumerate(step_inputs):
            for r in ins:
                consumers.setdefault(r, []).append(s)
        last_use = {r: max(ss) for r, ss in consumers.items()}
        for r in outs:
            last_use[r] = len(steps)
        lines = []
        live: dict = {n: r for r, n in var.items()}
        counter = [1]

        def fresh(prefer: list) -> str:
            for n in prefer:
                if n and n not in live and n not in ("self",):
                    return n
            while True:
                counter[0] += 1
                n = f"out{counter[0]}"
                if n not in live:
                    return n

        def release(s):
            for n, r in list(live.items()):
                if last_use.get(r, -1) <= s and r not in outs:
                    del live[n]

        for s, (kind, first, last, name) in enumerate(steps):
            ins = step_inputs[s]
            args = [var[r] for r in ins]
            flag = self.cls.optional.get(name)
            it = self.items[first]
            n_out = len(it.outputs) if kind == "item" else 1
            out_ref = ("it", first, 0) if kind == "item" else ("it", last, 0)
            low = self.low(first) if kind == "item" else None
            if kind == "seq" or self.has_module(first):
                expr = f"{self.attr(name)}({', '.join(args)})"
            else:
                expr = self.function_expr(first, args)
                if low.inplace is not None and low.inplace.augmented is None and self.inplace_ok(first):
                    expr = low.inplace.text(args)
            if low is not None and low.alias and not flag:
                var[out_ref] = args[0]
                live[args[0]] = out_ref
                continue
            if n_out > 1:
                names = [fresh(["out"]) for _ in range(n_out)]
                for o, n in enumerate(names):
                    var[("it", first, o)] = n
                    live[n] = ("it", first, o)
                lines.extend(self._stmt(", ".join(names), expr, ind))
                release(s)
                continue
            generic = {"x", "out"} | set(in_names)
            reuse = None
            role = self._role(s, steps, step_inputs, out_ref)
            if role and not flag:
                n = fresh([role, "out"])
                lines.extend(self._stmt(n, expr, ind))
                var[out_ref] = n
                release(s)
                live[n] = out_ref
                continue
            if not flag and ins:
                r = ins[0]
                if len(consumers.get(r, [])) == 1 and r not in outs and (
                        len(set(ins)) == 1 or var[r] in generic or var[r].startswith("out")):
                    reuse = var[r]
            if flag:
                users = [t for t in range(s + 1, len(steps)) if out_ref in step_inputs[t]]
                skip = next((u.skip_name for t in users if steps[t][0] == "item"
                             and (u := self.low(steps[t][1])) is not None and u.skip_name), None)
                n = fresh([skip or identifier(name), "out"])
                lines.append(f"{ind}{n} = {args[0]}")
                lines.append(f"{ind}if {self.attr(name)} is not None:")
                lines.extend(self._stmt(n, expr, ind + INDENT))
            else:
                if reuse:
                    n = reuse
                else:
                    label = identifier(name) if not is_position(name) else None
                    fan_out = bool(ins) and len(consumers.get(ins[0], [])) > 1
                    module = it.unit is not None or kind == "seq"
                    prefer = [label, "out"] if fan_out and module else ["out", label]
                    n = fresh(prefer)
                if low is not None and low.inplace is not None and low.inplace.augmented and n == args[0] \
                        and self.inplace_ok(first):
                    lines.append(f"{ind}{n} {low.inplace.augmented} {low.inplace.text(args)}")
                else:
                    lines.extend(self._stmt(n, expr, ind))
            var[out_ref] = n
            release(s)
            live[n] = out_ref
        ret = [var[r] for r in outs]
        last = lines[-1] if lines else ""
        if len(ret) == 1 and lines and last.startswith(f"{ind}{ret[0]} = ") and "\n" not in last \
                and self._single_assignment(lines, ret[0]):
            expr = last[len(f"{ind}{ret[0]} = "):]
            lines[-1] = f"{ind}return {expr}"
            if len(lines[-1]) > WIDTH:
                lines[-1:] = self._stmt(None, expr, ind)
        else:
            lines.append(f"{ind}return {', '.join(ret)}")
        return lines

    def _role(self, s, steps, step_inputs, out_ref) -> str | None:
        """Conventional names (a spatial transformer's ``theta`` and ``grid``: ``result_name`` of the
        layer, or ``operand_name`` of the one layer that uses it)."""
        kind, first = steps[s][0], steps[s][1]
        if kind != "item" or self.items[first].unit is not None:
            return None
        if self.low(first).result_name:
            return self.low(first).result_name
        users = [t for t in range(s + 1, len(steps)) if out_ref in step_inputs[t]]
        if len(users) == 1 and steps[users[0]][0] == "item":
            user = self.low(steps[users[0]][1])
            return user.operand_name if user is not None else None
        return None

    @staticmethod
    def _single_assignment(lines, name) -> bool:
        return not lines[-1].rstrip().endswith("(")

    def _stmt(self, name, expr: str, ind: str) -> list:
        head = f"{name} = " if name else "return "
        one = f"{ind}{head}{expr}"
        if len(one) <= WIDTH or not _one_call(expr):
            return [one]
        return call(head + expr[:expr.index("(") + 1], _split_args(expr), ind)

    def _ref_of(self, nid: int):
        base = self.cls.base
        if nid in base.inputs:
            return ("in", base.inputs.index(nid))
        for j, it in enumerate(self.items):
            if nid in it.outputs:
                if it.container:
                    return ("it", j, 0)
                return ("it", j, it.outputs.index(nid))
        raise AssertionError(nid)

    # -- the whole class
    def write(self) -> list:
        cls = self.cls
        if cls.kind == "model":
            in_names = []
            for nid in cls.base.inputs:
                n = identifier(self.g.data(nid)["attrs"].get("name", "x"))
                in_names.append(n if n not in in_names else f"{n}{len(in_names) + 1}")
        else:
            k = len(cls.base.inputs)
            in_names = ["x"] if k == 1 else [f"x{i + 1}" for i in range(k)]
        sequential = self.seq_mode = self._is_named_chain()
        self.plan_names()
        forward = [] if sequential else self.forward_lines(in_names)
        base_cls = "nn.Sequential" if sequential else "nn.Module"
        lines = [f"class {cls.name}({base_cls}):"]
        lines.append(f'{INDENT}"""{self.docstring()}"""')
        lines.append("")
        params = []
        for p in cls.params:
            ann = {"int": "int", "float": "float", "bool": "bool", "str": "str"}.get(p.annotation, p.annotation)
            default = "..." if self.hide_defaults else literal(p.default)
            params.append(f"{p.name}: {ann}" + ("" if p.default is ... else f" = {default}"))
        lines.extend(call("def __init__(", ["self"] + params, INDENT, " -> None:"))
        names = [it.name for it in self.items]
        if sequential and names == [str(i) for i in range(len(names))]:
            lines.append(f"{INDENT * 2}super().__init__(")
            for j in range(len(self.items)):
                lines.extend(self._arg_lines(self.module_expr(j), INDENT * 3))
            lines.append(f"{INDENT * 2})")
            lines.extend(self.kept_lines(INDENT * 2))
            lines.extend(self.init_statements(INDENT * 2))
        elif len(self.items) == 1 and self.items[0].rows:
            lines.append(f"{INDENT * 2}super().__init__()")
            lines.extend(self.kept_lines(INDENT * 2))
            lines.extend(self.loop_init(INDENT * 2))
        else:
            lines.append(f"{INDENT * 2}super().__init__()")
            lines.extend(self.kept_lines(INDENT * 2))
            lines.extend(self.init_body())
        return lines + forward

    def forward_lines(self, in_names: list) -> list:
        lines = [""]
        outs = len(self.cls.base.outputs)
        ret = "Tensor" if outs == 1 else "tuple[" + ", ".join(["Tensor"] * outs) + "]"
        lines.extend(call("def forward(", ["self"] + [f"{n}: Tensor" for n in in_names], INDENT, f" -> {ret}:"))
        if len(self.items) == 1 and self.items[0].rows:
            ind = INDENT * 2
            lines += [f"{ind}features = [{in_names[0]}]",
                      f"{ind}for layer in self.children():",
                      f"{ind}{INDENT}features.append(layer(torch.cat(features, 1)))",
                      f"{ind}return torch.cat(features, 1)"]
        else:
            lines.extend(self.forward_body(in_names))
        return lines

    def kept_lines(self, ind: str) -> list:
        """``self.shape = shape`` for the arguments ``forward`` reads; the hooks that give children
        stored under other names (``train_``) their labels as state_dict keys."""
        out = [f"{ind}self.{self.kept[p.name]} = {p.name}" for p in self.cls.params if p.name in self.used]
        if self.renames:
            self.uses.add("rename_keys")
            pairs = sorted(self.renames, key=lambda r: -r[0].count("."))
            out.extend(call("spec_names(", ["self", _dict_text(pairs, ind + INDENT)], ind))
        return out

    def _is_named_chain(self) -> bool:
        """A block whose body is a chain of named modules is written as an ``nn.Sequential``."""
        cls = self.cls
        if cls.kind == "model" or cls.optional or len(cls.base.inputs) != 1 or len(cls.base.outputs) != 1:
            return False
        if any(it.container for it in self.items) or len(self.items) < 2:
            return False
        prev = ("in", 0)
        for j, it in enumerate(self.items):
            if it.inputs != (prev,) or len(it.outputs) != 1:
                return False
            if it.unit is None and self.low(j).module is None:
                return False
            if it.unit is not None and (len(it.unit.inputs) != 1 or len(it.unit.outputs) != 1):
                return False
            prev = ("it", j, 0)
        names = [it.name for it in self.items]
        positional = names == [str(i) for i in range(len(names))]
        return positional or not any(is_position(n) for n in names)

    def docstring(self) -> str:
        cls = self.cls
        if cls.kind == "model":
            return f"The model ``{cls.spec_name}``."
        if cls.kind == "block":
            n = len(cls.insts)
            return f"Block ``{cls.spec_name}`` of the spec ({n} instance{'s' if n != 1 else ''})."
        return f"A labelled ``{cls.kind}`` of the spec."


def _dict_text(pairs: list, indent: str) -> str:
    """``{"a": "b", ...}``, or the dict one entry per line (black's layout) where that is too long."""
    items = [f"{string_literal(a)}: {string_literal(b)}" for a, b in pairs]
    one = "{" + ", ".join(items) + "}"
    if len(indent + one) + 1 <= WIDTH:
        return one
    return "\n".join(["{", *[f"{indent}{INDENT}{i}," for i in items], indent + "}"])


def _flat(entry) -> list:
    out = []
    for e in entry[2]:
        out.extend([e[1]] if e[0] == "item" else _flat(e))
    return out


def _one_call(expr: str) -> bool:
    """Whether ``expr`` is one call ``f(...)`` whose first parenthesis closes at the end (so that its
    arguments can be laid out one per line); ``f(a).to(b)`` and ``a + f(b)`` are not."""
    if "(" not in expr or not expr.endswith(")"):
        return False
    depth = 0
    for i in range(expr.index("("), len(expr)):
        depth += {"(": 1, ")": -1}.get(expr[i], 0)
        if depth == 0:
            return i == len(expr) - 1
    return False


def _split_args(expr: str) -> list:
    """The top-level arguments of ``f(a, b(c, d), e)``."""
    inner = expr[expr.index("(") + 1:expr.rindex(")")]
    out, depth, cur = [], 0, ""
    quote = None
    for ch in inner:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


# ---- the file

def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def doc_text(text: str) -> str:
    """``text`` made safe inside a triple-quoted docstring: no quote, backslash or control character
    can end the string or start an escape (a file name such as ``x\"\"\";import os;\"\"\"`` stays text)."""
    out = []
    for ch in str(text):
        if ch == '"' or ch == "\\" or not ch.isprintable():
            out.append(ch.encode("unicode_escape").decode("ascii").replace('"', "\\x22") if ch != "\\"
                       else "\\x5c")
        else:
            out.append(ch)
    return "".join(out)


RENAME_SOURCE = '''def spec_names(module: nn.Module, names: dict) -> None:
    """Give the children that ``module`` stores at the attributes ``names`` maps from their spec
    labels as state_dict keys (``train_`` -> ``train``: the label is an nn.Module member)."""
    back = {label: name for name, label in names.items()}
    module.register_state_dict_post_hook(partial(rename_keys, names))
    module.register_load_state_dict_pre_hook(partial(rename_keys, back))


def rename_keys(names: dict, module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """State-dict hook: rename the keys (and metadata) under ``prefix`` whose path starts with a
    key of ``names`` to start with its value instead, in place and in order."""
    for table in (state_dict, getattr(state_dict, "_metadata", {})):
        items = []
        for key, value in table.items():
            rest = key[len(prefix) :]
            for old, new in names.items():
                if key.startswith(prefix) and (rest == old or rest.startswith(old + ".")):
                    key = prefix + new + rest[len(old) :]
                    break
            items.append((key, value))
        table.clear()
        table.update(items)'''


def class_texts(analysis: Analysis, uses: set, hide_defaults: bool = False) -> dict:
    """``{class name: its text}`` in file order, the model's class last (``hide_defaults``: its
    defaults written ``...``)."""
    out = {}
    for cls in analysis.classes:
        if cls.kind != "model":
            out[cls.name] = "\n".join(ClassWriter(analysis, cls, uses).write())
    top = next(c for c in analysis.classes if c.kind == "model")
    out[top.name] = "\n".join(ClassWriter(analysis, top, uses, hide_defaults).write())
    return out


def _layers_used(text: str) -> list:
    """The classes of :mod:`.torch_layers` that ``text`` uses, with those their own code uses, in
    the order of that file."""
    def uses(code: str) -> set:
        return {name for name in LAYER_SOURCES if re.search(rf"(?<![\w.]){name}[(.]", code)}

    used, todo = set(), uses(text)
    while todo:
        used |= todo
        todo = set().union(*(uses(LAYER_SOURCES[name]) for name in todo)) - used
    return [name for name in LAYER_SOURCES if name in used]


def generate_source(graph: Graph, weights_file: str | None = None) -> str:
    """The standalone PyTorch source of ``graph`` (deterministic).

    With ``weights_file`` (a file name beside the source) the text also documents that
    file and defines ``load_weights(model, path=None)``, which loads it strictly."""
    analysis = sound_analysis(graph, lambda a: class_texts(a, set(), hide_defaults=True))
    uses: set = set()
    text = "\n\n\n".join(class_texts(analysis, uses).values()) + "\n\n"
    top = next(c for c in analysis.classes if c.kind == "model")
    spec = graph.meta.get("file", "<spec>")
    if Path(spec).is_absolute():
        spec = Path(spec).name
    model = graph.meta.get("model", graph.name)
    ins = ", ".join(f"{graph.data(n)['attrs'].get('name', 'x')} {_shape(graph.data(n)['shape'])}"
                    for n in graph.inputs)
    outs = ", ".join(_shape(graph.data(n)["shape"]) for n in graph.outputs)
    head = [
        f'"""PyTorch model ``{doc_text(model)}``, generated by archdsl from {doc_text(spec)}.',
        "",
        f"Build it with ``{top.name}()``; the constructor's defaults are the values the",
        "spec was compiled with. Input: " + ins + "; output: " + outs + ".",
    ]
    if weights_file is not None:
        head += ["", f"Its weights are in ``{doc_text(weights_file)}`` beside this file (a state_dict):",
                 f"``model = load_weights({top.name}())`` loads them."]
    head.append('"""')
    imports = []
    if "OrderedDict" in uses:
        imports.append("from collections import OrderedDict")
    if "rename_keys" in uses:
        imports.append("from functools import partial")
        text = RENAME_SOURCE + "\n\n\n" + text
    if imports:
        imports.append("")
    used = _layers_used(text)
    if used:                                   # torch.nn lacks these layers: their classes come first
        text = "\n\n\n".join(LAYER_SOURCES[name] for name in used) + "\n\n\n" + text
    imports.append("import torch")
    if "F." in text:
        imports.append("import torch.nn.functional as F")
    imports.append("from torch import Tensor, nn")
    if weights_file is not None:
        text = text.rstrip("\n") + "\n\n\n" + "\n".join([
            f"WEIGHTS = {weights_file!r}",
            "",
            "",
            "def load_weights(model: nn.Module, path: str | None = None) -> nn.Module:",
            '    """Load the weights archc wrote beside this file (or those at ``path``) into ``model``, strictly."""',
            "    import os",
            "    if path is None:",
            "        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), WEIGHTS)",
            '    if path.endswith(".safetensors"):',
            "        from safetensors.torch import load_file",
            "        state = load_file(path)",
            "    else:",
            '        state = torch.load(path, map_location="cpu", weights_only=True)',
            "    model.load_state_dict(state)",
            "    return model",
        ])
    body = "\n".join(head + [""] + imports + ["", "", ""]) + text
    return body.rstrip("\n") + "\n"


def weights_path(path, fmt: str = "pt") -> Path:
    """Where the weights of a written source or spec go: its stem with ``.pt`` or ``.safetensors``
    (``STEM.weights.pt`` where the file itself ends in that suffix)."""
    path, suffix = Path(path), "." + fmt
    return path.with_name(path.stem + ".weights" + suffix) if path.suffix == suffix else path.with_suffix(suffix)


def write_source(graph: Graph, path, weights: bool = False, fmt: str = "pt") -> Path | None:
    """Write the source to ``path``; with ``weights``, the IR's weights as a state_dict beside it
    (``weights_path(path, fmt)``, read back by the generated ``load_weights``). Returns that file, if any."""
    path = Path(path)
    if not weights:
        path.write_text(generate_source(graph))
        return None
    from .weights import save_weights
    target = weights_path(path, fmt)
    text = generate_source(graph, target.name)
    save_weights(graph, target)
    path.write_text(text)
    return target


def load_source(text: str, name: str = "archdsl_generated"):
    """The generated source ``text`` as a Python module, compiled in memory.

    No file is written or read, so there is no bytecode cache (``__pycache__``) or source file that
    anyone else could plant or replace (issue 15): the module runs exactly the code object compiled
    from ``text``, which this process just generated. The module is registered in ``sys.modules``
    under a name from the text's hash (so its classes pickle and are reused for the same text) and
    its lines in ``linecache`` (tracebacks and ``inspect.getsource`` show them)."""
    modname = f"{name}_{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    cached = sys.modules.get(modname)
    if cached is not None and getattr(cached, "__archdsl_source__", None) == text:
        return cached
    filename = f"<archdsl-generated {modname}>"
    code = compile(text, filename, "exec", dont_inherit=True)
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    module = types.ModuleType(modname, _top_docstring(text))
    module.__file__ = filename
    module.__archdsl_source__ = text
    sys.modules[modname] = module
    try:
        exec(code, module.__dict__)          # noqa: S102 - our generated code, never spec text
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def _top_docstring(text: str) -> str | None:
    return text.split('"""')[1] if text.startswith('"""') else None


def build_module(graph: Graph, load_weights: bool = True):
    """The generated source's model class, instantiated, with the IR's weights.

    With weights the class is instantiated on the meta device (nothing is allocated or
    initialised) and the IR's arrays are assigned as its parameters and buffers."""
    import torch
    from .torch_module import check_sizes
    check_sizes(graph)
    text = generate_source(graph)
    cls = getattr(load_source(text), _top_class_name(text))
    if load_weights:
        target = torch.get_default_device()
        with torch.device("meta"):
            model = cls()
        model.load_state_dict(ir_state(graph, target), strict=True, assign=True)
    else:
        model = cls()
    model.archdsl_source = text
    return model


def _top_class_name(text: str) -> str:
    for line in text.split("\n"):
        if line.startswith("Build it with ``"):
            return line[len("Build it with ``"):line.index("()")]
    raise AssertionError("no model class in the generated source")
