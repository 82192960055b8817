"""Language features of issue 14: labels, functions, math built-ins, ``ops.``, sequence values,
comprehension filters and item assignment (docs/language.md). Errors pin message and location."""
from __future__ import annotations

import pytest

import archdsl
from archdsl import ArchError
from archdsl.frontend.expressions import Env
from archdsl.syntax.formatter import format_source
from archdsl.syntax.parser import parse


def M(*lines, params: str = "") -> str:
    """A model `m` with input x: [3, 8, 8] and the given body lines."""
    body = "\n".join("    " + ln for ln in lines)
    return f"model m({params}) {{\n    input x: [3, 8, 8]\n{body}\n}}\n"


def scopes(g) -> list:
    return [g.data(n)["scope"] for n in g.node_ids() if g.data(n)["op"] != "input"]


def error(source: str, **kw) -> ArchError:
    with pytest.raises(ArchError) as info:
        archdsl.load(source, **kw)
    return info.value


def where(err: ArchError) -> tuple:
    s = err.span
    return (s.line, s.col, s.end_line, s.end_col)


# ---- labels -------------------------------------------------------------------------------------

def test_labels_may_be_keywords_hold_dashes_digits_and_several_values():
    g = archdsl.load(M('s = "a"',
                       "h = x -> block: relu -> input: relu -> for: relu -> if: relu -> dense: relu",
                       "h = h -> block{s}: relu -> block{1}-{2}: relu -> block1-0: relu -> trunk_output: relu",
                       "h = h -> parallel { in{k}: relu for k in [1, 2] }",
                       "output h"))
    assert scopes(g) == ["block", "input", "for", "if", "dense", "blocka", "block1-2", "block1-0", "trunk_output",
                         "in1", "in2", "11"]


def test_a_construct_keyword_label_and_a_construct_stay_apart():
    g = archdsl.load(M("h = x -> dense{1}: dense { relu } -> parallel{2}-a : parallel { relu }", "output h"))
    assert scopes(g) == ["dense1.0", "dense1.1", "parallel2-a.0"]
    out = format_source(M("h = x -> dense{1}: dense { relu } -> parallel{2}-a : parallel { relu }", "output h"))
    assert "dense{1}: dense {" in out and "parallel{2}-a: parallel {" in out


def test_a_keyword_label_at_the_start_of_a_line_is_still_a_label():
    g = archdsl.load(M("h = x -> residual {", "if: conv(3, 1)", "-> else: relu", "}", "output h"))
    assert scopes(g) == ["if", "else", "2"]


@pytest.mark.parametrize("value, text, at", [
    ('"a b"', '"blocka b"', (3, 23, 3, 28)),
    ('"ﬁ"', '"blockﬁ"', (3, 23, 3, 26)),          # NFKC would make it `fi` and collide with `blockfi:`
    ('"a.b"', '"blocka.b"', (3, 23, 3, 28)),
])
def test_a_label_that_is_not_a_name_after_interpolation_is_refused(value, text, at):
    err = error(M(f"output x -> block{{{value}}}: relu"))
    assert err.message == (f"The label {text} is not a valid name: the value {value} may hold only ASCII letters, "
                           "digits, '_' and '-'.")
    assert where(err) == at


def test_a_label_value_must_be_an_int_or_a_string():
    err = error(M("output x -> layer{true}: relu"))
    assert err.message == "A value in a label must be an int or a string, but got a bool."
    assert where(err) == (3, 23, 3, 27)


def test_label_pieces_are_written_without_spaces():
    with pytest.raises(ArchError) as info:
        parse(M("output x -> block1 - 0: relu"))
    assert info.value.message.startswith("Unexpected '-' here")


def test_a_number_piece_with_a_point_is_refused():
    with pytest.raises(ArchError) as info:
        parse(M("output x -> a-1.5: relu"))
    assert info.value.message == "The label text 'a-1.5' may hold only letters, digits, '_' and '-'."
    assert where(info.value) == (3, 17, 3, 22)


@pytest.mark.parametrize("source, message, at", [
    ("block b(for: int) {\n    input x\n    output x\n}\n",
     "'for' is a keyword and cannot be a parameter; keywords can only be labels.", (1, 9, 1, 12)),
    ("block b(a-b: int) {\n    input x\n    output x\n}\n",
     "'a-b' is not a valid name for a parameter: a name is letters, digits and '_', starting with a letter or '_' "
     "('-' is allowed in labels only).", (1, 9, 1, 12)),
])
def test_keywords_and_dashes_do_not_make_names(source, message, at):
    with pytest.raises(ArchError) as info:
        parse(source)
    assert info.value.message == message and where(info.value) == at


def test_a_parameter_declared_twice_is_refused():
    err = error('block b(n: int = 4, n: string = "a") {\n    input x\n    output x\n}\n' + M("output x -> b"))
    assert err.message == "The parameter 'n' is declared twice; give each parameter its own name."
    assert where(err) == (1, 21, 1, 22) and err.notes[0].span.col == 9


# ---- functions ------------------------------------------------------------------------------------

MAKE_DIVISIBLE = """
def make_divisible(v: float, divisor: int = 8, min_value = none) {
    m = divisor if min_value == none else min_value
    new_v = max(m, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v
}
"""


def test_a_function_computes_values_anywhere_in_expressions():
    g = archdsl.load(MAKE_DIVISIBLE + M("assert make_divisible(32 * 0.75) == 24 and make_divisible(10, 8) == 16",
                                        "assert make_divisible(3, min_value=16) == 16",
                                        "output x -> conv(make_divisible(8 * 1.4), 1)"))
    assert g.type_of(g.outputs[0]).shape[1] == 16


def test_functions_branch_loop_assert_and_recurse():
    src = """
def fib(n: int) {
    if n < 2 {
        return n
    } elif n > 40 {
        assert false, "too big"
    }
    return fib(n - 1) + fib(n - 2)
}

def total(xs: list) {
    s = 0
    for v in xs {
        if v < 0 {
            return -1
        }
        s = s + v
    }
    return s
}
""" + M("assert fib(10) == 55 and total([1, 2, 3]) == 6 and total([1, -2]) == -1", "output x")
    archdsl.load(src)


def test_a_function_may_read_a_tensor_shape_but_not_return_a_tensor():
    src = "def half(t) {\n    return channels(t) // 2 + height(t)\n}\n"
    archdsl.load(src + M("assert half(x) == 9", "output x"))
    err = error("def same(t) {\n    return t\n}\n" + M("y = same(x)", "output x"))
    assert err.message == ("Function 'same' returns a tensor; functions compute values (they may read a tensor's "
                           "shape), and layers are applied in blocks.")
    assert where(err) == (2, 5, 2, 13)
    assert err.notes[0].message == "in function 'same', called here"


def test_functions_are_importable(tmp_path, monkeypatch):
    (tmp_path / "lib.arch").write_text(MAKE_DIVISIBLE + "WIDTH = make_divisible(20)\n")
    (tmp_path / "net.arch").write_text('import "lib.arch" as lib\n' + M(
        "assert lib.make_divisible(20) == lib.WIDTH", "f = lib.make_divisible", "assert f(100, 16) == 96",
        "output x -> conv(lib.make_divisible(12), 1)"))
    monkeypatch.chdir(tmp_path)
    g = archdsl.load("net.arch")
    assert g.type_of(g.outputs[0]).shape[1] == 16


FUNCTION_ERRORS = [
    ("no-return", "def f(n: int) {\n    if n > 0 {\n        return 1\n    }\n}\n" + M("output x"),
     "Function 'f' can reach the end of its body without a `return`; end every path with `return value` or "
     "`assert false, \"why\"` (an `if` needs an `else` that returns too).", (2, 5, 4, 6)),
    ("input", "def f(n: int) {\n    input y\n    return 1\n}\n" + M("output x"),
     "A function cannot declare an input: it computes a value from its arguments. Use a block for layers, or "
     "pass the tensor in to read its shape.", (2, 5, 2, 12)),
    ("layers", "def f(t) {\n    y = t -> relu\n    return 1\n}\n" + M("n = f(x)", "output x"),
     "A function cannot apply layers: it computes values at compile time. Apply the layers in a block, passing "
     "the function's results as arguments.", (2, 9, 2, 18)),
    ("return-in-block", M("return 1"),
     "`return` ends a function, and 'm' is a model: a model ends with `output x`.", (3, 5, 3, 13)),
    ("function-as-layer", "def f(n: int) {\n    return n\n}\n" + M("output x -> f(3)"),
     "'f' is a function, not a layer: call it in an expression (`n = f(...)`) and pass its result to a layer.",
     (6, 17, 6, 18)),
    ("block-as-function", "block b(c: int) {\n    input x\n    output x -> conv(c, 1)\n}\n" + M("y = b(x)",
                                                                                          "output x"),
     "'b' is a block, not a function: apply it to a tensor with `x -> b(...)`; calling it in an expression only "
     "configures it, and its arguments cannot be tensors.", (7, 11, 7, 12)),
    ("arity", MAKE_DIVISIBLE + M("n = make_divisible(1, 2, 3, 4)", "output x"),
     "Function 'make_divisible' takes 3 arguments, but 4 were given.", (9, 33, 9, 34)),
    ("keyword", MAKE_DIVISIBLE + M("n = make_divisible(1, divisr=2)", "output x"),
     "Function 'make_divisible' has no argument 'divisr'; did you mean 'divisor'?", (9, 27, 9, 35)),
    ("missing", MAKE_DIVISIBLE + M("n = make_divisible()", "output x"),
     "Function 'make_divisible' is missing its required argument 'v'.", (9, 9, 9, 25)),
    ("type", MAKE_DIVISIBLE + M('n = make_divisible("8")', "output x"),
     "Argument 'v' of function 'make_divisible' must be a number, but got a string \"8\".", (9, 24, 9, 27)),
    ("too-deep", "def f(n: int) {\n    return f(n + 1)\n}\n" + M("n = f(0)", "output x"),
     "Function calls are nested more than 48 deep; is a recursion missing its base case?", (2, 12, 2, 20)),
]


@pytest.mark.parametrize("source, message, at", [c[1:] for c in FUNCTION_ERRORS], ids=[c[0] for c in FUNCTION_ERRORS])
def test_function_misuse_is_a_located_error(source, message, at):
    err = error(source)
    assert err.message == message
    assert where(err) == at


def test_runaway_recursion_is_bounded_by_the_step_budget():
    src = "def fib(n: int) {\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n}\n" + M("n = fib(40)", "output x")
    assert error(src).message.startswith("Elaboration took more than 1500000 steps")


# ---- math built-ins ----------------------------------------------------------------------------------

def test_math_builtins_follow_python():
    archdsl.load(M("assert ceil(2.1) == 3 and ceil(-2.1) == -2 and floor(2.9) == 2 and floor(-2.5) == -3",
                   "assert round(2.5) == 2 and round(3.5) == 4 and round(2.675, 2) == 2.67 and round(17, -1) == 20",
                   "assert log(8, 2) == 3.0 and log2(1024) == 10.0 and sqrt(16) == 4.0 and exp(0) == 1.0",
                   "assert abs(log(exp(2.0)) - 2.0) < 1e-12 and str(ceil(1.5)) == \"2\"",
                   "output x"))


@pytest.mark.parametrize("call, message, col", [
    ("log(0)", "'log' needs a positive number, but got 0.", 9),
    ("log(8, 1)", "The base of 'log' must be positive and not 1, but got 1.", 9),
    ("sqrt(-1)", "'sqrt' needs a number of at least 0, but got -1.", 9),
    ("exp(1000)", "'exp' of 1000 is too large for a float.", 9),
    ("ceil(\"a\")", "'ceil' needs a number, but got a string.", 9),
    ("round(1.5, 2, 3)", "The built-in 'round' takes 1 to 2 arguments, but 3 were given.", 9),
    ("log2()", "The built-in 'log2' takes 1 argument, but 0 were given.", 9),
    ("enumerate([1], strat=1)", "The built-in 'enumerate' has no argument 'strat'; did you mean 'start'?", 24),
])
def test_math_builtin_misuse(call, message, col):
    err = error(M(f"n = {call}", "output x"))
    assert err.message == message
    assert where(err)[:2] == (3, col)


# ---- ops. ----------------------------------------------------------------------------------------------

def test_ops_names_the_builtin_op_whatever_hides_it():
    src = """
block dropout(p: float) {
    input x
    output x -> relu
}

block b(dropout: float = 0.3, relu: int = 2) {
    input x
    act = ops.relu
    output x -> ops.dropout(dropout) -> act -> ops.leaky_relu(0.1)
}
""" + M("output x -> b -> dropout(0.5)")
    g = archdsl.load(src)
    ops = [(g.data(n)["scope"], g.data(n)["op"], g.data(n)["attrs"].get("p")) for n in g.node_ids()][1:]
    assert ops == [("0.0", "dropout", 0.3), ("0.1", "relu", None), ("0.2", "leaky_relu", None),
                   ("1.0", "relu", None)]


@pytest.mark.parametrize("source, message, at", [
    (M("ops = 3", "output x"),
     "The name 'ops' is reserved for the built-in ops (`ops.conv(...)`); choose another name for a variable.",
     (3, 5, 3, 8)),
    ("block b(ops: int) {\n    input x\n    output x\n}\n",
     "The name 'ops' is reserved for the built-in ops (`ops.conv(...)`); choose another name for a parameter.",
     (1, 9, 1, 12)),
    ("ops = 1\n", "The name 'ops' is reserved for the built-in ops (`ops.conv(...)`); choose another name for a "
     "constant.", (1, 1, 1, 4)),
    (M("for ops in [1] {", "}", "output x"),
     "The name 'ops' is reserved for the built-in ops (`ops.conv(...)`); choose another name for a variable.",
     (3, 9, 3, 12)),
])
def test_binding_ops_is_refused(source, message, at):
    with pytest.raises(ArchError) as info:
        parse(source)
    assert info.value.message == message and where(info.value) == at


def test_an_unknown_op_after_ops_gets_a_suggestion():
    err = error(M("output x -> ops.dropotu(0.1)"))
    assert err.message == "There is no built-in op 'dropotu'; did you mean 'dropout'?"
    assert where(err) == (3, 17, 3, 28)
    err = error(M("a = ops.nosuchop", "output x"))
    assert err.message.startswith("There is no built-in op 'nosuchop'")


# ---- sequences as values ------------------------------------------------------------------------------

def test_a_sequence_value_is_a_layer_applied_later_with_the_values_it_saw():
    g = archdsl.load(M("c = 8", "b = [conv(c, 3, padding=1) -> relu]", "c = 16",
                       "acts = [relu, ops.gelu, [sigmoid -> tanh]]",
                       "output x -> b -> stem: b -> acts -> [b -> b]"))
    assert scopes(g) == ["0.0", "0.1", "stem.0", "stem.1", "2.0", "2.1", "2.2.0", "2.2.1",     # a label counts
                         "3.0.0", "3.0.1", "3.1.0", "3.1.1"]
    assert g.type_of(g.outputs[0]).shape[1] == 8


def test_sequence_values_take_labels_constructs_comprehensions_and_layer_parameters():
    src = """
block unit(act: layer = relu) {
    input x
    output x -> act
}
""" + M("u = [b{i}: conv(3, 1) -> relu for i in range(3) if i != 1]",
        "r = [residual { conv(3, 1) } -> relu]",
        "output x -> u -> r -> unit([gelu -> silu]) -> unit([relu, relu])")
    g = archdsl.load(src)
    assert scopes(g) == ["0.b0", "0.1", "0.b2", "0.3", "1.0", "1.1", "1.2", "2.0.0", "2.0.1", "3.0.0", "3.0.1"]


@pytest.mark.parametrize("lines, message, at", [
    (("b = [relu -> gelu]", "output x -> b(3)"), "'b' is a sequence of layers and takes no arguments; configure "
     "its layers where it is built.", (4, 19, 4, 20)),
    (("b = [1 -> relu]", "output x"), "A sequence `[a -> b]` must start with a layer (a block or op, possibly with "
     "arguments), not with this expression.", (3, 10, 3, 11)),
    (("b = [relu, 2]", "output x -> b"), "'b' is a list, not a layer; only blocks, ops, sequences and lists of them "
     "can follow '->'.", (4, 17, 4, 18)),
])
def test_sequence_value_misuse(lines, message, at):
    err = error(M(*lines))
    assert err.message == message and where(err) == at


# ---- comprehension filters ------------------------------------------------------------------------------

def test_filters_in_lists_sequences_branches_and_dense():
    src = M("assert [i * i for i in range(6) if i % 2 == 0] == [0, 4, 16]",
            "assert [i for i in [1, 2] if true else [3]] == [1, 2]     # a conditional expression to loop over",
            "h = x -> [conv(3, 1) for i in range(4) if i > 1]",
            "h = h -> parallel(merge=\"add\") { conv(3, k, padding=k // 2) for k in [1, 3, 5] if k != 3 }",
            "h = h -> dense { conv(2, 1) for j in range(5) if j < 2 }",
            "output h")
    g = archdsl.load(src)
    assert scopes(g) == ["0.0", "0.1", "1", "2", "3", "4", "5", "6", "7"]     # 3: the add, 5 and 7: concats
    assert g.type_of(g.outputs[0]).shape[1] == 7


def test_an_if_inside_brackets_is_never_a_statement():
    src = M("xs = [i for i in range(6)", "      if i > 3]",
            "y = max(1,", "        2 if xs == [4, 5] else 3)",
            "h = x -> parallel { relu for k in [1, 2]", "    if k > 1 }",
            "assert xs == [4, 5] and y == 2",
            "output h")
    archdsl.load(src)
    assert format_source(src).count("if") == 3


def test_comprehension_items_do_not_copy_the_body_variables():
    env = Env(None, {f"v{i}": i for i in range(1000)})
    inner = env.child()
    assert inner.vars == {} and inner.get("v7") == 7 and "v999" in inner and inner.flat()["v3"] == 3


# ---- item assignment ---------------------------------------------------------------------------------------

def test_item_assignment_rebinds_a_copy():
    archdsl.load(M("xs = [1, 2, 3]", "ys = xs", "xs[0] = 5", "xs[-1] = xs[0] + 1",
                   "grid = [[0, 0], [0, 0]]", "grid[1][0] = 7",
                   "assert xs == [5, 2, 6] and ys == [1, 2, 3] and grid == [[0, 0], [7, 0]]",
                   "for i in range(3) {", "    xs[i] = i * 10", "}", "assert xs == [0, 10, 20]",
                   "output x"))


@pytest.mark.parametrize("lines, message, at", [
    (("xs = [1, 2]", "xs[2] = 0"), "Index 2 is out of range for 'xs', a list of length 2.", (4, 8, 4, 9)),
    (("xs = (1, 2)", "xs[0] = 0"), "Only lists can be assigned to by index, but 'xs' is a tuple (write "
     "`xs = list(xs)` first).", (4, 5, 4, 7)),
    (("n = 3", "n[0] = 0"), "Only lists can be assigned to by index, but 'n' is an int.", (4, 5, 4, 6)),
    (("g = [[1], 2]", "g[1][0] = 0"), "Only lists can be assigned to by index, but 'g[1]' is an int.",
     (4, 7, 4, 8)),
    (("xs = [1]", "xs[\"a\"] = 0"), "An index must be an int, but got a string.", (4, 8, 4, 11)),
])
def test_item_assignment_misuse(lines, message, at):
    err = error(M(*lines, "output x"))
    assert err.message == message and where(err) == at


# ---- the formatter ------------------------------------------------------------------------------------------

EVERYTHING = MAKE_DIVISIBLE + """
block b(dropout: float = 0.1) {
    input x
    output x -> ops.dropout(dropout)
}

model m(n: int = 4) {
    input x: [3, 8, 8]
    xs = [make_divisible(i * 3.3) for i in range(n) if i % 2 == 0]
    xs[0] = ceil(log2(8.5))
    s = [c1: conv(8, 3, padding=1) -> relu for i in range(2) if i < n]
    r = [residual { conv(8, 1) } shortcut if n > 2 { conv(8, 1) } -> relu]
    u = b(act=[gelu -> parallel { relu, sigmoid }])
    h = x -> block: conv(8, 1) -> for: relu -> block1-0: relu -> block{1}-{n}: relu -> s -> r
    output h -> parallel { a{k}-x: relu for k in [1, 2, 3] if k > 1 } -> ops.relu
}
"""


def test_fmt_lays_out_every_new_construct_and_round_trips():
    from tests.test_fmt import check_format
    out = check_format(EVERYTHING)
    assert "block{1}-{n}: relu" in out and "xs[0] = ceil(log2(8.5))" in out and "for: relu" in out
    assert "[c1: conv(8, 3, padding=1) -> relu for i in range(2) if i < n]" in out
    assert "u = b(act=[gelu -> parallel { relu, sigmoid }])" in out


# ---- the spec writer ---------------------------------------------------------------------------------------

def test_the_spec_writer_keeps_keyword_and_dash_labels():
    from archdsl.backends.arch_emit import emit_arch
    g = archdsl.load(M("output x -> block: conv(4, 1) -> for: relu -> block1-0: [conv(4, 1) -> model: relu]"))
    text = emit_arch(g)
    assert "block: conv(4, 1)" in text and "for: relu" in text and "block1-0: [" in text
    back = archdsl.load(text)
    assert scopes(back) == scopes(g) == ["block", "for", "block1-0.0", "block1-0.model"]
