"""Every diagnostic of the front end, pinned: exact message, exact location, notes.

Each case is a spec (and load() arguments) that must fail with one ArchError whose message,
span (file, line, col, end line, end col) and notes are given below. Further tests pin the full
rendering (``file:line:col: error: ...``, source line, caret, notes) of a few representative errors,
errors that involve files (imports, non-.arch files, unusable file names), the node limit and the
command line (exit status 1, the diagnostic on stderr, never a traceback).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import archdsl
from archdsl import ArchError
from archdsl.cli import main
from archdsl.syntax.parser import parse


def M(*lines: str, shape: str = "[3, 32, 32]") -> str:
    """A one-input model whose body is ``lines`` (line 3 onwards), indented by four spaces."""
    return "model m() {\n    input x: " + shape + "\n" + "".join("    " + ln + "\n" for ln in lines) + "}\n"


def block(name: str, params: str, *lines: str) -> str:
    return f"block {name}({params}) {{\n    input x\n" + "".join("    " + ln + "\n" for ln in lines) + "}\n"


BLOCK_B = block("b", "n: int, k = 3", "output x -> conv(n, k, padding=k // 2)")          # lines 1-4
MODEL_WITH_CLASSES = "model m(classes: int = 10) {\n    input x: [3, 32, 32]\n    output x\n}\n"
TWO_MODELS = M("output x") + M("output x").replace("model m", "model n")

# (id, spec text, keyword arguments of archdsl.load)
CASES = [
    ("syntax-unexpected-token", M("output x -> conv(8 3)"), {}),
    ("syntax-bad-character", M("y = 3 $ 4", "output x"), {}),
    ("syntax-unclosed-string", M('assert true, "oops', "output x"), {}),
    ("syntax-single-quotes", M("y = 'a'", "output x"), {}),
    ("syntax-eof-unclosed-brace", "model m() {\n    input x: [3, 32, 32]\n    output x -> relu\n", {}),
    ("syntax-eof-in-import", "import std.", {}),
    ("syntax-eq-vs-eqeq", M("if channels(x) = 3 {", "    x = x -> relu", "}", "output x"), {}),
    ("syntax-mismatched-bracket", M("y = [1, 2)", "output x"), {}),
    ("syntax-unclosed-paren-next-line", M("y = x -> conv(8, 3", "output y"), {}),
    ("syntax-missing-arrow", M("y = x -> relu relu", "output y"), {}),
    ("syntax-statement-must-assign", M("x -> relu", "output x"), {}),
    ("syntax-misspelt-keyword", M("ouput x"), {}),
    ("syntax-kwarg-twice", M("output x -> conv(8, 3, stride=1, stride=2)"), {}),
    ("syntax-positional-after-keyword", M("output x -> conv(8, kernel_size=3, 1)"), {}),
    ("syntax-long-integer", M("y = " + "9" * 41, "output x"), {}),
    ("syntax-too-deep", M("y = " + "[" * 150 + "1" + "]" * 150, "output x"), {}),
    ("name-unknown-did-you-mean", M("output x -> conv(chanels(x), 3)"), {}),
    ("name-unknown-var-in-output", M("y = x -> relu", "output z"), {}),
    ("layer-unknown-did-you-mean", M("output x -> conv2(8, 3)"), {}),
    ("layer-unknown-block-did-you-mean", BLOCK_B + M("output x -> bb(8)"), {}),
    ("layer-unknown", M("output x -> zzz"), {}),
    ("layer-not-a-layer", M("output x -> len"), {}),
    ("param-type-unknown", block("b", "n: integer", "output x") + M("output x -> b(1)"), {}),
    ("arg-missing-op", M("output x -> conv(8)"), {}),
    ("arg-missing-block", BLOCK_B + M("output x -> b(k=1)"), {}),
    ("arg-unknown-did-you-mean", M("output x -> conv(8, 3, strid=2)"), {}),
    ("arg-unknown-listed", M("output x -> maxpool(2, foo=3)"), {}),
    ("arg-unknown-no-args", M("output x -> relu(inplace=true)"), {}),
    ("arg-duplicate-positional-keyword", M("output x -> conv(8, 3, kernel_size=5)"), {}),
    ("arg-too-many-op", M("output x -> relu(1)"), {}),
    ("arg-too-many-block", BLOCK_B + M("output x -> b(8, 3, 1)"), {}),
    ("arg-type-op", M("output x -> conv(8, 3, stride=1.5)"), {}),
    ("arg-type-builtin", M("output x -> conv(width, 3)"), {}),
    ("arg-type-block", BLOCK_B + M("output x -> b(8.0)"), {}),
    ("arg-choice", M('output x -> parallel(merge="mul") {', "    a: relu", "    b: relu", "}"), {}),
    ("arg-init-name", M('output x -> conv(8, 3, weight_init="he")'), {}),
    ("shape-add-channels", M("a = x -> conv(8, 1)", "output (a, x) -> add"), {}),
    ("shape-residual-no-projection", M("output x -> residual {", "    conv(8, 3, padding=1) -> bn", "}"), {}),
    ("shape-parallel-spatial", M("output x -> parallel {", "    a: conv(8, 3)", "    b: conv(8, 1)", "}"), {}),
    ("shape-conv-shrinks", M("output x -> conv(8, 7)", shape="[3, 4, 4]"), {}),
    ("shape-maxpool-shrinks", M("output x -> maxpool(2) -> maxpool(2) -> maxpool(2)", shape="[3, 4, 4]"), {}),
    ("shape-conv-stride-zero", M("output x -> conv(8, 3, stride=0)"), {}),
    ("shape-in-block", BLOCK_B + M("output x -> b(0)"), {}),
    ("shape-input-invalid", M("output x", shape="[3, 0, 32]"), {}),
    ("shape-input-missing", "model m() {\n    input x\n    output x\n}\n", {}),
    ("shape-two-tensors-into-one", M("output (x, x) -> relu"), {}),
    ("recursion-direct", block("b", "", "output x -> b") + M("output x -> b"), {}),
    ("recursion-mutual", block("a", "", "output x -> b") + block("b", "", "output x -> a") + M("output x -> a"),
     {}),
    ("recursion-alias", "model a = b()\nmodel b = a()\n", {"model": "a"}),
    ("nodes-max-nodes", M("output x -> [relu for i in range(10)]"), {"max_nodes": 5}),
    ("label-duplicate", M("output x -> c: conv(8, 1) -> relu -> c: conv(8, 1)"), {}),
    ("label-bad-suffix", M('output x -> layer{"a b"}: relu'), {}),
    ("model-several", TWO_MODELS, {}),
    ("model-unknown-did-you-mean", M("output x") + M("output x").replace("model m", "model resnet"),
     {"model": "resnt"}),
    ("model-unknown-listed", TWO_MODELS, {"model": "zzz"}),
    ("model-unknown-no-models", block("b", "", "output x"), {"model": "b"}),
    ("model-none", block("b", "", "output x"), {}),
    ("define-unknown", MODEL_WITH_CLASSES, {"defines": {"clases": "5"}}),
    ("define-syntax", MODEL_WITH_CLASSES, {"defines": {"classes": "5 +"}}),
    ("define-type", MODEL_WITH_CLASSES, {"defines": {"classes": '"ten"'}}),
    ("assert-message", M('assert channels(x) == 1, "expects grey images"', "output x"), {}),
    ("assert-plain", M("assert channels(x) == 1", "output x"), {}),
    ("expr-division-by-zero", M("y = 1 // (channels(x) - 3)", "output x"), {}),
    ("expr-power-too-large", M("y = 2 ** 10 ** 10", "output x"), {}),
    ("expr-repeat-too-long", M("y = [0] * 10 ** 9", "output x"), {}),
    ("expr-range-too-long", M("y = range(10 ** 12)", "output x"), {}),
    ("expr-float-overflow", M("y = 1e308 * 10", "output x"), {}),
    ("expr-float-literal-overflow", M("y = 1e999", "output x"), {}),
    ("expr-tensor-arith", M("y = x + x", "output y"), {}),
    ("expr-output-not-tensor", M("output channels(x)"), {}),
    ("expr-index-range", M("y = shape(x)[3]", "output x"), {}),
    ("expr-unpack", M("a, b = [1, 2, 3]", "output x"), {}),
    ("expr-steps", M("for i in range(1000000) {", "    for j in range(1000000) {", "    }", "}", "output x"), {}),
    ("expr-builtin-str-huge", M("y = [0] * 999", "z = str([y] * 999)", "output x"), {}),
    ("expr-equal-budget", M("a = [0] * 999", "b = [0] * 999", "for i in range(3) {",
                            "    c = [a] * 999 == [b] * 999", "}", "output x"), {}),
    ("stn-size", M("output x -> stn(size=[0, 16]) {", "    flatten -> linear(6)", "}"), {}),
]

# id -> (message, (file, line, col, end line, end col) or None, [(note, location), ...])
EXPECTED = {
    'syntax-unexpected-token': (
        "Unexpected number 3 here; expected ')', ',' or an operator.",
        ('<string>', 3, 24, 3, 25)),
    'syntax-bad-character': (
        "The character '$' is not part of the .arch language.",
        ('<string>', 3, 11, 3, 12)),
    'syntax-unclosed-string': (
        'This string is not closed: add a \'"\' before the end of the line (a string cannot span lines).',
        ('<string>', 3, 18, 3, 19)),
    'syntax-single-quotes': (
        'The character "\'" is not part of the .arch language. Strings are written in double quotes: "text".',
        ('<string>', 3, 9, 3, 10)),
    'syntax-eof-unclosed-brace': (
        "The file ends before the '{' on line 1 is closed; is a '}' missing?",
        ('<string>', 3, 21, 3, 22),
        [("the '{' opened here is not closed yet", ('<string>', 1, 11, 1, 12))]),
    'syntax-eof-in-import': (
        'The file ends too early; expected a name.',
        ('<string>', 1, 12, 1, 13)),
    'syntax-eq-vs-eqeq': (
        "Unexpected '=' here; expected '{' or an operator. Use '==' to compare; '=' only names a value at the "
        'start of a statement.',
        ('<string>', 3, 20, 3, 21)),
    'syntax-mismatched-bracket': (
        "Unexpected ')' here; expected ',' or ']'.",
        ('<string>', 3, 14, 3, 15),
        [("the '[' opened here is not closed yet", ('<string>', 3, 9, 3, 10))]),
    'syntax-unclosed-paren-next-line': (
        "Unexpected 'output' here; expected ')' or ','.",
        ('<string>', 4, 5, 4, 11),
        [("the '(' opened here is not closed yet", ('<string>', 3, 18, 3, 19))]),
    'syntax-missing-arrow': (
        "Unexpected 'output' here; expected ',' or '='. A statement that starts with a name assigns to it "
        "(`relu = ...`); is a '->' missing before 'relu'?",
        ('<string>', 4, 5, 4, 11)),
    'syntax-statement-must-assign': (
        "Unexpected '->' here; expected ',' or '='. A statement that starts with a name assigns to it (`x = "
        '...`).',
        ('<string>', 3, 7, 3, 9)),
    'syntax-misspelt-keyword': (
        "Unexpected name 'x' here; expected ',' or '='. Did you mean the keyword 'output' instead of 'ouput'?",
        ('<string>', 3, 11, 3, 12)),
    'syntax-kwarg-twice': (
        "The keyword argument 'stride' is given twice.",
        ('<string>', 3, 38, 3, 46)),
    'syntax-positional-after-keyword': (
        'A positional argument cannot follow keyword arguments; move it before them or name it.',
        ('<string>', 3, 40, 3, 41)),
    'syntax-long-integer': (
        'The integer literal has more than 40 digits.',
        ('<string>', 3, 9, 3, 50)),
    'syntax-too-deep': (
        'The spec nests too deeply here for the compiler (more than 100 levels in its syntax tree); flatten '
        'it, for example with intermediate names.',
        ('<string>', 3, 105, 3, 106)),
    'name-unknown-did-you-mean': (
        "Unknown name 'chanels'; did you mean 'channels'?",
        ('<string>', 3, 22, 3, 29)),
    'name-unknown-var-in-output': (
        "Unknown name 'z'; no variable, parameter, block or built-in has this name.",
        ('<string>', 4, 12, 4, 13)),
    'layer-unknown-did-you-mean': (
        "Unknown layer 'conv2'; did you mean 'conv'?",
        ('<string>', 3, 17, 3, 22)),
    'layer-unknown-block-did-you-mean': (
        "Unknown layer 'bb'; did you mean 'b'?",
        ('<string>', 7, 17, 7, 19)),
    'layer-unknown': (
        "Unknown layer 'zzz'; no op, block or variable has this name.",
        ('<string>', 3, 17, 3, 20)),
    'layer-not-a-layer': (
        "'len' is a built-in function, not a layer; only blocks, ops, sequences and lists of them can follow '->'.",
        ('<string>', 3, 17, 3, 20)),
    'param-type-unknown': (
        "Unknown parameter type 'integer'; did you mean 'int'? The parameter types are any, bool, float, int, "
        'layer, list, string, tuple.',
        ('<string>', 1, 12, 1, 19)),
    'arg-missing-op': (
        "'conv' is missing its required argument 'kernel_size'.",
        ('<string>', 3, 17, 3, 24)),
    'arg-missing-block': (
        "Block 'b' is missing its required argument 'n'.",
        ('<string>', 7, 17, 7, 23),
        [("block 'b' is defined here", ('<string>', 1, 7, 1, 8))]),
    'arg-unknown-did-you-mean': (
        "'conv' has no argument 'strid'; did you mean 'stride'?",
        ('<string>', 3, 28, 3, 35)),
    'arg-unknown-listed': (
        "'maxpool' has no argument 'foo'; its arguments are kernel_size, stride, padding, dilation, ceil_mode.",
        ('<string>', 3, 28, 3, 33)),
    'arg-unknown-no-args': (
        "'relu' has no argument 'inplace'; it takes no arguments.",
        ('<string>', 3, 22, 3, 34)),
    'arg-duplicate-positional-keyword': (
        "'conv' got two values for argument 'kernel_size': one by position and one by name.",
        ('<string>', 3, 28, 3, 41)),
    'arg-too-many-op': (
        "'relu' takes no arguments, but 1 was given.",
        ('<string>', 3, 22, 3, 23)),
    'arg-too-many-block': (
        "Block 'b' takes 2 arguments, but 3 were given.",
        ('<string>', 7, 25, 7, 26),
        [("block 'b' is defined here", ('<string>', 1, 7, 1, 8))]),
    'arg-type-op': (
        "Argument 'stride' of 'conv' must be an int or a pair of ints, but got a float 1.5.",
        ('<string>', 3, 28, 3, 38)),
    'arg-type-builtin': (
        "Argument 'out_channels' of 'conv' must be an int, but got a built-in function width.",
        ('<string>', 3, 22, 3, 27)),
    'arg-type-block': (
        "Argument 'n' of block 'b' must be an int, but got a float 8.0.",
        ('<string>', 7, 19, 7, 22),
        [("block 'b' is defined here", ('<string>', 1, 7, 1, 8))]),
    'arg-choice': (
        'Argument \'merge\' of \'parallel\' must be one of "concat", "add", but got a string "mul".',
        ('<string>', 3, 26, 3, 37)),
    'arg-init-name': (
        "Argument 'weight_init' of 'conv' must be an initialiser name or a list of numbers, but got a string "
        '"he" (known initialisers: default, zeros, ones, kaiming_normal, kaiming_uniform, xavier_uniform, '
        'xavier_normal).',
        ('<string>', 3, 28, 3, 44)),
    'shape-add-channels': (
        "'add' needs inputs of the same shape, but the channel count differs: input 1 is (N, 8, 32, 32) and "
        "input 2 is (N, 3, 32, 32); a 1x1 conv can project one to the other's channels.",
        ('<string>', 4, 22, 4, 25)),
    'shape-residual-no-projection': (
        'The residual addition needs the main path and the shortcut to have the same shape, but the main path '
        'gives (N, 8, 32, 32) and the shortcut gives (N, 3, 32, 32); add a projection shortcut such as '
        '`shortcut { conv(...) -> bn }`.',
        ('<string>', 3, 17, 5, 6)),
    'shape-parallel-spatial': (
        "The branches of 'parallel' must agree in spatial size to be concatenated, but branch 1 gives (N, 8, "
        '30, 30) and branch 2 gives (N, 8, 32, 32).',
        ('<string>', 5, 9, 5, 22),
        [('branch 1 is here', ('<string>', 4, 9, 4, 22))]),
    'shape-conv-shrinks': (
        "'conv' shrinks the height to zero or below: a window of 7 (kernel 7, dilation 1) does not fit in the "
        'height of 4 plus padding 0 on each side; use a smaller kernel or more padding, or a larger input.',
        ('<string>', 3, 17, 3, 27)),
    'shape-maxpool-shrinks': (
        "'maxpool' shrinks the height to zero or below: a window of 2 (kernel 2, dilation 1) does not fit in "
        'the height of 1 plus padding 0 on each side; use a smaller kernel or more padding, or a larger input.',
        ('<string>', 3, 45, 3, 55)),
    'shape-conv-stride-zero': (
        "'conv' needs a kernel size, stride and dilation of at least 1 and a padding of at least 0, but got "
        'kernel 3, stride 0, dilation 1 and padding 0.',
        ('<string>', 3, 17, 3, 37)),
    'shape-in-block': (
        "'conv' needs at least 1 output channel, but out_channels is 0.",
        ('<string>', 3, 17, 3, 43),
        [("in block 'b', instantiated here", ('<string>', 7, 17, 7, 21))]),
    'shape-input-invalid': (
        'An input shape must be a list of positive ints without the batch, such as [3, 224, 224], but got [3, '
        '0, 32].',
        ('<string>', 2, 14, 2, 24)),
    'shape-input-missing': (
        "The model input 'x' needs a shape, such as `input x: [3, 224, 224]` (the batch dimension is implicit).",
        ('<string>', 2, 5, 2, 12)),
    'shape-two-tensors-into-one': (
        "'relu' takes 1 input tensor but 2 were piped into it.",
        ('<string>', 3, 22, 3, 26)),
    'recursion-direct': (
        "Block 'b' instantiates itself (b -> b); blocks cannot be recursive, so unroll the repetition with a "
        'loop.',
        ('<string>', 3, 17, 3, 18),
        [("'b' is defined here", ('<string>', 1, 7, 1, 8)),
         ("in block 'b', instantiated here", ('<string>', 7, 17, 7, 18))]),
    'recursion-mutual': (
        "Block 'a' instantiates itself (a -> b -> a); blocks cannot be recursive, so unroll the repetition "
        'with a loop.',
        ('<string>', 7, 17, 7, 18),
        [("'a' is defined here", ('<string>', 1, 7, 1, 8)),
         ("in block 'b', instantiated here", ('<string>', 3, 17, 3, 18)),
         ("in block 'a', instantiated here", ('<string>', 11, 17, 11, 18))]),
    'recursion-alias': (
        "Model alias 'a' refers to itself (a -> b -> a); an alias must lead to a model with a body.",
        ('<string>', 1, 7, 1, 8)),
    'nodes-max-nodes': (
        'The model has more than 5 nodes; raise the limit (max_nodes= in the API, --max-nodes on the command '
        'line) if this size is intended.',
        ('<string>', 3, 18, 3, 22)),
    'label-duplicate': (
        "The label 'c' is used twice in the same scope; labels name parameters and must be unique, so give "
        'this one another name.',
        ('<string>', 3, 42, 3, 44),
        [("'c' is first used here", ('<string>', 3, 17, 3, 19))]),
    'label-bad-suffix': (
        "The label \"layera b\" is not a valid name: the value \"a b\" may hold only ASCII letters, digits, '_' "
        "and '-'.",
        ('<string>', 3, 23, 3, 28)),
    'model-several': (
        'The file defines 2 models (m, n); choose one with --model (or model= in the API).',
        ('<string>', 5, 7, 5, 8)),
    'model-unknown-did-you-mean': (
        "There is no model 'resnt' in <string>; did you mean 'resnet'?",
        ('<string>', 0, 0, 0, 0)),
    'model-unknown-listed': (
        "There is no model 'zzz' in <string>; its models are m, n.",
        ('<string>', 0, 0, 0, 0)),
    'model-unknown-no-models': (
        "'b' is a block, not a model; <string> defines no model.",
        ('<string>', 0, 0, 0, 0)),
    'model-none': (
        'The file defines no model; add `model name() { ... }`.',
        ('<string>', 0, 0, 0, 0)),
    'define-unknown': (
        "Model 'm' has no argument 'clases'; did you mean 'classes'?",
        ('<command line>', 1, 4, 1, 12),
        [("model 'm' is defined here", ('<string>', 1, 7, 1, 8))]),
    'define-syntax': (
        'The expression ends too early; expected an expression.',
        ('<command line>', 1, 15, 1, 16)),
    'define-type': (
        'Argument \'classes\' of model \'m\' must be an int, but got a string "ten".',
        ('<command line>', 1, 4, 1, 17),
        [("model 'm' is defined here", ('<string>', 1, 7, 1, 8))]),
    'assert-message': (
        'Assertion failed: expects grey images',
        ('<string>', 3, 5, 3, 51)),
    'assert-plain': (
        'Assertion failed.',
        ('<string>', 3, 5, 3, 28)),
    'expr-division-by-zero': (
        "Division by zero in '//'.",
        ('<string>', 3, 9, 3, 30)),
    'expr-power-too-large': (
        "The result of '**' is too large (over 256 bits).",
        ('<string>', 3, 9, 3, 22)),
    'expr-repeat-too-long': (
        'Repeating a sequence 1000000000 times makes more than 1000000 items.',
        ('<string>', 3, 9, 3, 22)),
    'expr-range-too-long': (
        "'range' would make 1000000000000 items; the limit is 1000000.",
        ('<string>', 3, 9, 3, 24)),
    'expr-float-overflow': (
        "The result of '*' is too large for a float.",
        ('<string>', 3, 9, 3, 19)),
    'expr-float-literal-overflow': (
        'This number is too large for a float (the largest is about 1.8e308).',
        ('<string>', 3, 9, 3, 14)),
    'expr-tensor-arith': (
        "Tensors cannot be combined with '+'; pipe them into a layer instead: (a, b) -> add.",
        ('<string>', 3, 9, 3, 14)),
    'expr-output-not-tensor': (
        'An output must be a tensor, but this is an int 3.',
        ('<string>', 3, 12, 3, 23)),
    'expr-index-range': (
        'Index 3 is out of range for a tuple of length 3.',
        ('<string>', 3, 18, 3, 19)),
    'expr-unpack': (
        'Cannot unpack 3 values into 2 names.',
        ('<string>', 3, 5, 3, 21)),
    'expr-steps': (
        'Elaboration took more than 1500000 steps; is a loop running away?',
        ('<string>', 4, 9, 5, 10)),
    'expr-builtin-str-huge': (
        "'str' would make a string of more than 1000000 characters.",
        ('<string>', 4, 9, 4, 23)),
    'expr-equal-budget': (
        'Elaboration took more than 1500000 steps; is a loop running away?',
        ('<string>', 6, 13, 6, 35)),
    'stn-size': (
        "The size of 'stn' must be [H, W] or [C, H, W] with sizes of at least 1, but got [0, 16].",
        ('<string>', 3, 21, 3, 33)),
}


def where(span):
    return None if span is None else (span.file, span.line, span.col, span.end_line, span.end_col)


def load_error(source, **kwargs) -> ArchError:
    with pytest.raises(ArchError) as info:
        archdsl.load(source, **kwargs)
    return info.value


@pytest.mark.parametrize("source, kwargs", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_diagnostic(request, source, kwargs):
    message, location, *notes = EXPECTED[request.node.callspec.id]
    err = load_error(source, **kwargs)
    assert err.message == message
    assert where(err.span) == location
    assert [(n.message, where(n.span)) for n in err.notes] == (notes[0] if notes else [])
    assert str(err).splitlines()[0].endswith("error: " + message)


def test_every_case_has_an_expectation():
    assert sorted(EXPECTED) == sorted(c[0] for c in CASES)


# ---- the parser on its own --------------------------------------------------------------------

@pytest.mark.parametrize("text, message, location", [
    ("model m() {\n    output x -> conv(8 3)\n}\n", "Unexpected number 3 here; expected ')', ',' or an operator.",
     (2, 24, 2, 25)),
    ("block b() {\n    input x\n", "The file ends before the '{' on line 1 is closed; is a '}' missing?",
     (2, 12, 2, 13)),
    ("X = 1 +\n\n", "The file ends too early; expected an expression.", (1, 8, 1, 9)),
    ("X = 1 @ 2\n", "The character '@' is not part of the .arch language.", (1, 7, 1, 8)),
    ("model m() {\n    if 1 = 2 {\n    }\n}\n", "Unexpected '=' here; expected '{' or an operator. Use '==' to "
     "compare; '=' only names a value at the start of a statement.", (2, 10, 2, 11)),
    ("modle m() {\n}\n", "Unexpected name 'm' here; expected '='. Did you mean the keyword 'model' instead of "
     "'modle'?", (1, 7, 1, 8)),
])
def test_parse_reports_syntax_errors_in_the_named_file(text, message, location):
    with pytest.raises(ArchError) as info:
        parse(text, "spec.arch")
    err = info.value
    assert err.message == message
    assert where(err.span) == ("spec.arch", *location)
    assert err.sources == {"spec.arch": text}


# ---- full renderings ------------------------------------------------------------------------------

def test_render_syntax_error():
    err = load_error(M("output x -> conv(8 3)"))
    assert str(err) == (
        "<string>:3:24: error: Unexpected number 3 here; expected ')', ',' or an operator.\n"
        " 3 |     output x -> conv(8 3)\n"
        "   |                        ^")


def test_render_unclosed_bracket_with_its_note():
    err = load_error("model m() {\n    input x: [3, 32, 32]\n    y = [1, 2\n    output x\n}\n")
    assert str(err) == (
        "<string>:4:5: error: Unexpected 'output' here; expected ',' or ']'.\n"
        " 4 |     output x\n"
        "   |     ^^^^^^\n"
        "<string>:3:9: note: the '[' opened here is not closed yet\n"
        " 3 |     y = [1, 2\n"
        "   |         ^")


def test_render_shape_error_with_a_wide_caret():
    err = load_error(M("output x -> conv(8, 7)", shape="[3, 4, 4]"))
    assert str(err) == (
        "<string>:3:17: error: 'conv' shrinks the height to zero or below: a window of 7 (kernel 7, dilation 1) "
        "does not fit in the height of 4 plus padding 0 on each side; use a smaller kernel or more padding, or a "
        "larger input.\n"
        " 3 |     output x -> conv(8, 7)\n"
        "   |                 ^^^^^^^^^^")


def test_render_parallel_mismatch_points_at_the_branch():
    err = load_error(M("output x -> parallel {", "    a: conv(8, 3)", "    b: conv(8, 1)", "}"))
    assert str(err) == (
        "<string>:5:9: error: The branches of 'parallel' must agree in spatial size to be concatenated, but "
        "branch 1 gives (N, 8, 30, 30) and branch 2 gives (N, 8, 32, 32).\n"
        " 5 |         b: conv(8, 1)\n"
        "   |         ^^^^^^^^^^^^^\n"
        "<string>:4:9: note: branch 1 is here\n"
        " 4 |         a: conv(8, 3)\n"
        "   |         ^^^^^^^^^^^^^")


def test_render_recursion_with_its_notes():
    err = load_error("block a() {\n    input x\n    output x -> b\n}\n"
                     "block b() {\n    input x\n    output x -> a\n}\n" + M("output x -> a"))
    assert str(err) == (
        "<string>:7:17: error: Block 'a' instantiates itself (a -> b -> a); blocks cannot be recursive, so unroll "
        "the repetition with a loop.\n"
        " 7 |     output x -> a\n"
        "   |                 ^\n"
        "<string>:1:7: note: 'a' is defined here\n"
        " 1 | block a() {\n"
        "   |       ^\n"
        "<string>:3:17: note: in block 'b', instantiated here\n"
        " 3 |     output x -> b\n"
        "   |                 ^\n"
        "<string>:11:17: note: in block 'a', instantiated here\n"
        " 11 |     output x -> a\n"
        "    |                 ^")


def test_render_command_line_define():
    err = load_error("model m(classes: int = 10) {\n    input x: [3, 32, 32]\n    output x\n}\n",
                     defines={"clases": "5"})
    assert str(err) == (
        "<command line>:1:4: error: Model 'm' has no argument 'clases'; did you mean 'classes'?\n"
        " 1 | -D clases=5\n"
        "   |    ^^^^^^^^\n"
        "<string>:1:7: note: model 'm' is defined here\n"
        " 1 | model m(classes: int = 10) {\n"
        "   |       ^")


def test_render_without_a_location():
    err = load_error(M("output x"), model="mm")
    assert str(err) == "<string>: error: There is no model 'mm' in <string>; did you mean 'm'?"


def test_render_keeps_lines_as_the_lexer_counts_them():
    """A form feed is whitespace to the lexer, not a line break; control characters are not echoed."""
    err = load_error("model m() {\f\n    input x: [3, 8, 8]\n    output y \x1b\n}\n")
    assert where(err.span) == ("<string>", 3, 14, 3, 15)
    assert str(err) == (
        "<string>:3:14: error: The character '\\x1b' is not part of the .arch language.\n"
        " 3 |     output y ?\n"
        "   |              ^")


# ---- files: imports, limits, refusals ----------------------------------------------------------

@pytest.fixture
def in_tmp(short_tmp_path, monkeypatch):
    """Run in an empty directory, so that diagnostics name files relative to it (a short one: messages
    that quote an absolute path shorten it past 80 characters)."""
    monkeypatch.chdir(short_tmp_path)
    return short_tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_import_cycle_between_two_files(in_tmp):
    write(in_tmp / "a.arch", 'import "b.arch"\nblock blk() {\n    input x\n    output x\n}\n')
    write(in_tmp / "b.arch", 'import "a.arch"\n' + M("output x -> blk"))
    err = load_error(in_tmp / "b.arch")
    assert err.message == ("Import cycle: b.arch imports a.arch imports b.arch; break the cycle by moving the "
                           "shared blocks into a file both can import.")
    assert where(err.span) == ("a.arch", 1, 1, 1, 16)
    assert [(n.message, where(n.span)) for n in err.notes] == [("'a.arch' is imported here",
                                                                ("b.arch", 1, 1, 1, 16))]
    assert str(err) == (
        "a.arch:1:1: error: " + err.message + "\n"
        ' 1 | import "b.arch"\n'
        "   | ^^^^^^^^^^^^^^^\n"
        "b.arch:1:1: note: 'a.arch' is imported here\n"
        ' 1 | import "a.arch"\n'
        "   | ^^^^^^^^^^^^^^^")


def test_import_of_a_file_that_imports_itself(in_tmp):
    write(in_tmp / "self.arch", 'import "self.arch"\n' + M("output x"))
    err = load_error(in_tmp / "self.arch")
    assert err.message.startswith("Import cycle: self.arch imports self.arch;")
    assert where(err.span) == ("self.arch", 1, 1, 1, 19)


def test_missing_import(in_tmp):
    write(in_tmp / "m.arch", 'import "lib/blocks.arch" as blocks\n' + M("output x"))
    err = load_error(in_tmp / "m.arch")
    assert err.message == "The spec file 'lib/blocks.arch' does not exist."
    assert where(err.span) == ("m.arch", 1, 1, 1, 35)


def test_import_of_a_non_arch_file_is_refused_before_it_is_read(in_tmp, monkeypatch):
    secret = write(in_tmp / "secret.txt", "TOP-SECRET-CONTENT\n")
    write(in_tmp / "m.arch", 'import "secret.txt"\n' + M("output x"))
    opened = []
    for name in ("read_bytes", "read_text", "open"):
        real = getattr(Path, name)
        monkeypatch.setattr(Path, name, lambda self, *a, _real=real, **k: (opened.append(self.name),
                                                                           _real(self, *a, **k))[1])
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **k: (opened.append(Path(path).name), real_open(path, *a, **k))[1])
    err = load_error(in_tmp / "m.arch")
    assert err.message == ("Only .arch spec files can be imported, and 'secret.txt' is not one; the file was not "
                           "read.")
    assert where(err.span) == ("m.arch", 1, 1, 1, 20)
    assert "TOP-SECRET" not in str(err)
    assert "m.arch" in opened and "secret.txt" not in opened
    assert secret.exists()


def test_an_arch_link_to_another_kind_of_file_is_refused(in_tmp):
    write(in_tmp / "secret.txt", "TOP-SECRET-CONTENT\n")
    os.symlink(in_tmp / "secret.txt", in_tmp / "innocent.arch")
    write(in_tmp / "m.arch", 'import "innocent.arch"\n' + M("output x"))
    err = load_error(in_tmp / "m.arch")
    assert err.message == (f"The spec file 'innocent.arch' is a symbolic link to '{in_tmp / 'secret.txt'}', which is "
                           "not an .arch file; the file was not read.")
    assert "TOP-SECRET" not in str(err)


def test_compiling_a_non_arch_file_is_refused(in_tmp):
    write(in_tmp / "notes.txt", "TOP-SECRET-CONTENT\n")
    err = load_error(Path("notes.txt"))
    assert err.message == ("Only .arch spec files can be compiled, and 'notes.txt' is not one; the file was not "
                           "read.")
    assert str(err.span) == "notes.txt" and err.span.line == 0 and "TOP-SECRET" not in str(err)


def test_other_unreadable_imports(in_tmp):
    (in_tmp / "dir.arch").mkdir()
    (in_tmp / "latin1.arch").write_bytes("X = \"caf\xe9\"\n".encode("latin-1"))
    for target, message in [("dir.arch", "'dir.arch' is a directory; a spec must be a regular file, and this one "
                                         "was not read."),
                            ("latin1.arch", "The spec file 'latin1.arch' is not UTF-8 text (an invalid byte on line "
                                            "1); save it as UTF-8.")]:
        write(in_tmp / "m.arch", f'import "{target}"\n' + M("output x"))
        err = load_error(in_tmp / "m.arch")
        assert (err.message, where(err.span)) == (message, ("m.arch", 1, 1, 1, 10 + len(target)))


def test_unknown_standard_library_module(in_tmp):
    write(in_tmp / "m.arch", "import std.layer\n" + M("output x"))
    err = load_error(in_tmp / "m.arch")
    assert err.message == "There is no standard library module 'std.layer'; did you mean 'std.layers'?"
    assert where(err.span) == ("m.arch", 1, 1, 1, 17)


def test_imported_namespace_lacks_a_name(in_tmp):
    write(in_tmp / "lib.arch", "block unit() {\n    input x\n    output x\n}\nWIDTH = 8\n")
    write(in_tmp / "m.arch", 'import "lib.arch" as lib\n' + M("output x -> lib.block1"))
    err = load_error(in_tmp / "m.arch")
    assert err.message == "The imported file 'lib.arch' defines no 'block1'; it defines WIDTH, unit."
    assert where(err.span) == ("m.arch", 4, 17, 4, 27)
    write(in_tmp / "m.arch", 'import "lib.arch" as lib\n' + M("output x -> lib.unt"))
    assert load_error(in_tmp / "m.arch").message == ("The imported file 'lib.arch' defines no 'unt'; did you mean "
                                                     "'unit'?")
    write(in_tmp / "m.arch", 'import "lib.arch" as lib\n' + M("output x -> lbi.unit"))
    err = load_error(in_tmp / "m.arch")
    assert err.message == "Unknown namespace 'lbi'; did you mean 'lib'?"
    assert where(err.span) == ("m.arch", 4, 17, 4, 25)


def test_name_defined_twice(in_tmp):
    write(in_tmp / "m.arch", "W = 1\nW = 2\n" + M("output x"))
    err = load_error(in_tmp / "m.arch")
    assert err.message == "'W' is defined twice in this file; rename one of them."
    assert where(err.span) == ("m.arch", 2, 1, 2, 6)
    assert [(n.message, where(n.span)) for n in err.notes] == [("'W' is first defined here",
                                                                ("m.arch", 1, 1, 1, 6))]


# ---- the node limit -----------------------------------------------------------------------------

def test_default_node_limit():
    """10,000 nodes by default: a model of 10,001 ReLUs is refused at the layer that exceeds it."""
    err = load_error(M("output x -> [relu for i in range(10001)]", shape="[1, 1, 1]"))
    assert err.message == ("The model has more than 10000 nodes; raise the limit (max_nodes= in the API, "
                           "--max-nodes on the command line) if this size is intended.")
    assert where(err.span) == ("<string>", 3, 18, 3, 22)
    assert archdsl.load(M("output x -> [relu for i in range(3)]"), max_nodes=4).data(3)["scope"] == "0.2"


# ---- the command line ---------------------------------------------------------------------------

def run_cli(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def test_cli_syntax_error(in_tmp, capsys):
    write(in_tmp / "m.arch", M("output x -> conv(8 3)"))
    status, out, err = run_cli(capsys, "check", "m.arch")
    assert (status, out) == (1, "")
    assert err == ("m.arch:3:24: error: Unexpected number 3 here; expected ')', ',' or an operator.\n"
                   " 3 |     output x -> conv(8 3)\n"
                   "   |                        ^\n")


def test_cli_model_choice(in_tmp, capsys):
    write(in_tmp / "two.arch", M("output x") + M("output x -> relu").replace("model m", "model resnet"))
    status, _, err = run_cli(capsys, "check", "two.arch")
    assert status == 1
    assert err.startswith("two.arch:5:7: error: The file defines 2 models (m, resnet); choose one with --model "
                          "(or model= in the API).\n")
    status, _, err = run_cli(capsys, "stats", "two.arch", "--model", "resnt")
    assert (status, err) == (1, "two.arch: error: There is no model 'resnt' in two.arch; did you mean 'resnet'?\n")
    status, out, _ = run_cli(capsys, "check", "two.arch", "--model", "resnet")
    assert status == 0 and "model 'resnet' is well-formed" in out


def test_cli_defines(in_tmp, capsys):
    write(in_tmp / "m.arch", "model m(classes: int = 10) {\n    input x: [3, 8, 8]\n    output x -> flatten -> "
                             "linear(classes)\n}\n")
    status, _, err = run_cli(capsys, "ir", "m.arch", "-D", "clases=5")
    assert status == 1
    assert err.startswith("<command line>:1:4: error: Model 'm' has no argument 'clases'; did you mean "
                          "'classes'?\n")
    status, _, err = run_cli(capsys, "check", "m.arch", "-D", "classes")
    assert (status, err) == (1, "error: -D expects name=value, such as -D num_classes=10, but got 'classes'.\n")
    status, _, err = run_cli(capsys, "check", "m.arch", "-D", "classes=0")
    assert status == 1 and "'linear' needs at least 1 output feature" in err


def test_cli_refuses_files_it_must_not_read(in_tmp, capsys):
    write(in_tmp / "secret.txt", "TOP-SECRET-CONTENT\n")
    status, _, err = run_cli(capsys, "check", "secret.txt")
    assert (status, err) == (1, "secret.txt: error: Only .arch spec files can be compiled, and 'secret.txt' is not "
                                "one; the file was not read.\n")
    status, _, err = run_cli(capsys, "stats", "missing.arch")
    assert (status, err) == (1, "missing.arch: error: The spec file 'missing.arch' does not exist.\n")


def test_cli_resource_attack_is_a_diagnostic(in_tmp, capsys):
    write(in_tmp / "m.arch", M("y = 2 ** 10 ** 10", "output x"))
    status, _, err = run_cli(capsys, "check", "m.arch")
    assert status == 1
    assert err.splitlines()[0] == "m.arch:3:9: error: The result of '**' is too large (over 256 bits)."


def test_import_names_no_file_system_accepts(in_tmp):
    write(in_tmp / "m.arch", 'import "a\0b.arch"\n' + M("output x"))
    err = load_error(in_tmp / "m.arch")
    assert (err.message, where(err.span)) == ("The spec file name 'a\\0b.arch' contains a NUL character.",
                                              ("m.arch", 1, 1, 1, 18))
    write(in_tmp / "m.arch", 'import "' + "a" * 5000 + '.arch"\n' + M("output x"))
    err = load_error(in_tmp / "m.arch")
    assert err.message == "The spec file '" + "a" * 40 + "..." + "a" * 72 + ".arch' cannot be read: File name too long."
    assert load_error("\0.arch").message == "The spec file name '\\0.arch' contains a NUL character."
