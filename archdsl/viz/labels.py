"""Text and colours of the picture: op summaries, HTML-like labels, tooltips and palettes.

Everything here returns plain strings, so the same view can be drawn by the
``dot`` program and, in the interactive page, by Graphviz compiled to WebAssembly.
"""
from __future__ import annotations

from ..ir import ops
from ..ir.stats import human

FONT = "Arial"  # one family: Graphviz-in-the-browser estimates text widths from its known fonts by name

# fill colour of an op node, by the op's registry category (unknown ops: the last entry)
OP_FILL = {"conv": "#cfe2f3", "linear": "#d9d2e9", "bn": "#fff2cc", "lrn": "#fff2cc",
           "activation": "#fce5cd", "pooling": "#d9ead3", "regularisation": "#eeeeee", "shape": "#ffffff",
           "merge": "#ffffff", "spatial": "#f4cccc", "io": "#d9d9d9", "other": "#ead1dc"}
# border colour of a cluster and fill colour of a collapsed box, by scope kind
SCOPE_COLOR = {"block": "#6a51a3", "seq": "#737373", "parallel": "#d95f02", "dense": "#238b45",
               "residual": "#cb181d", "stn": "#2171b5", "model": "#000000"}
BOX_FILL = {"block": "#e5dff2", "seq": "#ececec", "parallel": "#fde0c5", "dense": "#d5efcf",
            "residual": "#f9d3d0", "stn": "#d4e4f4", "model": "#ffffff"}
# cluster backgrounds by nesting depth, so that nested clusters stay apart
DEPTH_FILL = ["#ffffff", "#f7f7f7", "#eef3fa", "#fbf3e8", "#f1f8ee", "#f8eef5"]
SHORTCUT_COLOR = "#cb181d"
DENSE_COLOR = "#31a354"


def esc(text: str) -> str:
    """Escape text for a Graphviz HTML-like label."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


VALUE_WIDTH = 32        # characters of a value in a label, then "…"
VALUE_DEPTH = 3         # list levels shown; deeper lists are "[...]"


def _scalar(v, room: int) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return f'"{v}"' if len(v) <= room else f'"{v[:room]}…'
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, int):
        s = str(v) if v.bit_length() <= 1024 else "…"          # str() of a huge int is slow
        return s if len(s) <= room else s[:room] + "…"
    s = str(getattr(v, "name", type(v).__name__))
    return s if len(s) <= room else s[:room] + "…"


def value(v, width: int = VALUE_WIDTH, depth: int = VALUE_DEPTH) -> str:
    """A spec value as the spec would write it, shortened to stay readable in a label.

    Lists (``[...]``) and tuples (``(...)``) nested more than ``depth`` deep show
    as ``[...]``; once about ``width`` characters are written, the items left in
    each open list show as one ``...``: ``[[[...], [...]], ...]``. Every item
    visited costs at least one character of the budget, so at most about
    ``width`` items are visited and the recursion is at most ``depth`` deep,
    whatever the value's size, depth or sharing (``y = [y, y]`` forty times is
    2^40 items as a tree).
    """
    room = width

    def walk(x, level: int) -> str:
        nonlocal room
        if not isinstance(x, (list, tuple)):
            s = _scalar(x, max(room, 1))
            room -= len(s)
            return s
        o, c = ("[", "]") if isinstance(x, list) else ("(", ")")
        if not x or level >= depth:
            room -= 5
            return o + ("..." if x else "") + c
        room -= 2
        parts = []
        for item in x:
            if room <= 0:
                parts.append("...")
                break
            parts.append(walk(item, level + 1))
            room -= 2
        return o + ", ".join(parts) + c

    s = walk(v, 0)
    return s if len(s) <= width + 24 else s[:width + 23] + "…"     # closing what is open may overrun


def shape_text(shape) -> str:
    """A tensor shape without its batch dimension: ``64×56×56``."""
    dims = [str(d) for d in shape[1:]] if shape and shape[0] == "N" else [str(d) for d in shape]
    return "×".join(dims) if dims else "scalar"


def _pair(p) -> str:
    if isinstance(p, (list, tuple)):
        return str(p[0]) if len(set(p)) == 1 else "×".join(map(str, p))
    return str(p)


def _is_one(p) -> bool:
    return all(x == 1 for x in p) if isinstance(p, (list, tuple)) else p == 1


def _kernel(k) -> str:
    return "×".join(map(str, k)) if isinstance(k, (list, tuple)) else f"{k}×{k}"


def op_summary(op: str, a: dict) -> str:
    """The op and its key attributes in a few characters: ``conv 3×3/2, 128``."""
    if op == "conv":
        s = f"conv {_kernel(a['kernel_size'])}"
        s += "" if _is_one(a.get("stride", 1)) else f"/{_pair(a['stride'])}"
        s += f", {a['out_channels']}"
        s += "" if a.get("groups", 1) == 1 else f", g{a['groups']}"
        s += "" if _is_one(a.get("dilation", 1)) else f", d{_pair(a['dilation'])}"
        return s
    if op == "linear":
        return f"linear {a['out_features']}"
    if op in ("maxpool", "avgpool"):
        s = f"{op} {_kernel(a['kernel_size'])}"
        return s if a.get("stride") in (None, a["kernel_size"]) else s + f"/{_pair(a['stride'])}"
    if op in ("adaptive_avgpool", "adaptive_maxpool"):
        return f"{op} {_kernel(a['output_size'])}"
    if op in ("dropout", "dropout2d"):
        return f"{op} {a['p']:g}"
    if op == "add":
        return "+"
    if op == "mul":
        return "×"
    if op == "input":
        return f"input {a.get('name', '')}"
    opdef = ops.get(op)
    defaults = {x.name: x.default for x in opdef.args} if opdef else {}
    shown = [f"{k}={value(v)}" for k, v in sorted(a.items())
             if not k.endswith("_init") and defaults.get(k, ...) != v and k != "dim"]
    s = " ".join([op] + shown)
    return s if len(s) <= 36 else s[:35] + "…"


def op_fill(op: str) -> str:
    if op in OP_FILL:
        return OP_FILL[op]
    opdef = ops.get(op)
    return OP_FILL.get(opdef.category if opdef else "other", OP_FILL["other"])


def node_label(op: str, attrs: dict, local: str) -> str:
    """Two lines for a labelled layer (its label small, then the op); one line otherwise."""
    summary = esc(op_summary(op, attrs))
    if op in ("add", "mul", "input") or not local or local.isdigit():
        return summary
    return f'<font point-size="8" color="#555555">{esc(local)}</font><br/>{summary}'


def node_tooltip(scope: str, op: str, attrs: dict, shape, params: int, macs: int) -> str:
    shown = ", ".join(f"{k}={value(v)}" for k, v in sorted(attrs.items()) if not k.endswith("_init"))
    return (f"{scope or op}: {op}({shown}) -> {shape_text(shape)}"
            + (f"; {params:,} params" if params else "") + (f"; {macs:,} MACs" if macs else ""))


def _wrap(parts: list[str], width: int) -> list[str]:
    lines, cur = [], ""
    for part in parts:
        if cur and len(cur) + len(part) + 2 > width:
            lines.append(cur + ",")
            cur = part
        else:
            cur = f"{cur}, {part}" if cur else part
    return lines + [cur] if cur else lines


def scope_label(local: str, kind: str, name: str, args: dict, params: int, macs: int, count: int) -> str:
    """A cluster's or box's label, left-aligned: its name in the parent and what made it, the
    block's arguments (wrapped), then its totals::

        layer1.0 · bottleneck
        planes=64, stride=1
        10 ops · 70.40K params · 218.37M MACs
    """
    what = name if kind == "block" else kind
    lines = [f"<b>{esc(local)} · {esc(what)}</b>"]      # one font per line: one SVG text element
    if kind == "block" and args:
        lines += [esc(line) for line in _wrap([f"{k}={value(v)}" for k, v in args.items()], 44)]
    stats = [f"{count} op{'s' if count != 1 else ''}"]
    stats += [f"{human(params)} params"] if params else []
    stats += [f"{human(macs)} MACs"] if macs else []
    lines.append('<font point-size="8" color="#444444">' + esc(" · ".join(stats)) + "</font>")
    return '<br align="left"/>'.join(lines) + '<br align="left"/>'


def legend(name: str, ins: list, outs: list, params: int, macs: int, count: int, max_depth: int,
           kinds: set) -> str:
    """The graph's title and key: totals, then what the styles that occur in this graph mean."""
    io = (", ".join(shape_text(s) for s in ins) + " → " + ", ".join(shape_text(s) for s in outs))
    key = ['<font color="#444444">→ tensor (shape C×H×W on the edge)</font>']
    if "shortcut" in kinds:
        key.append(f'<font color="{SHORTCUT_COLOR}">⇢ residual shortcut</font>')
    if "rail" in kinds or "dense" in kinds:
        key.append(f'<font color="{DENSE_COLOR}">━ dense rail: each concat also takes every feature that '
                   'joined above</font>')
    if max_depth:
        key.append("▣ collapsed block")
    rows = [f'<tr><td align="left"><b><font point-size="14">{esc(name)}</font></b>   {esc(io)}</td></tr>',
            f'<tr><td align="left">{esc(f"{params:,}")} params ({human(params)}) · {esc(f"{macs:,}")} MACs '
            f'({human(macs)}) per sample · {count} ops'
            + (f' · blocks nested {max_depth} deep' if max_depth > 1 else "") + '</td></tr>',
            '<tr><td align="left">' + "   ".join(key) + "</td></tr>"]
    return '<table border="0" cellborder="0" cellspacing="1">' + "".join(rows) + "</table>"
