"""Robustness of the front end: whatever text it is given, only an ArchError may come out.

Hypothesis feeds (a) random text, (b) soups of the language's own tokens, (b') programs generated
from the grammar (which must also parse) and (c) mutations of the real zoo and standard-library specs
to ``archdsl.syntax.parser.parse`` and ``archdsl.load``, and checks that every failure is an
:class:`ArchError` whose diagnostic renders. The explicit cases at
the end are resource attacks (huge numbers, sequences, loops, nesting, files): each must end in a
diagnostic (or a cheap success), never in a hang, a Python exception or a big allocation.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark
from lark.exceptions import UnexpectedInput

import archdsl
from archdsl import ArchError
from archdsl.ir import ops as op_registry
from archdsl.ir.stats import stats_table, totals
from archdsl.syntax.parser import _lark, grammar_text, parse

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "zoo_specs").glob("*.arch")) + sorted((ROOT / "archdsl" / "stdlib").glob("*.arch"))
MAX_NODES = 1000         # above every zoo model; a mutation that blows up a model meets it as a diagnostic

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check(source: str, **kwargs) -> None:
    """Parse and load ``source``; any outcome but success or a renderable ArchError fails the test."""
    for run in (lambda: parse(source, "fuzz.arch"), lambda: archdsl.load(source, max_nodes=MAX_NODES, **kwargs)):
        try:
            run()
        except ArchError as err:
            text = str(err)
            assert isinstance(text, str) and err.message and err.message in text


@contextmanager
def working_directory(path: Path):
    """Imports in a spec given as text resolve against the working directory."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# ---- (a) random text ------------------------------------------------------------------------

@FUZZ
@given(st.text(max_size=300))
def test_random_text(text):
    check(text)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("abxyz019_.,:;=+-*/%<>!()[]{}\"'#\\ \t\n->e")), max_size=200))
def test_random_text_from_spec_characters(text):
    check(text)


# ---- (b) token soup -------------------------------------------------------------------------

KEYWORDS = sorted(t.pattern.value for t in _lark().terminals if t.pattern.type == "str")
NAMES = ["x", "y", "h", "m", "b", "i", "n", "relu", "conv", "bn", "linear", "maxpool", "add", "concat", "range",
         "channels", "len", "std", "layers", "conv_bn_relu", "shape", "flatten", "enumerate", "str", "_"]
NUMBERS = ["0", "1", "2", "3", "-1", "0.5", "224", "1e999", "10 ** 30", "9" * 45, "2 ** 10 ** 10"]
STRINGS = ['"A"', '"concat"', '"zeros"', '""', '"a b"']
SNIPPETS = ["model m() {", "block b(n: int) {", "input x: [3, 8, 8]", "input x", "output x", "x ->",
            "}", "{", "import std.layers", "[", "]", "(", ")", "for i in range(2) {", "if true {"]
TOKEN = st.sampled_from(KEYWORDS + NAMES + NUMBERS + STRINGS + SNIPPETS)


@FUZZ
@given(st.lists(TOKEN, max_size=60), st.sampled_from([" ", "\n", ""]))
def test_token_soup(tokens, sep):
    check(sep.join(tokens))


@FUZZ
@given(st.lists(TOKEN, max_size=40))
def test_token_soup_inside_a_model(tokens):
    check("model m() {\n    input x: [3, 16, 16]\n    " + " ".join(tokens) + "\n    output x\n}\n")


# ---- (b') programs generated from the grammar itself ---------------------------------------------

def _grammar_strategy():
    """Strings derived from grammars/arch.lark, every token padded with spaces. Comments are left out and
    only the statement `if` starts a line: a line-initial `if` is always the statement (postlex.py)."""
    grammar = Lark(grammar_text(), parser="lalr", lexer="basic", start="start")
    explicit = {t.name: st.just(f" {t.pattern.value} ") for t in grammar.terminals if t.pattern.type == "str"}
    explicit.update({
        "WS": st.just(" "), "COMMENT": st.just(" "), "STMT_IF": st.just("\nif "),
        "NAME": st.sampled_from([f" {n} " for n in NAMES]),
        "NUMBER": st.sampled_from([" 0 ", " 1 ", " 3 ", " 8 ", " 0.5 ", " 1e999 ", " 224 "]),
        "STRING": st.sampled_from(STRINGS + ['"layers.arch"'])})
    return from_lark(grammar, start="start", explicit=explicit)


@FUZZ
@given(_grammar_strategy())
def test_grammar_generated_specs_parse(text):
    """The parser accepts the language its grammar describes (beyond the nesting limit, a diagnostic)."""
    try:
        parse(text, "fuzz.arch")
    except ArchError as err:
        assert err.message.startswith("The spec nests too deeply here for the compiler"), (text, err.message)
    check(text)


# ---- (c) mutations of real specs -------------------------------------------------------------

def _tokens(text: str) -> list:
    return [(t.start_pos, t.end_pos, t.type, str(t)) for t in _lark().lex(text)]


# The standard library defines no model; this one drives its blocks, so that mutations reach them.
STDLIB_DRIVER = """
model fuzz() {
    input x: [16, 16, 16]
    output x -> conv_bn_relu(16) -> squeeze_excite(4) -> channel_shuffle(4) -> transition
}
"""
SOURCES = {p: p.read_text(encoding="utf-8") + (STDLIB_DRIVER if p.parent.name == "stdlib" else "")
           for p in SPECS}
TOKENS = {p: _tokens(t) for p, t in SOURCES.items()}


@lru_cache(maxsize=None)
def loadable_models(path: Path) -> tuple:
    """The models of a spec file that load as they are."""
    names = sorted(m.name for m in parse(SOURCES[path]).items if getattr(m, "kind", None) == "model")
    out = []
    with working_directory(path.parent):
        for name in names:
            try:
                archdsl.load(SOURCES[path], model=name, max_nodes=MAX_NODES)
                out.append(name)
            except ArchError:          # a generic model with required parameters (resnet, vgg, ...)
                pass
    return tuple(out)


IDENTIFIERS = sorted({tok for toks in TOKENS.values() for _, _, kind, tok in toks if kind == "NAME"})
REPLACEMENT_NUMBERS = ["0", "-1", "1", "10 ** 30", "99999999999", "1e999", "0.0", "-0.5", "2 ** 255"]


@st.composite
def mutated_spec(draw):
    path = draw(st.sampled_from(SPECS))
    text, toks = SOURCES[path], TOKENS[path]
    for _ in range(draw(st.integers(1, 3))):
        toks = _tokens_or_none(text) or toks
        i = draw(st.integers(0, len(toks) - 1))
        start, end, kind, tok = toks[i]
        action = draw(st.sampled_from(["delete", "duplicate", "swap", "char-delete", "char-insert", "number",
                                       "rename", "keyword"]))
        if action == "delete":
            text = text[:start] + text[end:]
        elif action == "duplicate":
            text = text[:end] + " " + tok + text[end:]
        elif action == "swap" and i + 1 < len(toks):
            s2, e2, _, tok2 = toks[i + 1]
            text = text[:start] + tok2 + text[end:s2] + tok + text[e2:]
        elif action == "char-delete":
            pos = draw(st.integers(0, max(len(text) - 1, 0)))
            text = text[:pos] + text[pos + 1:]
        elif action == "char-insert":
            pos = draw(st.integers(0, len(text)))
            text = text[:pos] + draw(st.sampled_from(list("()[]{},:=-><\"#.0x"))) + text[pos:]
        elif action == "number":
            numbers = [t for t in toks if t[2] == "NUMBER"] or [toks[i]]
            start, end, _, _ = draw(st.sampled_from(numbers))
            text = text[:start] + draw(st.sampled_from(REPLACEMENT_NUMBERS)) + text[end:]
        elif action == "rename":
            names = [t for t in toks if t[2] == "NAME"] or [toks[i]]
            start, end, _, tok = draw(st.sampled_from(names))
            new = draw(st.sampled_from(IDENTIFIERS + [tok + "_", tok[:-1] or "_", "zz"]))
            text = text[:start] + new + text[end:]
        elif action == "keyword":
            text = text[:start] + draw(st.sampled_from(KEYWORDS)) + text[end:]
    return path, text, draw(st.sampled_from(loadable_models(path)))


def _tokens_or_none(text: str):
    try:
        return _tokens(text)
    except UnexpectedInput:      # the lexer may reject an earlier mutation; fall back to the old tokens
        return None


@settings(FUZZ, max_examples=400)
@given(mutated_spec())
def test_mutated_zoo_specs(case):
    path, text, model = case
    with working_directory(path.parent):         # stn.arch imports "resnet.arch"
        check(text, model=model)


BACKEND_MAX_PARAMS = 4_000_000     # ONNX and the saved IR hold the weights: only for models this small


def drive_backends(graph, tmp: Path) -> None:
    """Every backend on a graph that loaded: the generated PyTorch source (generated, compiled and its model
    built), to_torch (both on the meta device), DOT; for small models ONNX (checked) and the saved IR read
    back by load_checked. Anything but an ArchError escapes."""
    import onnx
    import torch

    from archdsl import viz
    from archdsl.backends.torch_source import build_module
    from archdsl.ir import serialize
    viz.write(graph, tmp / "g.dot")
    with torch.device("meta"):
        build_module(graph, load_weights=False)
        archdsl.to_torch(graph, load_weights=False)
    if graph.param_count() <= BACKEND_MAX_PARAMS:
        onnx.checker.check_model(archdsl.to_onnx(graph))
        serialize.save(graph, tmp / "g.json")
        serialize.load_checked(tmp / "g.json", max_nodes=MAX_NODES)


@lru_cache(maxsize=None)
def small_models() -> tuple:
    """(spec, model) for the models that load and have at most BACKEND_MAX_PARAMS parameters."""
    out = []
    for path in SPECS:
        with working_directory(path.parent):
            for name in loadable_models(path):
                if archdsl.load(SOURCES[path], model=name, max_nodes=MAX_NODES).param_count() <= BACKEND_MAX_PARAMS:
                    out.append((path, name))
    return tuple(out)


MILD_NUMBERS = ["0", "1", "2", "3", "5", "16", "0.5", "-1", "0.0", "1e-9", "10 ** 30"]


@st.composite
def mildly_mutated_spec(draw):
    """One small change (a number, a deleted, doubled or renamed token) to a spec with a small model, so
    that most mutants still load and reach the backends."""
    path, model = draw(st.sampled_from(small_models()))
    text, toks = SOURCES[path], TOKENS[path]
    action = draw(st.sampled_from(["number", "number", "number", "delete", "duplicate", "rename"]))
    if action == "number":
        toks = [t for t in toks if t[2] == "NUMBER"] or toks
    start, end, _, tok = draw(st.sampled_from(toks))
    new = {"number": lambda: draw(st.sampled_from(MILD_NUMBERS)), "delete": lambda: "",
           "duplicate": lambda: tok + " " + tok,
           "rename": lambda: draw(st.sampled_from(IDENTIFIERS))}[action]()
    return path, text[:start] + new + text[end:], model


@settings(FUZZ, max_examples=80)
@given(mildly_mutated_spec())
def test_mutated_zoo_specs_through_the_backends(tmp_path_factory, case):
    """What a mutation leaves loadable goes through every backend; they too fail only with ArchErrors."""
    path, text, model = case
    with working_directory(path.parent):
        try:
            graph = archdsl.load(text, model=model, max_nodes=MAX_NODES)
        except ArchError:
            return
    try:
        drive_backends(graph, tmp_path_factory.mktemp("backends"))
    except ArchError as err:
        assert err.message in str(err)


@FUZZ
@given(st.sampled_from(["num_classes", "drop", "size", "nope"]), st.lists(TOKEN, min_size=1, max_size=8))
def test_command_line_defines(name, tokens):
    """``-D name=value`` values are spec expressions, fuzzed here against the AlexNet spec."""
    source = SOURCES[ROOT / "zoo_specs" / "alexnet.arch"]
    try:
        archdsl.load(source, model="alexnet", defines={name: " ".join(tokens)}, max_nodes=MAX_NODES)
    except ArchError as err:
        assert err.message in str(err)


def test_the_mutated_specs_start_from_loadable_models():
    """Every spec file offers the mutation test at least one model that loads within the fuzz node limit."""
    for path in SPECS:
        assert loadable_models(path), path
    assert loadable_models(ROOT / "archdsl" / "stdlib" / "layers.arch") == ("fuzz",)


# ---- resource attacks ------------------------------------------------------------------------

def model(*lines: str, shape: str = "[3, 32, 32]") -> str:
    return "model m() {\n    input x: " + shape + "\n" + "".join(f"    {ln}\n" for ln in lines) + "}\n"


ATTACKS = [
    ("power tower", model("y = 2 ** 10 ** 10", "output x"), "The result of '**' is too large (over 256 bits)."),
    ("repeat a list", model("y = [0] * 10 ** 9", "output x"),
     "Repeating a sequence 1000000000 times makes more than 1000000 items."),
    ("join lists", model("y = [1]", "for i in range(30) {", "    y = y + y", "}", "output x"),
     "Joining these sequences makes more than 1000000 items."),
    ("grow a string", model('y = "ab"', "for i in range(40) {", "    y = y + y", "}", "output x"),
     "Joining these sequences makes more than 1000000 items."),
    ("huge range", model("y = range(10 ** 12)", "output x"),
     "'range' would make 1000000000000 items; the limit is 1000000."),
    ("range past 2**63", model("y = range(2 ** 100)", "output x"),
     "'range' would make 1267650600228229401496703205376 items; the limit is 1000000."),
    ("range step zero", model("y = range(0, 10, 0)", "output x"), "The step of 'range' must not be zero."),
    ("nested empty loops", model("for i in range(1000000) {", "    for j in range(1000000) {", "    }", "}",
                                 "output x"), "Elaboration took more than 1500000 steps; is a loop running away?"),
    ("nested comprehensions", model("y = [[1 for j in range(1000000)] for i in range(1000000)]", "output x"),
     "Elaboration took more than 1500000 steps; is a loop running away?"),
    ("comprehension of big lists", model("z = [range(999999) for i in range(1000)]", "output x"),
     "Elaboration took more than 1500000 steps; is a loop running away?"),
    ("comprehension of big strings", model('y = ["a" * 999999] * 999999', 'z = [s + "b" for s in y]', "output x"),
     "Elaboration took more than 1500000 steps; is a loop running away?"),
    ("str of a shared list", model("y = [0] * 999", "z = str([y] * 999)", "output x"),
     "'str' would make a string of more than 1000000 characters."),
    ("compare shared lists", model("a = [0] * 999", "b = [0] * 999", "for i in range(3) {",
                                   "    c = [a] * 999 == [b] * 999", "}", "output x"),
     "Elaboration took more than 1500000 steps; is a loop running away?"),
    ("compare a doubling list", model("y = [1]", "z = [1]", "for i in range(60) {", "    y = [y, y]",
                                      "    z = [z, z]", "}", "c = y in [z]", "output x"),
     "This value would hold more than 1000000 items in all, counting the items of the lists and tuples inside it "
     "each time they appear (as saving or drawing the model writes them out); build a smaller value."),
    ("float overflow", model("y = 1e308 * 10", "output x"), "The result of '*' is too large for a float."),
    ("float literal overflow", model("y = 1e999", "output x"),
     "This number is too large for a float (the largest is about 1.8e308)."),
    ("int of a huge float", model("y = int(1e300)", "output x"),
     "The result of 'int' is too large (over 256 bits)."),
    ("round of a huge float", model("y = round(1e300)", "output x"),
     "The result of 'round' is too large (over 256 bits)."),
    ("sum overflows", model("y = sum([1e308, 1e308])", "output x"),
     "The result of 'sum' is too large for a float."),
    ("int literal", model("y = " + "9" * 41, "output x"), "The integer literal has more than 40 digits."),
    ("deep brackets", model("y = " + "[" * 150 + "1" + "]" * 150, "output x"),
     "The spec nests too deeply here for the compiler (more than 100 levels in its syntax tree); flatten it, for "
     "example with intermediate names."),
    ("deep minus", model("y = " + "-" * 500 + "1", "output x"),
     "The spec nests too deeply here for the compiler (more than 100 levels in its syntax tree); flatten it, for "
     "example with intermediate names."),
    ("deep sequences", model("output x -> " + "[" * 200 + "relu" + "]" * 200),
     "The spec nests too deeply here for the compiler (more than 100 levels in its syntax tree); flatten it, for "
     "example with intermediate names."),
    ("self-referencing alias", "model a = a()\n",
     "Model alias 'a' refers to itself (a -> a); an alias must lead to a model with a body."),
    ("deep block nesting",
     "".join(f"block b{i}() {{\n    input x\n    output x -> b{i + 1}\n}}\n" for i in range(80))
     + "block b80() {\n    input x\n    output x\n}\n" + model("output x -> b0"),
     "Blocks are nested more than 64 deep."),
]


@pytest.mark.parametrize("source, message", [a[1:] for a in ATTACKS], ids=[a[0] for a in ATTACKS])
def test_resource_attacks_end_in_a_diagnostic(source, message):
    with pytest.raises(ArchError) as info:
        archdsl.load(source)
    assert info.value.message == message
    assert info.value.span is not None and info.value.span.file == "<string>"
    str(info.value)


def test_deep_parentheses_and_long_sums_need_no_recursion():
    """Parentheses add no tree level, and `a + b + ...` is evaluated along its spine without recursing."""
    g = archdsl.load(model("n = " + "(" * 3000 + "8" + ")" * 3000, "k = " + " + ".join(["1"] * 5000) + " - 4997",
                           "output x -> conv(n, k)"))
    assert g.data(g.outputs[0])["shape"] == ("N", 8, 30, 30)


def test_enormous_layers_are_not_materialised():
    """Parameters are lazy: shape inference, totals and the stats table never allocate them."""
    # the largest sizes the guard allows (tests/test_frontend_limits.py): a weight of 2e9 elements, 8 GB
    g = archdsl.load(model("output x -> conv(40000, 3) -> conv(50000, 1, bias=false)", shape="[3, 8, 8]"))
    assert g.data(g.outputs[0])["shape"] == ("N", 50000, 6, 6)
    c, d = 40000, 50000
    assert totals(g)["params"] == c * 3 * 3 * 3 + c + c * d
    assert totals(g)["macs"] == 36 * c * 27 + 36 * c * d
    assert "2,000,000,000" in stats_table(g)
    assert not any(p.materialised for p in g.params.values())


def test_a_huge_input_stays_symbolic():
    g = archdsl.load(model("output x -> conv(4, 3) -> adaptive_avgpool(1)", shape="[3, 10 ** 9, 10 ** 9]"))
    assert g.data(g.outputs[0])["shape"] == ("N", 4, 1, 1)
    assert not any(p.materialised for p in g.params.values())


def test_a_file_over_the_size_limit_is_refused_before_parsing(short_tmp_path):
    text = "# padding\n" * 100_001
    with pytest.raises(ArchError) as info:
        parse(text, "big.arch")
    assert info.value.message == "The spec is larger than 1000000 bytes; split it into imported files."
    path = short_tmp_path / "big.arch"
    path.write_text(text)
    with pytest.raises(ArchError) as info:
        archdsl.load(path)
    assert info.value.message == (f"The spec file '{path.resolve()}' is larger than 1000000 bytes; split it into "
                                  "imported files.")


def test_a_long_file_parses():
    body = "".join(f"    y{i} = {i} * 2\n" for i in range(3000))
    g = archdsl.load("model m() {\n    input x: [3, 8, 8]\n" + body + "    output x -> conv(y2, 1)\n}\n")
    assert g.data(g.outputs[0])["shape"] == ("N", 4, 8, 8)


def test_every_registered_op_survives_bad_arguments():
    """Zero, negative, huge and ill-typed arguments to every op end in diagnostics, never crashes."""
    bad = ["0", "-1", "10 ** 30", "[0, 0]", "[-1, 2]", "1.5", '"a"', "none", "true", "[]"]
    for name, op in sorted(op_registry.OPS.items()):
        if not op.in_specs:
            continue
        for arg in op.args:
            for value in bad:
                source = model(f"output (x, x) -> {name}({arg.name}={value})" if op.arity != 1 else
                               f"output x -> {name}({arg.name}={value})")
                try:
                    archdsl.load(source)
                except ArchError as err:
                    str(err)
