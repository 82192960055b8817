"""Text: the bodies of the model and of the block definitions as spec lines.

:class:`Renderer` writes a tree (see :mod:`.structure`) with the texts grouping
chose for its holes: layers, constructs, calls, and runs of calls of one block
as comprehensions (``[blk(...) for j in range(n)]``).
"""
from __future__ import annotations

import re

from ...ir import ops as registry
from .grouping import Group, Grouper, body_vars
from .structure import MISSING, Hole, Lit
from .tokens import KEYWORDS, language_names, value_text

GAP_TEXT = "[identity for _ in []]"


def _parens(args: list) -> str:
    return f"({', '.join(args)})" if args else ""


class Renderer:
    """Spec lines for the trees of one grouping."""

    def __init__(self, grouper: Grouper):
        self.by_id = {g.id: g for g in grouper.groups}

    def body(self, tree, resolved: dict, flags: dict, params=()) -> list[str]:
        self.resolved, self.flags = resolved, flags
        self.names = set(params) | body_vars(tree)
        return self.statements(tree, ())

    def statements(self, tree, prefix: tuple) -> list[str]:
        lines = []
        for k, st in enumerate(tree):
            path = prefix + (k,)
            tag = st[0]
            if tag == "@if":             # the variants of a block: if c0 { ... } elif c1 { ... } else { ... }
                conds, bodies = st[1], st[2]
                for j, sub in enumerate(bodies):
                    head = "if" if j == 0 else "} elif" if j < len(conds) else "} else"
                    lines.append(f"{head} {conds[j]} {{" if j < len(conds) else f"{head} {{")
                    lines.extend(self.statements(sub, path + (2, j)))
                lines.append("}")
            elif tag == "@input":
                lines.append(f"input {st[1]}" + (f": {value_text(list(st[2]))}" if st[2] is not None else ""))
            elif tag == "@assign":
                lines.append(f"{', '.join(st[1])} = {self.source(st[2])} -> "
                             + self.chain(st[3], path + (3,)))
            else:
                items = []
                for j, item in enumerate(st[1]):
                    if item[0] == "@var":
                        items.append(item[1])
                    else:
                        items.append(f"{self.source(item[1])} -> {self.chain(item[2], path + (1, j, 2))}")
                lines.append("output " + ", ".join(items))
        return lines

    @staticmethod
    def source(names) -> str:
        return names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"

    def chain(self, layers, path) -> str:
        return " -> ".join(self.layer(x, path + (i,)) for i, x in enumerate(layers))

    def hole(self, h, path):
        if path in self.resolved:
            return self.resolved[path]
        return value_text(h.value) if h.value is not MISSING else None

    def value(self, v, path):
        if isinstance(v, Hole):
            return self.hole(v, path)
        if isinstance(v, Lit):
            return value_text(v.value)
        if isinstance(v, tuple) and v and v[0] in ("@list", "@pair"):
            return "[" + ", ".join(self.value(x, path + (i,)) for i, x in enumerate(v) if i) + "]"
        raise AssertionError(v)   # pragma: no cover

    @staticmethod
    def lab(label) -> str:
        return f"{label}: " if label else ""

    def layer(self, t, path) -> str:
        tag = t[0]
        if tag == "@gap":
            return GAP_TEXT
        if tag == "@op":
            return self.lab(t[1]) + t[2] + self.op_args(t[2], t[3], path + (3,))
        if tag == "@callg":
            return self.lab(t[1]) + self.call(t, path)
        if tag == "@seq":
            body = t[2]
            comp = self.comprehension(body, path + (2,))
            if comp is not None:
                return self.lab(t[1]) + comp
            return self.lab(t[1]) + "[" + self.chain(body, path + (2,)) + "]"
        if tag == "@res":
            text = self.lab(t[1]) + "residual {\n" + self.chain(t[2], path + (2,)) + "\n}"
            if t[3] is not None:
                cond = f" if {self.flags[path]}" if path in self.flags else ""
                text += f" shortcut{cond} {{\n" + self.chain(t[3], path + (3,)) + "\n}"
            return text
        if tag == "@par":
            opts = '(merge="add")' if t[2] == "add" else ""
            branches = "\n".join(self.chain(b, path + (3, i)) for i, b in enumerate(t[3]))
            return self.lab(t[1]) + f"parallel{opts} {{\n{branches}\n}}"
        if tag == "@dense":
            layers = self.comprehension(t[2], path + (2,), dense=True) \
                or "\n".join(self.chain(b, path + (2, i)) for i, b in enumerate(t[2]))
            return self.lab(t[1]) + f"dense {{\n{layers}\n}}"
        if tag == "@stn":
            opts = []
            if t[3] is not None:
                opts.append("size=[" + ", ".join(self.hole(h, path + (3, i)) for i, h in enumerate(t[3])) + "]")
            if t[4]:
                opts.append("align_corners=true")
            head = f"stn({', '.join(opts)})" if opts else "stn"
            return self.lab(t[1]) + head + " {\n" + self.chain(t[2], path + (2,)) + "\n}"
        raise AssertionError(tag)   # pragma: no cover

    def op_args(self, op: str, args, path) -> str:
        opdef = registry.get(op)
        specs = {a.name: a for a in opdef.args}
        texts = {name: self.value(v, path + (i, 1)) for i, (name, v) in enumerate(args)}
        positional, keywords = [], []
        single = len(opdef.args) == 1
        for name, _ in args:
            arg = specs[name]
            text = texts[name]
            if not arg.required:
                if text == value_text(arg.default) or (op in ("maxpool", "avgpool") and name == "stride"
                                                       and text == texts.get("kernel_size")):
                    continue
            if arg.required or (single and not keywords):
                positional.append(text)
            else:
                keywords.append(f"{name}={text}")
        return _parens(positional + keywords)

    @staticmethod
    def call_text(gr: Group, texts) -> str:
        """A call of ``gr`` with ``texts``, (parameter, text) in order: the required ones by position, the
        optional ones by name where they are not at their default."""
        positional = [text for p, text in texts if not p.optional]
        keywords = [f"{p.name}={text}" for p, text in texts if p.optional and text != p.default]
        return gr.name + _parens(positional + keywords)

    def call(self, t, path) -> str:
        gr = self.by_id[t[2]]
        texts = []
        for i, (pname, h) in enumerate(t[3]):
            p = gr.param(pname)
            text = self.hole(h, path + (3, i, 1))
            texts.append((p, p.default if text is None else text))
        return self.call_text(gr, texts)

    def comprehension(self, items, path, dense: bool = False) -> str | None:
        """``[blk(...) for j in range(n)]`` (or a dense item ``lbl{j + 1}: blk(...) for j in range(n)``) for a
        run of calls of one block, unlabelled or labelled ``prefix1``, ``prefix2``...; None where the run is
        not one, or where writing the calls out is shorter."""
        if dense:
            if any(len(x) != 1 for x in items):
                return None
            items = [x[0] for x in items]
            paths = [path + (i, 0) for i in range(len(items))]
        else:
            paths = [path + (i,) for i in range(len(items))]
        if len(items) < 2 or any(x[0] != "@callg" for x in items) or len({x[2] for x in items}) != 1:
            return None
        gr = self.by_id[items[0][2]]
        avoid = self.names | language_names() | {gr.name}
        var = next(v for v in ["j", "k", "n"] + [f"j{i}" for i in range(1, 1000)] if v not in avoid)
        labels = [x[1] for x in items]
        if all(lab is None for lab in labels):
            if dense:
                return None
            head = ""
        else:
            parts = [re.fullmatch(r"([A-Za-z_][A-Za-z_0-9]*?)(0|[1-9][0-9]*)", lab or "") for lab in labels]
            if any(m is None for m in parts) or len({m.group(1) for m in parts}) != 1 \
                    or parts[0].group(1) in KEYWORDS:
                return None
            first = int(parts[0].group(2))
            if [int(m.group(2)) for m in parts] != list(range(first, first + len(items))):
                return None
            head = f"{parts[0].group(1)}{{{var}{f' + {first}' if first else ''}}}: "
        columns = []
        for i, (pname, _) in enumerate(items[0][3]):
            p = gr.param(pname)
            texts = []
            for call, cpath in zip(items, paths):
                t = self.hole(call[3][i][1], cpath + (3, i, 1))
                texts.append(p.default if t is None else t)
            if all(t == texts[0] for t in texts):
                text = texts[0]
            elif all(t == texts[1] for t in texts[1:]):
                if len(items) == 2 and all(t.isidentifier() and t not in ("true", "false", "none") for t in texts):
                    return None         # two calls that take two different arguments: clearer written out
                text = f"{texts[0]} if {var} == 0 else {texts[1]}"
                if p.flag and (texts[0], texts[1]) == ("true", "false"):
                    text = f"{var} == 0"
            else:
                text = "[" + ", ".join(texts) + f"][{var}]"
            columns.append((p, text))
        text = f"{head}{self.call_text(gr, columns)} for {var} in range({len(items)})"
        written = [self.layer(x, cp) for x, cp in zip(items, paths)]
        if len(text) > 1.5 * len(" -> ".join(written)):
            return None
        return text if dense else f"[{text}]"
