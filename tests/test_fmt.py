"""``archc fmt``: the canonical formatter (archdsl/syntax/formatter.py).

Properties over every shipped spec and over random specs built from the
grammar's constructs: formatting keeps the AST (spans aside), is idempotent
and keeps every comment exactly once. Pinned examples fix the style itself.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from archdsl.cli import main
from archdsl.diagnostics import ArchError
from archdsl.syntax import formatter
from archdsl.syntax.formatter import format_source
from archdsl.syntax.parser import _lark, parse

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "zoo_specs").glob("*.arch")) + sorted((ROOT / "archdsl" / "stdlib").glob("*.arch"))


# ---- helpers -----------------------------------------------------------------------

def same_ast(a, b, path: str = "module") -> None:
    """Assert that two ASTs are equal field by field, ignoring source spans.

    Leaf values must have the same type too (``1`` is not ``1.0``, ``true`` is not ``1``).
    """
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            if f.name == "span" or f.name.endswith("_span"):
                continue
            same_ast(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, tuple):
        assert len(a) == len(b), f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            same_ast(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def comments(text: str) -> Counter:
    """The comment texts of a spec (the lexer's COMMENT tokens, trailing blanks dropped)."""
    return Counter(str(t).rstrip() for t in _lark().lex(text, dont_ignore=True) if t.type == "COMMENT")


def check_format(text: str) -> str:
    out = format_source(text)
    same_ast(parse(text), parse(out))
    assert format_source(out) == out, "formatting is not idempotent"
    assert comments(out) == comments(text)
    assert all(len(line) == len(line.rstrip()) for line in out.split("\n")), "trailing blanks"
    return out


# ---- every shipped spec ------------------------------------------------------------------

@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_shipped_specs_keep_ast_comments_and_are_stable(path):
    check_format(path.read_text(encoding="utf-8"))


def test_there_are_specs_to_check():
    assert any(p.name == "resnet.arch" for p in SPECS)
    assert any(p.parent.name == "stdlib" for p in SPECS)


# ---- random specs from the grammar's constructs -------------------------------------------

NAMES = ["a", "b", "x", "h", "w2", "_t"]
NOTES = ["# note", "# TODO: check -> here", "#", "# if x else y", "# } {"]
FLOATS = ["0.5", "1.", ".25", "1e-3", "2.5E2", "3.0e+1"]
STRINGS = ['"a"', '"say \\"hi\\""', '"tab\\t"', '""', '"# not a comment"', '"back\\\\slash"']
ARITH = ["+", "-", "*", "/", "//", "%", "**"]
COMPARE = ["==", "!=", "<", "<=", ">", ">=", "in", "not in"]


class SpecText:
    """Draws the text of a small valid spec, with random spacing, line breaks and comments.

    Line breaks only go where a line may start (never before a conditional's
    ``if``); comments only go at line ends and on lines of their own.
    """

    def __init__(self, draw):
        self.draw = draw

    def pick(self, options):
        return self.draw(st.sampled_from(options))

    def coin(self, p: float = 0.5) -> bool:
        return self.draw(st.integers(0, 19)) < 20 * p

    def many(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def sp(self) -> str:
        return self.pick([" ", "", "  "])

    def nl(self) -> str:
        k = self.many(0, 7)
        text = ("  " + NOTES[k % 5] if k >= 4 else "") + "\n"
        if k in (1, 6):
            text += ("\n" if k == 1 else "    ") + NOTES[k - 2] + "\n"
        return text

    def comma(self) -> str:
        return "," + (self.nl() if self.coin(0.15) else self.sp())

    # ---- expressions, following the grammar's precedence levels
    def atom(self) -> str:
        k = self.many(0, 5)
        if k == 0:
            return self.pick(NAMES)
        if k == 1:
            return str(self.many(0, 300))
        if k == 2:
            return self.pick(FLOATS)
        if k == 3:
            return self.pick(STRINGS)
        return self.pick(["true", "false", "none"])

    def primary(self, d: int) -> str:
        k = self.many(0, 13) if d > 0 else 0
        if k <= 1 or k > 7:
            return self.atom()
        if k == 2:
            return "(" + self.test(d - 1) + ")"
        if k == 3:
            return self.pick(NAMES) + "(" + self.args(d - 1) + ")"
        if k == 4:
            base = self.pick(NAMES + ["(" + self.atom() + ")"])
            return base + self.pick(["[" + self.test(d - 1) + "]", "." + self.pick(NAMES)])
        if k == 5:
            items = [self.test(d - 1) for _ in range(self.many(0, 3))]
            return "[" + ", ".join(items) + self.pick(["", ","] if items else [""]) + "]"
        if k == 6:
            items = [self.test(d - 1) for _ in range(self.many(0, 3))]
            if len(items) == 1:
                return f"({items[0]},)"
            return "(" + ", ".join(items) + ")"
        return f"[{self.test(d - 1)} for {self.targets()} in {self.test(d - 1)}]"

    def factor(self, d: int) -> str:
        return self.pick(["", "", "-", "+", "- "]) + self.primary(d)

    def arith(self, d: int) -> str:
        text = self.factor(d)
        for _ in range(self.many(0, 3) // 2):
            text += self.sp() + self.pick(ARITH) + self.sp() + self.factor(d)
        return text

    def not_test(self, d: int) -> str:
        text = self.arith(d)
        for _ in range(self.many(0, 1)):
            text += " " + self.pick(COMPARE) + " " + self.arith(d)
        return self.pick(["", "", "not "]) + text

    def or_test(self, d: int) -> str:
        text = self.not_test(d)
        for _ in range(self.many(0, 1)):
            text += " " + self.pick(["and", "or"]) + " " + self.not_test(d)
        return text

    def test(self, d: int = 1) -> str:
        if d > 0 and self.coin(0.2):
            text = f"{self.or_test(d - 1)} if {self.or_test(d - 1)} else {self.test(d - 1)}"
            return f"({text})" if self.coin(0.3) else text
        return self.or_test(d)

    def args(self, d: int) -> str:
        items = [self.test(d) for _ in range(self.many(0, 2))]
        items += [f"{n}{self.sp()}={self.sp()}{self.test(d)}" for n in NAMES[:self.many(0, 2)]]
        return self.comma().join(items)

    def target(self, nested: bool) -> str:
        if nested and self.coin(0.2):
            return f"({self.target(False)}, {self.target(False)})"
        return self.pick(NAMES)

    def targets(self) -> str:
        return ", ".join(self.target(True) for _ in range(self.many(1, 2)))

    # ---- layers
    def label(self) -> str:
        k = self.many(0, 3)
        if k == 0:
            return f"{self.pick(NAMES)}:{self.sp()}"
        if k == 1:
            return f"{self.pick(NAMES)}{{{self.test(1)}}}: "
        return ""

    def comp(self) -> str:
        return f" for {self.targets()} in {self.test(1)}"

    def arrow(self) -> str:
        return self.pick([" -> ", "->", " ->" + self.nl(), self.nl() + "    -> "])

    def chain_body(self, d: int) -> str:
        return self.arrow().join(self.layer(d) for _ in range(self.many(1, 3)))

    def call_args(self) -> str:
        return self.pick(["", "()", "(" + self.args(1) + ")"])

    def layer(self, d: int) -> str:
        k = self.many(0, 8) if d > 0 else 0
        label = self.label()
        if k <= 2:
            callee = ".".join(self.pick(NAMES) for _ in range(self.many(1, 2)))
            return label + callee + self.call_args()
        if k == 3:
            return label + "[" + self.chain_body(d - 1) + "]"
        if k == 4:
            return label + "[" + self.layer(d - 1) + self.comp() + "]"
        if k in (5, 6):
            branches = []
            for i in range(self.many(1, 3)):
                has_comp = self.coin(0.3)
                branch = self.chain_body(d - 1) + (self.comp() if has_comp else "")
                branches.append(branch + ("," if has_comp or self.coin(0.3) else ""))
            head = self.pick(["parallel", "dense"]) + self.call_args()
            return label + head + " {" + self.nl() + self.nl().join(branches) + self.nl() + "}"
        if k == 7:
            text = label + "residual {" + self.chain_body(d - 1) + "}"
            if self.coin():
                cond = f" if {self.test(1)}" if self.coin() else ""
                text += f" shortcut{cond} {{{self.nl()}{self.chain_body(d - 1)}}}"
            return text
        return label + "stn" + self.call_args() + " {" + self.chain_body(d - 1) + self.nl() + "}"

    def chain(self, d: int) -> str:
        return self.test(1) + self.arrow() + self.chain_body(d)

    # ---- statements and items
    def value(self, d: int) -> str:
        return self.chain(d) if self.coin() else self.test()

    def body(self, d: int) -> str:
        stmts = [self.stmt(d) for _ in range(self.many(0, 2 + d))]
        return "{" + self.nl() + "".join(s + self.nl() for s in stmts) + "}"

    def stmt(self, d: int) -> str:
        k = self.many(0, 7) if d > 0 else self.many(0, 3)
        if k == 0:
            return f"input {self.pick(NAMES)}" + self.pick(["", ": [3, 8, 8]", ": " + self.test(1)])
        if k in (1, 2):
            return f"output {', '.join(self.value(d + 1) for _ in range(self.many(1, 2)))}"
        if k == 3:
            target = self.pick(NAMES) + "".join(", " + self.target(True) for _ in range(self.many(0, 1)))
            return f"{target}{self.sp()}={self.sp()}{self.value(d + 1)}"
        if k == 4:
            return f"assert {self.test()}" + (self.comma() + self.test(1) if self.coin() else "")
        if k in (5, 6):
            text = f"if {self.test()} {self.body(d - 1)}"
            for _ in range(self.many(0, 1)):
                text += f" elif {self.test(1)} {self.body(d - 1)}"
            return text + (f" else {self.body(d - 1)}" if self.coin() else "")
        return f"for {self.targets()} in {self.test(1)} {self.body(d - 1)}"

    def params(self) -> str:
        out = []
        for name in NAMES[:self.many(0, 3)]:
            out.append(name + self.pick(["", ": int", ":list"]) + self.pick(["", " = " + self.test(1)]))
        return self.comma().join(out) + self.pick(["", ","] if out else [""])

    def item(self) -> str:
        k = self.many(0, 5)
        if k == 0:
            return self.pick(['import "other.arch"', "import std.layers", 'import "x.arch" as o'])
        if k == 1:
            return f"{self.pick(NAMES).upper()} = {self.test()}"
        if k == 2:
            return f"model {self.pick(NAMES)} = {self.pick(NAMES)}({self.args(1)})"
        kind = self.pick(["block", "model"])
        return f"{kind} {self.pick(NAMES)}({self.params()}) {self.body(1)}"

    def module(self) -> str:
        head = self.pick(["", "# header\n", "# header\n\n"])
        return head + "".join(self.item() + self.nl() for _ in range(self.many(1, 2)))


@st.composite
def spec_texts(draw) -> str:
    return SpecText(draw).module()


@st.composite
def expression_texts(draw) -> str:
    return f"X = {SpecText(draw).test(3)}\n"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_texts(), st.sampled_from([30, 60, 100]))
def test_random_specs_keep_ast_comments_and_are_stable(text, width):
    """Narrow line widths make the chain-breaking paths common in small specs."""
    saved, formatter.WIDTH = formatter.WIDTH, width
    try:
        check_format(text)
    finally:
        formatter.WIDTH = saved


@settings(max_examples=60, deadline=None)
@given(expression_texts())
def test_random_expressions_keep_their_tree(text):
    check_format(text)


# ---- pinned style -----------------------------------------------------------------------

MESSY = '''\
# header comment
import   std.layers
WIDTHS=[16,32,  64,]   # a trailing comma keeps one item per line
block  unit ( c:int, stride = 1 ) {
  input x # the input
  y = x->conv(c,3,stride = stride,padding=1,bias = false)->bn->relu
  # pick the shortcut
  output y -> residual { conv(c, 1) -> bn } shortcut if stride!=1 or channels(x)!=c {
     proj: [conv(c, 1) -> bn]
  }->relu
}
model net(n: int = 2, size = 32) {
    input x: [3, size,size]
    h = x -> stem: conv(16, 3, padding=1) -> bn -> relu -> conv(16, 3, padding=1) -> bn -> relu -> maxpool(2)
    for i,w in enumerate(WIDTHS) {
        if i==0 { h = h -> stage{i+1}: [unit(w, 1 if j==0 else 1) for j in range(n)] }


        else { h = h -> stage{i + 1}: [unit(w, (2 if j == 0 else 1)) for j in range((n))]   # downsample
        }
    }
    h = h -> parallel { a: conv(8, 1), b: [conv(8, 1) -> conv(8, 3, padding=1)]
                        c: avgpool(3, stride=1, padding=1) -> conv(8, 1) }
    assert (-size) ** 2 >= 0 and not (true and false), "msg with \\"quotes\\""
    output h -> dense(growth=4) { [bn -> relu -> conv(4, 3, padding=1)] for j in range(2) } -> flatten -> linear(10)
}
model net2=net(n=3)
'''

EXPECTED = '''\
# header comment
import std.layers
WIDTHS = [
    16,
    32,
    64,
]  # a trailing comma keeps one item per line

block unit(c: int, stride = 1) {
    input x  # the input
    y = x -> conv(c, 3, stride=stride, padding=1, bias=false) -> bn -> relu
    # pick the shortcut
    output y -> residual {
        conv(c, 1) -> bn
    } shortcut if stride != 1 or channels(x) != c {
        proj: [conv(c, 1) -> bn]
    } -> relu
}

model net(n: int = 2, size = 32) {
    input x: [3, size, size]
    h = x -> stem: conv(16, 3, padding=1) -> bn -> relu -> conv(16, 3, padding=1) -> bn -> relu
          -> maxpool(2)
    for i, w in enumerate(WIDTHS) {
        if i == 0 {
            h = h -> stage{i + 1}: [unit(w, 1 if j == 0 else 1) for j in range(n)]
        } else {
            h = h -> stage{i + 1}: [unit(w, (2 if j == 0 else 1)) for j in range(n)]  # downsample
        }
    }
    h = h -> parallel {
        a: conv(8, 1)
        b: [conv(8, 1) -> conv(8, 3, padding=1)]
        c: avgpool(3, stride=1, padding=1) -> conv(8, 1)
    }
    assert (-size) ** 2 >= 0 and not (true and false), "msg with \\"quotes\\""
    output h -> dense(growth=4) {
        [bn -> relu -> conv(4, 3, padding=1)] for j in range(2)
    } -> flatten -> linear(10)
}

model net2 = net(n=3)
'''


def test_messy_input_gets_the_canonical_layout():
    assert check_format(MESSY) == EXPECTED


def test_the_pinned_example_elaborates_to_the_same_graph():
    import archdsl
    from archdsl.ir.printer import print_graph
    before, after = (archdsl.load(text, "net2") for text in (MESSY, EXPECTED))
    assert len(after) > 10
    assert print_graph(after, locations=False) == print_graph(before, locations=False)


@pytest.mark.parametrize("src, out", [
    ("X = (a + b) * c - (d - e) - f\n", "X = (a + b) * c - (d - e) - f\n"),
    ("X = ((a * b)) + (c ** (d ** e))\n", "X = a * b + c ** d ** e\n"),
    ("X = (a ** b) ** c\n", "X = (a ** b) ** c\n"),
    ("X = -(a ** 2) + (-a) ** 2\n", "X = -a ** 2 + (-a) ** 2\n"),
    ("X = (not a) == b and not (a == b)\n", "X = (not a) == b and not a == b\n"),
    ("X = (a or b) or (c and d)\n", "X = (a or b) or c and d\n"),
    ("X = (a if b else c) + (d if e else f if g else h)\n", "X = (a if b else c) + (d if e else f if g else h)\n"),
    ("X = (a if (b if c else d) else e)\n", "X = (a if (b if c else d) else e)\n"),
    ("X = a if b else c\n", "X = a if b else c\n"),
    ("X = f((a if b else c), k = (d))\n", "X = f((a if b else c), k=d)\n"),
    ("X = (1).real + (1.5).imag + 2 .real\n", "X = (1).real + 1.5.imag + (2).real\n"),
    ("X = [1., .5, 1e-3, 1E5, 1e-5, 2.5e+300, 007, True]\n",
     "X = [1.0, 0.5, 0.001, 100000.0, 1e-5, 2.5e300, 7, True]\n"),
    ("X = (true, false, none, (1,), (), [], [x for (i, j), k in y])\n",
     "X = (true, false, none, (1,), (), [], [x for (i, j), k in y])\n"),
    ('X = "a\\"b\\\\c\\n\\q"\n', 'X = "a\\"b\\\\c\\nq"\n'),
    ("X = a not  in b<c\n", "X = a not in b < c\n"),
])
def test_expressions_get_minimal_parentheses_and_canonical_spelling(src, out):
    assert check_format(src) == out


def test_statement_if_and_conditional_if_stay_apart():
    src = "block b() {\n    input x\n    y = x if true else x\n    if y {\n    output y -> relu\n    }\n}\n"
    out = check_format(src)
    lines = out.split("\n")
    assert "    y = x if true else x" in lines and "    if y {" in lines
    assert not any(line.lstrip().startswith("if ") and "else" in line for line in lines)


def test_long_chains_break_before_arrows_and_keep_source_breaks():
    long = " -> ".join(f"conv{i}: conv({i}, 3)" for i in range(12))
    out = check_format(f"block b() {{\n    input x\n    output x -> {long}\n}}\n")
    body = out.split("\n")[2:-2]
    assert len(body) > 1 and all(len(line) <= 100 for line in body)
    assert all(line.startswith("             -> ") for line in body[1:])
    kept = "block b() {\n    input x\n    output x -> a\n             -> b -> c\n}\n"
    assert check_format(kept) == kept


def test_comments_between_layers_force_breaks():
    src = ("block b() {\n    input x\n    h = x -> a  # after a\n"
           "        # before b\n        -> b -> c(1,  # inside c\n 2) -> d\n    output h\n}\n")
    assert check_format(src) == (
        "block b() {\n    input x\n    h = x -> a  # after a\n          # before b\n"
        "          -> b -> c(1, 2)  # inside c\n          -> d\n    output h\n}\n")


def test_comments_in_odd_places_are_moved_not_lost():
    src = ("block b(  # params\n    p: int,\n    # own line\n) {  # open\n  input x # one\n"
           "  y = f(1, # two\n 2, # three\n 3)\n  # dangling\n}  # closed\n# end\n")
    out = check_format(src)
    assert out == ("block b(  # params\n    p: int,\n    # own line\n) {  # open\n    input x  # one\n"
                   "    y = f(1, 2, 3)  # two\n    # three\n    # dangling\n}  # closed\n# end\n")


def test_blank_lines_between_statements_are_kept_once():
    src = "model m() {\n    input x\n\n\n    # about y\n    y = x\n\n    output y\n}\nmodel a = m()\nmodel c = m()\n"
    assert check_format(src) == src.replace("\n\n\n", "\n\n").replace("}\nmodel a", "}\n\nmodel a")
    assert check_format("model a = m()\n\nmodel c = m()\n") == "model a = m()\n\nmodel c = m()\n"


def test_empty_and_comment_only_files():
    assert format_source("") == ""
    assert format_source("  # only\n\n\n# comments  \n") == "# only\n\n# comments\n"


def test_bad_input_raises_arch_error_not_a_traceback():
    with pytest.raises(ArchError) as info:
        format_source("block b( {\n", "bad.arch")
    assert str(info.value).startswith("bad.arch:1:")
    with pytest.raises(ArchError):
        format_source("X = a\nif b else c\n")


# ---- archc fmt -------------------------------------------------------------------------

def test_cli_check_in_place_and_stdout(tmp_path, capsys):
    messy = tmp_path / "messy.arch"
    messy.write_text(MESSY, encoding="utf-8")
    assert main(["fmt", "--check", str(messy)]) == 1
    assert "would be reformatted" in capsys.readouterr().err
    assert main(["fmt", str(messy)]) == 0
    assert capsys.readouterr().out == EXPECTED
    assert messy.read_text(encoding="utf-8") == MESSY
    assert main(["fmt", "-i", str(messy)]) == 0
    assert messy.read_text(encoding="utf-8") == EXPECTED
    assert main(["fmt", "--check", str(messy)]) == 0
    assert capsys.readouterr().err == ""


def test_cli_reports_bad_input_as_a_diagnostic(tmp_path, capsys):
    bad = tmp_path / "bad.arch"
    bad.write_text("model m() {\n    input x\n    output x ->\n}\n", encoding="utf-8")
    assert main(["fmt", "--check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.arch:4:1: error:" in err and "Traceback" not in err
    assert main(["fmt", "-i", str(tmp_path / "missing.arch")]) == 1


# ---- wrapped headers and nested lists -------------------------------------------------------

def test_nested_lists_that_do_not_fit_wrap_after_their_bracket():
    row = ", ".join(["64", '"M"', "128", "256", "512"] * 4)
    src = f'CONFIGS = [\n    ("A", [64, "M"]),\n    ("E", [{row}]),\n]\nX = [[1, 2], (3,)]\n'
    assert check_format(src) == (
        'CONFIGS = [\n    ("A", [64, "M"]),\n'
        '    ("E", [64, "M", 128, 256, 512, 64, "M", 128, 256, 512, 64, "M", 128, 256, 512, 64, "M", 128,\n'
        '           256, 512]),\n]\nX = [[1, 2], (3,)]\n')
    # a source break between items is kept once the list has to wrap, and only then
    kept = 'T = [\n    ("E", [111111111, 222222222, 333333333, 444444444,\n' \
           '           555555555, 666666666, 777777777, 888888888, 999999999, 123456789, 1]),\n]\n'
    assert check_format(kept) == kept
    joined = 'T = [\n    ("E", [1, 2,\n           3]),\n]\n'
    assert check_format(joined) == 'T = [\n    ("E", [1, 2, 3]),\n]\n'
    # rows that fit a fresh line are not split; one that fits nowhere wraps in place
    rows = ", ".join(f"[{i}000000, {i}000000, {i}000000]" for i in range(1, 5))
    out = check_format(f"T = [\n    ({rows}, [{', '.join(['123456789'] * 12)}]),\n]\n")
    assert out == (
        "T = [\n    ([1000000, 1000000, 1000000], [2000000, 2000000, 2000000], [3000000, 3000000, 3000000],\n"
        "     [4000000, 4000000, 4000000], [123456789, 123456789, 123456789, 123456789, 123456789, 123456789,\n"
        "                                   123456789, 123456789, 123456789, 123456789, 123456789,\n"
        "                                   123456789]),\n]\n")


def test_long_headers_wrap_after_the_parenthesis_and_keep_source_breaks():
    params = ", ".join(f"p{i}: int = {i}" for i in range(9))
    out = check_format(f"model m({params}) {{\n    input x\n    output x\n}}\n")
    assert out.split("\n")[:2] == [
        "model m(p0: int = 0, p1: int = 1, p2: int = 2, p3: int = 3, p4: int = 4, p5: int = 5, p6: int = 6,",
        "        p7: int = 7, p8: int = 8) {"]
    kept = "block b(a: int, b: list,\n        c: float = 0.5, d: bool = false, e: int = 1000, f: int = 224, g = 2, h = 3) {\n" \
           "    input x\n    output x\n}\n"
    assert check_format(kept) == kept


def test_layer_calls_with_long_tables_wrap_their_arguments():
    """What `--emit arch` writes for a pruned DenseNet: per-layer width tables that grow with the depth."""
    a = ", ".join(["64", "80"] * 12)
    b = ", ".join(["16", "32"] * 12)
    src = (f"block layer(c1: int, c2: int) {{\n    input x\n    output x -> conv(c1, 1) -> conv(c2, 3, padding=1)\n}}"
           f"\n\nmodel m() {{\n    input x: [3, 8, 8]\n    output x -> d: dense {{\n"
           f"        l{{j + 1}}: layer([{a}][j], [{b}][j]) for j in range(24)\n    }}\n}}\n")
    out = check_format(src)
    assert out.split("\n")[8:13] == [
        "        l{j + 1}: layer([64, 80, 64, 80, 64, 80, 64, 80, 64, 80, 64, 80, 64, 80, 64, 80, 64, 80, 64,",
        "                         80, 64, 80, 64, 80][j],",
        "                        [16, 32, 16, 32, 16, 32, 16, 32, 16, 32, 16, 32, 16, 32, 16, 32, 16, 32, 16,",
        "                         32, 16, 32, 16, 32][j]) for j in range(24)",
        "    }"]
    # any call breaks between its arguments, aligned after its "("
    plain = "model m() {\n    input x: [3, 8, 8]\n    output x -> conv(" + ", ".join(["1"] * 40) + ", bias=false)\n}\n"
    assert check_format(plain).split("\n")[2:4] == [
        "    output x -> conv(" + ", ".join(["1"] * 26) + ",",
        "                     " + ", ".join(["1"] * 14) + ", bias=false)"]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_shipped_specs_are_formatted(path):
    text = path.read_text(encoding="utf-8")
    assert format_source(text, str(path)) == text, f"run `archc fmt -i {path.relative_to(ROOT)}`"
