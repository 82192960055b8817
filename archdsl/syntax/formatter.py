"""Canonical layout of .arch source (``archc fmt``).

:func:`format_source` parses the text, lays the AST out again in one style and
re-attaches the ``#`` comments, which the grammar ignores and the AST lacks.

Style: 4-space indentation, one statement per line, one space around binary
operators and ``->``, ``name: type = default`` for parameters, ``k=v`` for
keyword arguments, ``true``/``false``/``none``, double-quoted strings, and only
the parentheses that precedence needs (plus any that wrap a conditional
expression in the source). Top-level definitions are separated by one blank
line; blank lines between statements are kept (at most one). ``parallel`` and
``dense`` put one branch per line; ``residual``/``stn`` bodies are indented.
A chain that would pass column 100 breaks before ``->``; the continuation
lines align with the statement's first ``->`` (bodies: with the body). A header,
or a list or tuple nested in a one-item-per-line list, that would pass column 100
wraps its items onto lines aligned after its opening bracket; so does a layer call
that would pass it (its arguments), and a list argument too long for its line (a
pruned spec's per-layer tables).

Comments: each comment is tied to a source token. A comment alone on its line
goes before the output line holding the next token; a comment after code goes
at the end of the output line holding the previous token (a second one there
moves to the next line). A comment between two layers of a chain forces a
break there, so the formatter's own output is stable: format(format(x)) ==
format(x). The lexical rules outside the grammar (archdsl/syntax/postlex.py)
are respected: lines only start with statements, layers, ``->``, parameters,
closing brackets or comments, never with a conditional expression's or a
filter's ``if``; labels are written without spaces (``block{i}-{j}:``). A
sequence value (``b = [conv(8, 3) -> relu]``) is laid out as a sequence layer at
the top of a statement and on one line inside an expression.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from ..diagnostics import ArchError, Span
from . import ast
from .parser import parse, tokens

WIDTH = 100
INDENT = 4
_MAX_ALIGN = 32          # continuation lines align with the first `->` unless it is further in than this
_OPENERS = ("{", "[", "(")
_CALLABLE_ENDS = {"NAME", "RPAR", "RSQB", "NUMBER", "STRING", "TRUE", "FALSE", "NONE",
                  "PARALLEL", "DENSE", "STN"}


def format_source(text: str, file: str = "<string>") -> str:
    """The canonical form of ``text``. Raises the parser's :class:`ArchError` for bad input."""
    module = parse(text, file)
    try:
        fmt = _Formatter(_Source(text))
        fmt.module(module)
        return fmt.render()
    except RecursionError:
        raise ArchError("The spec nests expressions too deeply to format.", Span(file, 1, 1, 1, 2)) from None


def _start(span: Span) -> tuple:
    return (span.line, span.col)


def _end(span: Span) -> tuple:
    return (span.end_line, span.end_col)


# ---- the source text: tokens, bracket pairs, comments -------------------------------

@dataclass
class _Comment:
    pos: tuple
    text: str
    own_line: bool        # nothing but whitespace before it on its line
    blank_above: bool     # own_line and the source line above is empty


class _Source:
    def __init__(self, text: str):
        self.lines = text.split("\n")
        self.pos, self.vals, self.types, self.comments = [], [], [], []
        last_line = 0
        for tok in tokens(text, keep_ignored=True):
            if tok.type == "WS":
                continue
            pos = (tok.line, tok.column)
            if tok.type == "COMMENT":
                own = last_line < tok.line
                self.comments.append(_Comment(pos, str(tok).rstrip(), own,
                                              own and self.blank_line(tok.line - 1)))
                continue
            self.pos.append(pos)
            self.vals.append(str(tok))
            self.types.append(tok.type)
            last_line = tok.end_line
        self.comment_pos = [c.pos for c in self.comments]
        self.match, stack = {}, []
        for i, v in enumerate(self.vals):
            if v in ("(", "[", "{"):
                stack.append(i)
            elif v in (")", "]", "}") and stack:
                j = stack.pop()
                self.match[i], self.match[j] = j, i

    def blank_line(self, line: int) -> bool:
        return 1 <= line <= len(self.lines) and not self.lines[line - 1].strip()

    def index(self, pos) -> int:
        """Index of the first token at or after ``pos``."""
        return bisect_left(self.pos, pos)

    def comments_in(self, a, b) -> list:
        return self.comments[bisect_left(self.comment_pos, a):bisect_left(self.comment_pos, b)]

    def bracket_after(self, pos, opener: str):
        """Positions of the first ``opener`` at or after ``pos`` and of its partner."""
        i = self.index(pos)
        while i < len(self.vals) and self.vals[i] != opener:
            i += 1
        if i == len(self.vals):
            return pos, pos
        return self.pos[i], self.pos[self.match.get(i, i)]

    def trailing_comma(self, close_pos) -> bool:
        i = self.index(close_pos)
        return 0 < i < len(self.vals) and self.vals[i - 1] == ","

    def arrow_before(self, pos):
        i = self.index(pos) - 1
        return self.pos[i] if i >= 0 and self.vals[i] == "->" else pos

    def parenthesised(self, span: Span) -> bool:
        """Whether the expression at ``span`` sits directly in grouping parentheses.

        A span may or may not include parentheses around its first or last
        operand; those are stepped over (their partner lies inside the span).
        Parentheses after a name, ``)``, ``]`` or a literal are call parentheses.
        """
        i, j = self.index(_start(span)), self.index(_end(span)) - 1
        while i > 0 and self.vals[i - 1] == "(" and self.match.get(i - 1, -1) <= j:
            i -= 1
        while j + 1 < len(self.vals) and self.vals[j + 1] == ")" and self.match.get(j + 1, len(self.vals)) >= i:
            j += 1
        if i < 1 or self.vals[i - 1] != "(" or self.match.get(i - 1) != j + 1:
            return False
        return i < 2 or self.types[i - 2] not in _CALLABLE_ENDS


# ---- output lines ---------------------------------------------------------------------

@dataclass
class _Line:
    indent: int
    text: str
    first: tuple          # source position of the first token on the line
    kind: str             # "stmt" | "item" | "branch" | "body" | "cont" | "close"
    force_blank: bool = False
    lead: list = field(default_factory=list)
    comment: str | None = None


_PREC_BIN = {"+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6, "**": 8}


def _prec(e) -> int:
    if isinstance(e, ast.Ternary):
        return 0
    if isinstance(e, ast.BoolOp):
        return 1 if e.op == "or" else 2
    if isinstance(e, ast.Unary):
        return 3 if e.op == "not" else 7
    if isinstance(e, ast.Compare):
        return 4
    if isinstance(e, ast.BinOp):
        return _PREC_BIN[e.op]
    if isinstance(e, (ast.CallExpr, ast.Index, ast.Attr)):
        return 9
    return 10


def float_text(v: float) -> str:
    """The shortest text that reads back as ``v`` (the parser rejects infinite values)."""
    text = repr(v)
    if "e" in text:
        mantissa, exp = text.split("e")
        return f"{mantissa}e{int(exp)}"
    return text


def string_text(s: str) -> str:
    """A double-quoted spec string that reads back as ``s``."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


class _Formatter:
    def __init__(self, src: _Source):
        self.src = src
        self.lines: list[_Line] = []
        self.tail = None        # (layer, width): text that must follow that layer on its line

    # ---- line building
    def newline(self, indent: int, first, kind: str, force_blank: bool = False) -> None:
        self.lines.append(_Line(indent, "", first, kind, force_blank))

    def add(self, text: str) -> None:
        self.lines[-1].text += text

    def width(self) -> int:
        return self.lines[-1].indent + len(self.lines[-1].text)

    # ---- expressions
    def expr(self, e, min_prec: int = 0) -> str:
        x = self.expr
        if isinstance(e, ast.Ternary):
            text = f"{x(e.then, 1)} if {x(e.cond, 1)} else {x(e.orelse, 0)}"
            return f"({text})" if min_prec > 0 or self.src.parenthesised(e.span) else text
        p = _prec(e)
        if isinstance(e, ast.BoolOp):
            text = f" {e.op} ".join(x(v, p + 1) for v in e.values)
        elif isinstance(e, ast.Unary):
            text = ("not " if e.op == "not" else e.op) + x(e.operand, p)
        elif isinstance(e, ast.Compare):
            text = x(e.left, 5) + "".join(f" {op} {x(r, 5)}" for op, r in zip(e.ops, e.rights))
        elif isinstance(e, ast.BinOp) and e.op == "**":
            text = f"{x(e.left, 9)} ** {x(e.right, 7)}"
        elif isinstance(e, ast.BinOp):
            text = f"{x(e.left, p)} {e.op} {x(e.right, p + 1)}"
        elif isinstance(e, ast.CallExpr):
            text = f"{x(e.func, 9)}({self.args(e.args)})"
        elif isinstance(e, ast.Index):
            text = f"{x(e.obj, 9)}[{x(e.index)}]"
        elif isinstance(e, ast.Attr):
            obj = x(e.obj, 9)
            if isinstance(e.obj, ast.Literal) and type(e.obj.value) is int:
                obj = f"({obj})"          # `1.x` would lex as the number `1.`
            text = f"{obj}.{e.name}"
        else:
            text = self.atom(e)
        return f"({text})" if p < min_prec else text

    def atom(self, e) -> str:
        if isinstance(e, ast.Var):
            return e.name
        if isinstance(e, ast.Literal):
            v = e.value
            if v is True or v is False or v is None:
                return {True: "true", False: "false", None: "none"}[v]
            if isinstance(v, int):
                return str(v)
            if isinstance(v, float):
                return float_text(v)
            return string_text(v)
        if isinstance(e, ast.TupleExpr):
            if len(e.items) == 1:
                return f"({self.expr(e.items[0])},)"
            return "(" + ", ".join(self.expr(i) for i in e.items) + ")"
        if isinstance(e, ast.ListExpr):
            return "[" + ", ".join(self.expr(i) for i in e.items) + "]"
        if isinstance(e, ast.ListComp):
            return f"[{self.expr(e.elt)} {self.comp(e.comp)}]"
        if isinstance(e, ast.Seq):
            return self.inline(e)
        raise TypeError(f"cannot format {type(e).__name__}")   # pragma: no cover - parser never builds it

    def args(self, a: ast.Args) -> str:
        return ", ".join([self.expr(p) for p in a.positional]
                         + [f"{k.name}={self.expr(k.value)}" for k in a.keywords])

    def comp(self, c: ast.Comp) -> str:
        if c.cond is None:
            return f"for {self.target(c.targets)} in {self.expr(c.iter)}"
        return f"for {self.target(c.targets)} in {self.expr(c.iter, 1)} if {self.expr(c.cond, 1)}"

    def target(self, t, nested: bool = False) -> str:
        if isinstance(t, ast.NameTarget):
            return t.name
        text = ", ".join(self.target(i, True) for i in t.items)
        return f"({text})" if nested else text

    # ---- top level
    def module(self, m: ast.Module) -> None:
        prev = None
        for item in m.items:
            multi = isinstance(item, (ast.Definition, ast.Function))
            force = prev is not None and (multi or isinstance(prev, (ast.Definition, ast.Function)))
            self.newline(0, _start(item.span), "stmt", force)
            self.item(item)
            prev = item

    def item(self, it) -> None:
        if isinstance(it, ast.Import):
            self.add("import " + (it.path if it.is_std else string_text(it.path))
                     + (f" as {it.alias}" if it.alias else ""))
        elif isinstance(it, ast.Const):
            self.add(f"{it.name} = ")
            self.value(it.value)
        elif isinstance(it, ast.ModelAlias):
            self.add(f"model {it.name} = {'.'.join(it.target)}({self.args(it.args)})")
        else:
            self.definition(it)

    def definition(self, d: ast.Definition) -> None:
        indent = self.lines[-1].indent
        params = [self.param(p) for p in d.params]
        lpar, rpar = self.src.bracket_after(_end(d.name_span), "(")
        one = f"{d.kind} {d.name}(" + ", ".join(params) + ") {"
        head = f"{d.kind} {d.name}("
        if params and indent + len(one) > WIDTH and len(head) <= _MAX_ALIGN and not (
                self.src.comments_in(lpar, rpar) or self.src.trailing_comma(rpar)):
            self.add(head)
            col = self.width()
            for k, (p, text) in enumerate(zip(d.params, params)):
                tail = 3 if k + 1 == len(params) else 1
                if k:
                    self.add(",")
                    if d.params[k - 1].span.end_line < p.span.line or self.width() + 1 + len(text) + tail > WIDTH:
                        self.newline(col, _start(p.span), "cont")
                    else:
                        self.add(" ")
                self.add(text)
            self.add(") {")
        elif params and (indent + len(one) > WIDTH or self.src.comments_in(lpar, rpar)
                         or self.src.trailing_comma(rpar)):
            self.add(f"{d.kind} {d.name}(")
            for p, text in zip(d.params, params):
                self.newline(indent + INDENT, _start(p.span), "item")
                self.add(text + ",")
            self.newline(indent, rpar, "close")
            self.add(") {")
        else:
            self.add(one)
        self.body(d.body, indent, rpar)

    def param(self, p: ast.Param) -> str:
        text = p.name + (f": {p.type}" if p.type else "")
        return text + (f" = {self.expr(p.default)}" if p.default is not None else "")

    def body(self, stmts, indent: int, after) -> tuple:
        """Statements of the ``{ }`` that opens at or after ``after``; returns the ``}`` position."""
        _, close = self.src.bracket_after(after, "{")
        for s in stmts:
            self.stmt(s, indent + INDENT)
        self.newline(indent, close, "close")
        self.add("}")
        return close

    # ---- statements
    def stmt(self, s, indent: int) -> None:
        self.newline(indent, _start(s.span), "stmt")
        if isinstance(s, ast.Input):
            self.add(f"input {s.name}" + (f": {self.expr(s.shape)}" if s.shape is not None else ""))
        elif isinstance(s, ast.Output):
            self.values("output ", s.values)
        elif isinstance(s, ast.Assign):
            self.values(f"{self.target(s.target)} = ", (s.value,))
        elif isinstance(s, ast.SetItem):
            self.values(s.name + "".join(f"[{self.expr(i)}]" for i in s.indices) + " = ", (s.value,))
        elif isinstance(s, ast.Return):
            self.values("return ", (s.value,))
        elif isinstance(s, ast.If):
            close = None
            for k, (cond, stmts) in enumerate(s.branches):
                self.add(f"{'if' if k == 0 else ' elif'} {self.expr(cond)} {{")
                close = self.body(stmts, indent, _start(cond.span))
            if s.orelse is not None:
                self.add(" else {")
                self.body(s.orelse, indent, (close[0], close[1] + 1))
        elif isinstance(s, ast.For):
            self.add(f"for {self.target(s.target)} in {self.expr(s.iter)} {{")
            self.body(s.body, indent, _start(s.span))
        elif isinstance(s, ast.Assert):
            self.add(f"assert {self.expr(s.cond)}")
            if s.message is not None:
                message = self.expr(s.message)
                self.add(",")
                if self.width() + 1 + len(message) > WIDTH:
                    self.newline(indent + INDENT, _start(s.message.span), "cont")
                    self.add(message)
                else:
                    self.add(" " + message)
        else:
            raise TypeError(f"cannot format {type(s).__name__}")  # pragma: no cover

    def values(self, prefix: str, values) -> None:
        self.add(prefix)
        cont = None
        for k, v in enumerate(values):
            if k:
                self.add(", ")
            if not isinstance(v, ast.Chain):
                self.value(v)
                continue
            self.add(self.expr(v.source))
            if cont is None:
                indent = self.lines[-1].indent
                cont = self.width() + 1
                if cont - indent > _MAX_ALIGN:
                    cont = indent + 2 * INDENT
            self.layers(v.layers, cont, v.source.span, False, head=True)

    def value(self, e, top: bool = True, tail: int = 0) -> None:
        """A statement's value; a list or tuple goes one item per line when it has a trailing
        comma or comments inside, or (for the whole value) when it would pass column 100.

        A list or tuple nested in one laid out that way, which would pass column 100
        (``tail``: the width of what must follow it on its line), is wrapped: its items
        fill lines aligned just after its opening bracket, breaking where the source
        breaks between two items and before an item that would pass column 100 (unless
        that item is a list or tuple too long for a fresh line: it is wrapped in place).
        """
        if isinstance(e, ast.Seq) and top:            # a sequence value: laid out as a layer
            self.place(e, self.lines[-1].indent + INDENT, False, "")
            return
        text = self.expr(e)
        if not isinstance(e, (ast.ListExpr, ast.TupleExpr)) or not e.items:
            self.add(text)
            return
        open_i = self.src.index(_start(e.span))
        close_i = self.src.match.get(open_i)
        if close_i is None or self.src.vals[open_i] not in ("(", "["):
            self.add(text)
            return
        magic = self.src.vals[close_i - 1] == "," and (isinstance(e, ast.ListExpr) or len(e.items) > 1)
        too_wide = self.width() + len(text) + tail > WIDTH
        if not (magic or self.src.comments_in(self.src.pos[open_i], self.src.pos[close_i])):
            if not too_wide:
                self.add(text)
            elif top:
                self.one_per_line(e, open_i, close_i)
            else:
                self.wrap(e, open_i, close_i, tail)
            return
        self.one_per_line(e, open_i, close_i)

    def item_start(self, item, open_i: int) -> tuple:
        """Source position of an item's first token, grouping parentheses included."""
        i = self.src.index(_start(item.span))
        while i - 1 > open_i and self.src.vals[i - 1] == "(":
            i -= 1
        return self.src.pos[i]

    def one_per_line(self, e, open_i: int, close_i: int) -> None:
        base = self.lines[-1].indent
        self.add(self.src.vals[open_i])
        for item in e.items:
            self.newline(base + INDENT, self.item_start(item, open_i), "item")
            self.value(item, top=False, tail=1)
            self.add(",")
        self.newline(base, self.src.pos[close_i], "close")
        self.add(self.src.vals[close_i])

    def wrap(self, e, open_i: int, close_i: int, tail: int) -> None:
        closer = ",)" if isinstance(e, ast.TupleExpr) and len(e.items) == 1 else self.src.vals[close_i]
        self.add(self.src.vals[open_i])
        col, prev_line = self.width(), None
        for k, item in enumerate(e.items):
            start = self.item_start(item, open_i)
            item_tail = len(closer) + tail if k + 1 == len(e.items) else 1
            if k:
                self.add(",")
                flat = len(self.expr(item)) + item_tail
                if prev_line < start[0] or self.width() + 1 + flat > WIDTH and (
                        col + flat <= WIDTH or not isinstance(item, (ast.ListExpr, ast.TupleExpr))):
                    self.newline(col, start, "cont")
                else:
                    self.add(" ")
            self.value(item, top=False, tail=item_tail)
            prev_line = item.span.end_line
        self.add(closer)

    # ---- chains and layers
    def layers(self, layers, cont: int, prev: Span, prev_block: bool, head: bool = False) -> None:
        """Layers after the first item of a chain, each preceded by `->`.

        A line break between two layers in the source is kept, and so is one
        forced by a comment between them; others are added where a line would
        pass column 100.
        """
        for layer in layers:
            start = _start(layer.span)
            force = prev.end_line < layer.span.line or any(
                (not c.own_line and not prev_block) or c.pos >= _end(prev)
                for c in self.src.comments_in(_start(prev), start))
            self.place(layer, cont, force, " -> ", head)
            prev, prev_block, head = layer.span, self.flat(layer) is None, False

    def chain_body(self, layers, indent: int, cont: int, kind: str) -> None:
        self.newline(indent, _start(layers[0].span), kind)
        self.place(layers[0], cont, False, "")
        self.layers(layers[1:], cont, layers[0].span, self.flat(layers[0]) is None)

    def place(self, layer, cont: int, force: bool, lead: str, head: bool = False) -> None:
        """Put one layer after ``lead`` (`` -> `` or nothing at the start of a body line).

        ``head``: the first layer after a statement's source, which is not moved
        to a continuation line where it would not fit there either.
        """
        flat = self.flat(layer)
        is_seq = isinstance(layer, ast.Seq)
        if flat is not None:
            fresh = cont + 3 + len(flat) <= WIDTH
            if not lead:
                if not is_seq or self.width() + len(flat) <= WIDTH:
                    self.call(layer, flat)
                    return
            elif not force and (self.width() + len(lead) + len(flat) <= WIDTH
                                or head and not is_seq and not fresh):
                self.add(lead)
                self.call(layer, flat)
                return
            elif not is_seq or fresh:
                self.newline(cont, self.src.arrow_before(_start(layer.span)), "cont")
                self.add("-> ")
                self.call(layer, flat)
                return
        if lead and (force or self.width() + len(lead) + len(self.opener(layer)) > WIDTH):
            self.newline(cont, self.src.arrow_before(_start(layer.span)), "cont")
            lead = "-> "
        self.add(lead)
        self.block(layer)

    def call(self, layer, flat: str) -> None:
        """A layer call on the current line. One that would pass column 100 puts its arguments on
        lines aligned after its ``(``, breaking before an argument that would pass column 100, and
        wraps a list argument that is too long itself (or an indexed one: a per-layer table
        ``[...][j]``, as specs written back from pruned graphs have)."""
        a = layer.args if isinstance(layer, ast.LayerCall) else None
        tail = self.tail[1] if self.tail is not None and self.tail[0] is layer else 0
        if self.width() + len(flat) + tail <= WIDTH or a is None or not (a.positional or a.keywords):
            self.add(flat)
            return
        self.add(self.label(layer) + ".".join(layer.callee) + "(")
        col = self.width()
        items = [(e, "", e) for e in a.positional] + [(k, f"{k.name}=", k.value) for k in a.keywords]
        for i, (node, prefix, value) in enumerate(items):
            end = 1 + (tail if i + 1 == len(items) else 0)      # the "," or ")" after it, and the line's tail
            text = prefix + self.expr(value)
            if i:
                self.add(",")
                if self.width() + 1 + len(text) + end > WIDTH:
                    self.newline(col, _start(node.span), "cont")
                else:
                    self.add(" ")
            self.add(prefix)
            self.argument(value, end)
        self.add(")")

    def argument(self, e, tail: int) -> None:
        """An argument's value, a too-long list (or indexed list) wrapped after its ``[``."""
        text = self.expr(e)
        if self.width() + len(text) + tail <= WIDTH:
            self.add(text)
        elif isinstance(e, ast.ListExpr) and e.items:
            self.value(e, top=False, tail=tail)
        elif isinstance(e, ast.Index) and isinstance(e.obj, ast.ListExpr) and e.obj.items \
                and not self.src.parenthesised(e.obj.span):
            index = f"[{self.expr(e.index)}]"
            self.value(e.obj, top=False, tail=len(index) + tail)
            self.add(index)
        else:
            self.add(text)

    def label(self, layer) -> str:
        lab = layer.label
        if lab is None:
            return ""
        return "".join(p if isinstance(p, str) else f"{{{self.expr(p)}}}" for p in lab.parts) + ": "

    def inline(self, layer) -> str:
        """A layer on one line (a sequence value inside an expression)."""
        flat = self.flat(layer)
        if flat is not None:
            return flat
        lab = self.label(layer)
        if isinstance(layer, ast.Seq):
            comp = f" {self.comp(layer.comp)}" if layer.comp else ""
            return f"{lab}[{' -> '.join(self.inline(b) for b in layer.body)}{comp}]"
        if isinstance(layer, (ast.Parallel, ast.Dense)):
            word = "parallel" if isinstance(layer, ast.Parallel) else "dense"
            branches = [" -> ".join(self.inline(b) for b in br.body) + (f" {self.comp(br.comp)}" if br.comp else "")
                        for br in layer.branches]
            return f"{lab}{word}{self.call_args(layer.args)} {{ {', '.join(branches)} }}"
        body = " -> ".join(self.inline(b) for b in layer.body)
        if isinstance(layer, ast.Stn):
            return f"{lab}stn{self.call_args(layer.args)} {{ {body} }}"
        text = f"{lab}residual {{ {body} }}"
        sc = layer.shortcut
        if sc is not None:
            text += " shortcut" + (f" if {self.expr(sc.cond)}" if sc.cond is not None else "") + " { " + \
                " -> ".join(self.inline(b) for b in sc.body) + " }"
        return text

    def call_args(self, a: ast.Args) -> str:
        return f"({self.args(a)})" if a.positional or a.keywords else ""

    def flat(self, layer) -> str | None:
        """The one-line text of a layer, or None for one laid out over several lines."""
        if isinstance(layer, ast.LayerCall):
            return self.label(layer) + ".".join(layer.callee) + self.call_args(layer.args)
        if not isinstance(layer, ast.Seq):
            return None
        if self.src.comments_in(_start(layer.span), _end(layer.span)) or any(
                a.span.end_line < b.span.line for a, b in zip(layer.body, layer.body[1:])):
            return None
        parts = [self.flat(b) for b in layer.body]
        if any(p is None for p in parts):
            return None
        comp = f" {self.comp(layer.comp)}" if layer.comp else ""
        return f"{self.label(layer)}[{' -> '.join(parts)}{comp}]"

    def opener(self, layer) -> str:
        if isinstance(layer, ast.Seq):
            return self.label(layer) + "["
        if isinstance(layer, ast.Residual):
            return self.label(layer) + "residual {"
        word = {ast.Parallel: "parallel", ast.Dense: "dense", ast.Stn: "stn"}[type(layer)]
        return f"{self.label(layer)}{word}{self.call_args(layer.args)} {{"

    def block(self, layer) -> None:
        """A layer over several lines; the closing line stays open for what follows."""
        base = self.lines[-1].indent
        inner = base + INDENT
        self.add(self.opener(layer))
        start = _start(layer.span)
        if isinstance(layer, ast.Seq):
            if layer.comp:
                self.tail = (layer.body[-1], len(self.comp(layer.comp)) + 1)
            self.chain_body(layer.body, inner, inner, "body")
            self.tail = None
            if layer.comp:
                self.add(f" {self.comp(layer.comp)}")
            self.newline(base, (layer.span.end_line, layer.span.end_col - 1), "close")
            self.add("]")
            return
        if isinstance(layer, (ast.Parallel, ast.Dense)):
            _, close = self.src.bracket_after(self._keyword(start), "{")
            for k, br in enumerate(layer.branches):
                after = (f" {self.comp(br.comp)}" + ("," if k + 1 < len(layer.branches) else "")) if br.comp else ""
                self.tail = (br.body[-1], len(after))      # what follows the branch's last layer on its line
                self.chain_body(br.body, inner, inner + INDENT, "branch")
                self.tail = None
                self.add(after)
            self.newline(base, close, "close")
            self.add("}")
            return
        _, close = self.src.bracket_after(self._keyword(start), "{")
        self.chain_body(layer.body, inner, inner, "body")
        self.newline(base, close, "close")
        self.add("}")
        sc = getattr(layer, "shortcut", None)
        if sc is not None:
            self.add(" shortcut" + (f" if {self.expr(sc.cond)}" if sc.cond is not None else "") + " {")
            _, close = self.src.bracket_after(_start(sc.span), "{")
            self.chain_body(sc.body, inner, inner, "body")
            self.newline(base, close, "close")
            self.add("}")

    def _keyword(self, start) -> tuple:
        """Position of the construct keyword of a (possibly labelled) layer starting at ``start``."""
        i = self.src.index(start)
        while i < len(self.src.types) and self.src.types[i] not in ("PARALLEL", "DENSE", "RESIDUAL", "STN"):
            i += 1
        return self.src.pos[i] if i < len(self.src.pos) else start

    # ---- comments and final text
    def attach_comments(self) -> list:
        lines = self.lines
        firsts = [ln.first for ln in lines]
        eof = []

        def line_of(pos) -> int:
            return max(bisect_right(firsts, pos) - 1, 0)

        for c in self.src.comments:
            if not lines:
                eof.append(c)
                continue
            if not c.own_line:
                p = bisect_left(self.src.pos, c.pos) - 1
                li = line_of(self.src.pos[p])
                if self.src.vals[p] == "->" and lines[li].first == self.src.pos[p] and li > 0:
                    li -= 1
                if lines[li].comment is None:
                    lines[li].comment = c.text
                    continue
                if li + 1 < len(lines):
                    lines[li + 1].lead.append(c)
                else:
                    eof.append(c)
                continue
            n = bisect_left(self.src.pos, c.pos)
            if n == len(self.src.pos):
                eof.append(c)
            else:
                lines[line_of(self.src.pos[n])].lead.append(c)
        return eof

    def render(self) -> str:
        eof = self.attach_comments()
        out: list[tuple[str, bool]] = []

        def blank():
            if out and out[-1][0] and not out[-1][1]:
                out.append(("", False))

        for ln in self.lines:
            if ln.force_blank:
                blank()
            pad = " " * (ln.indent + (INDENT if ln.kind == "close" else 0))
            for c in ln.lead:
                if c.blank_above and ln.kind in ("stmt", "close"):
                    blank()
                out.append((pad + c.text, False))
            if ln.kind == "stmt" and self.src.blank_line(ln.first[0] - 1):
                blank()
            text = " " * ln.indent + ln.text
            out.append((text + (f"  {ln.comment}" if ln.comment else ""), ln.text.endswith(_OPENERS)))
        for c in eof:
            if c.blank_above:
                blank()
            out.append((c.text, False))
        return "".join(text + "\n" for text, _ in out)
