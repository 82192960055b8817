"""The front end's limits (issue 15): hints for PyTorch spellings, bounded values and dimensions, bounded
cost, and a parser that reads and writes no cache file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import archdsl
from archdsl import ArchError
from archdsl.frontend.bounds import MAX_ITEMS, ValueBounds, ValueTooLarge
from archdsl.frontend.expressions import MAX_STEPS, STEPS_PER_TOKEN
from archdsl.syntax.parser import MAX_TOKENS
from archdsl.ir import serialize
from archdsl.syntax import parser as parser_mod
from archdsl.syntax import tables
from archdsl.syntax.parser import grammar_text, parse
from archdsl.syntax.postlex import Postlex

ROOT = Path(__file__).resolve().parents[1]


def model(*lines: str, shape: str = "[3, 8, 8]") -> str:
    return "model m() {\n    input x: " + shape + "\n" + "".join(f"    {ln}\n" for ln in lines) + "}\n"


def error(source, **kw) -> ArchError:
    with pytest.raises(ArchError) as info:
        archdsl.load(source, **kw)
    str(info.value)                     # renders without failing
    return info.value


def where(err: ArchError) -> tuple:
    s = err.span
    return (s.file, s.line, s.col, s.end_line, s.end_col)


def quick(source, seconds: float = 5.0, **kw) -> ArchError:
    """The error of ``source``, which must come within ``seconds`` of wall time (generous: a loaded
    2-core machine)."""
    start = time.perf_counter()
    err = error(source, **kw)
    assert time.perf_counter() - start < seconds
    return err


# ---- 1. did you mean: PyTorch spellings ---------------------------------------------------------

BN = "; did you mean 'bn'? (torch.nn.BatchNorm2d is 'bn' here)"


@pytest.mark.parametrize("name, hint", [
    ("BatchNorm2d", BN), ("batchnorm", BN), ("BatchNorm", BN), ("batch_norm", BN),
    ("ReLU", "; did you mean 'relu'? (torch.nn.ReLU is 'relu' here)"),
    ("Conv2d", "; did you mean 'conv'? (torch.nn.Conv2d(in, out, k) is 'conv(out, k)' here; the input channels "
               "come from the input)"),
    ("Linear", "; did you mean 'linear'? (torch.nn.Linear(in, out) is 'linear(out)' here; the input features "
               "come from the input)"),
    ("MaxPool2d", "; did you mean 'maxpool'? (torch.nn.MaxPool2d is 'maxpool' here)"),
    ("AdaptiveAvgPool2d", "; did you mean 'adaptive_avgpool'? (torch.nn.AdaptiveAvgPool2d is 'adaptive_avgpool' "
                          "here)"),
    ("Dropout", "; did you mean 'dropout'? (torch.nn.Dropout is 'dropout' here)"),
    ("LayerNorm", "; did you mean 'layer_norm'? (torch.nn.LayerNorm is 'layer_norm' here)"),
    ("GELU", "; did you mean 'gelu'? (torch.nn.GELU is 'gelu' here)"),
    ("SiLU", "; did you mean 'silu'? (torch.nn.SiLU is 'silu' here)"),
    ("Hardswish", "; did you mean 'hardswish'? (torch.nn.Hardswish is 'hardswish' here)"),
    ("Sigmoid", "; did you mean 'sigmoid'? (torch.nn.Sigmoid is 'sigmoid' here)"),
    ("Flatten", "; did you mean 'flatten'? (torch.nn.Flatten is 'flatten' here)"),
    ("Identity", "; did you mean 'identity'? (torch.nn.Identity is 'identity' here)"),
    ("Softmax", "; did you mean 'softmax'? (torch.nn.Softmax is 'softmax' here)"),
    ("global_avgpool", "; did you mean 'adaptive_avgpool(1)'? (global average pooling is 'adaptive_avgpool(1)' "
                       "here)"),
])
def test_pytorch_spellings_of_layers_are_answered_with_the_op(name, hint):
    err = error(model(f"output x -> {name}"))
    assert err.message == f"Unknown layer '{name}'{hint}"
    assert where(err) == ("<string>", 3, 17, 3, 17 + len(name))
    err = error(model(f"act = {name}", "output x"))
    assert err.message == f"Unknown name '{name}'{hint}"
    assert where(err) == ("<string>", 3, 11, 3, 11 + len(name))


def test_torch_prefixes_and_ops_dot_get_the_same_hint():
    err = error(model("output x -> nn.BatchNorm2d(3)"))
    assert err.message == "Unknown namespace 'nn': the built-in ops are written without a prefix" + BN
    assert where(err) == ("<string>", 3, 17, 3, 31)
    err = error(model("output x -> ops.BatchNorm2d"))
    assert err.message == "There is no built-in op 'BatchNorm2d'" + BN
    assert where(err) == ("<string>", 3, 17, 3, 32)


def test_a_visible_name_that_differs_in_case_wins_over_the_table():
    src = "block Relu_Block() {\n    input x\n    output x -> relu\n}\n" + model("output x -> relublock")
    err = error(src)
    assert err.message == "Unknown layer 'relublock'; did you mean 'Relu_Block'?"
    assert where(err) == ("<string>", 7, 17, 7, 26)


def test_names_outside_the_table_still_get_the_nearest_match():
    assert error(model("output x -> rellu")).message == "Unknown layer 'rellu'; did you mean 'relu'?"


# ---- 2. shared and deep values ------------------------------------------------------------------

TOO_BIG = (f"This value would hold more than {MAX_ITEMS} items in all, counting the items of the lists and tuples "
           "inside it each time they appear (as saving or drawing the model writes them out); build a smaller "
           "value.")
TOO_DEEP = "This value nests lists or tuples more than 100 levels deep; flatten it."
TAKES_ANY = "block b(v) {\n    input x\n    output x -> relu\n}\n"


def test_a_doubling_shared_list_is_refused_where_it_is_built():
    err = quick(TAKES_ANY + model("y = [1]", "for i in range(40) {", "    y = [y, y]", "}", "output x -> b(y)"))
    assert err.message == TOO_BIG
    assert where(err) == ("<string>", 9, 13, 9, 19)


def test_a_deep_list_is_refused_where_it_is_built():
    err = quick(TAKES_ANY + model("y = 1", "for i in range(5000) {", "    y = [y]", "}", "output x -> b(y)"))
    assert err.message == TOO_DEEP
    assert where(err) == ("<string>", 9, 13, 9, 16)


@pytest.mark.parametrize("start, expr, cols", [
    ("1", "(y,)", (13, 17)),
    ("1", "[y for j in range(1)]", (13, 34)),
    ("1", "list(zip([y]))", (22, 25)),          # the innermost list that is too deep
    ("1", "[0] + [y]", (19, 22)),
    ("[1]", "enumerate(y)", (13, 25)),          # a built-in's result
])
def test_every_way_of_nesting_is_bounded(start, expr, cols):
    err = quick(model(f"y = {start}", "for i in range(5000) {", f"    y = {expr}", "}", "output x"))
    assert err.message == TOO_DEEP
    assert where(err) == ("<string>", 5, cols[0], 5, cols[1])


def test_item_assignment_is_bounded():
    err = quick(model("y = [0, 0]", "for i in range(5000) {", "    y[0] = y", "}", "output x"))
    assert err.message == TOO_DEEP
    assert where(err) == ("<string>", 5, 9, 5, 17)


def test_list_models_reports_a_deep_constant_in_a_function():
    src = ("def deep(n: int) {\n    y = 1\n    for i in range(n) {\n        y = [y]\n    }\n    return y\n}\n"
           "c = deep(3000)\nd = str(c)\n" + model("output x"))
    with pytest.raises(ArchError) as info:
        archdsl.list_models(src)
    assert info.value.message == TOO_DEEP
    assert where(info.value) == ("<string>", 4, 13, 4, 16)
    assert [n.message for n in info.value.notes] == ["in function 'deep', called here"]


def test_values_from_the_api_are_bounded_too():
    deep = 1
    for _ in range(300):
        deep = [deep]
    err = error(TAKES_ANY.replace("block b(v)", "model m(v = 0)").replace("input x", "input x: [3, 8, 8]"), v=deep)
    assert err.message == TOO_DEEP
    assert where(err) == ("<api>", 1, 1, 1, 1)
    err = error("zoo_specs/resnet.arch", model="resnet18", num_classes=10 ** 5000)
    assert err.message == "The value of 'num_classes' holds an int of over 256 bits; ints in a spec are below 2**256."


def test_measuring_remembers_big_lists_so_that_reusing_them_is_cheap():
    bounds = ValueBounds()
    big = [list(range(1000)) for _ in range(900)]
    assert bounds.measure(big) == (2, 900_900)
    start = time.perf_counter()
    for i in range(20_000):
        assert bounds.measure([big, i]) == (3, 900_902)
    assert time.perf_counter() - start < 5
    with pytest.raises(ValueTooLarge):
        bounds.measure([big, big])


def test_a_saved_ir_with_a_deep_value_is_a_located_error(tmp_path):
    g = archdsl.load(model("output x -> relu"))
    data = serialize.to_dict(g)
    deep = 1
    for _ in range(300):
        deep = [deep]
    data["meta"]["deep"] = deep
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ArchError) as info:
        serialize.load_checked(path)
    assert info.value.message == ("This saved IR is damaged or not an IR file: a value nests more than 200 levels "
                                  "of lists, tuples or objects. Save it again with `archc ir -o FILE.json`.")
    g.meta["deep"] = deep
    with pytest.raises(ValueError, match="a value nests more than 200 levels"):
        serialize.to_dict(g)


# ---- 3. dimensions and big ints -------------------------------------------------------------------

GUARD = "more than 2147483647 (2**31 - 1), the most a size, index or count can be; tensors that large cannot be " \
        "allocated or exported."


@pytest.mark.parametrize("lines, message, span", [
    (("h = x", "for i in range(1500) {", "    h = [h] * 1000 -> concat", "}", "output h"),
     "'concat' would make a tensor of shape (N, 3000000000, 8, 8), and its dimension 3000000000 is more than "
     "2147483647 (2**31 - 1), the most a dimension can be.", (5, 27, 5, 33)),
    (("output x -> flatten -> linear(10 ** 70)",),
     "'linear' was given out_features=10000000000000000000000000000000000000000000000000000000000000000000000, "
     + GUARD, (3, 28, 3, 44)),
    (("output x -> conv(10 ** 12, 3)",), "'conv' was given out_channels=1000000000000, " + GUARD, (3, 17, 3, 34)),
    (("output x -> conv(8, 3, stride=2 ** 40)",), "'conv' was given stride holding 1099511627776, " + GUARD,
     (3, 17, 3, 43)),
    (("output x -> reshape([2 ** 63])",), "'reshape' was given shape holding 9223372036854775808, " + GUARD,
     (3, 17, 3, 35)),
    (("output x -> conv(2 ** 30, 3)",),
     "The weight of 'conv' would hold 28991029248 elements (1073741824 x 3 x 3 x 3), more than 2147483648 "
     "(2**31), the most one parameter tensor may hold.", (3, 17, 3, 33)),
    (("output x -> flatten -> linear(2 ** 31 - 1)",),
     "The weight of 'linear' would hold 412316860224 elements (2147483647 x 192), more than 2147483648 (2**31), "
     "the most one parameter tensor may hold.", (3, 28, 3, 47)),
    (("output x -> dense { relu for i in range(40) }",),
     "A dense block concatenates every layer's output with its input, so 'concat' would make a tensor of shape "
     "(N, 3221225472, 8, 8), and its dimension 3221225472 is more than 2147483647 (2**31 - 1), the most a "
     "dimension can be.", (3, 25, 3, 48)),
])
def test_sizes_past_int32_are_located_errors(lines, message, span):
    err = quick(model(*lines))
    assert err.message == message
    assert where(err) == ("<string>", *span)


def test_an_input_dimension_past_int32_is_refused():
    err = error(model("output x", shape="[3, 2 ** 40, 8]"))
    assert err.message == "An input dimension can be at most 2147483647 (2**31 - 1), but this shape has 1099511627776."
    assert where(err) == ("<string>", 2, 14, 2, 29)


def test_float_arguments_beyond_a_float_are_located_errors():
    err = error("model m(p: float = 0.5) {\n    input x: [3, 8, 8]\n    output x -> dropout(p)\n}\n", p=2 ** 2000)
    assert err.message == "The value of 'p' holds an int of over 256 bits; ints in a spec are below 2**256."


# ---- 4. bounded cost -------------------------------------------------------------------------------

def test_a_dense_block_with_too_many_concatenation_inputs_is_refused_before_it_is_built():
    err = quick(model("output x -> dense { relu for i in range(3000) }"), seconds=5)
    assert err.message == (
        "This dense block has 3000 layers, so its concatenations would read 4504501 tensors (n(n + 1)/2 + n + 1), "
        "more than 100000 (10 times the node limit of 10000); split it into several dense blocks with "
        "transitions between them, as DenseNet does, or raise the node limit.")
    assert where(err) == ("<string>", 3, 17, 3, 52)
    err = quick(model("output x -> dense { relu for i in range(50) }"), max_nodes=100)
    assert err.message.startswith("This dense block has 50 layers, so its concatenations would read 1326 tensors")


def test_the_tensors_all_layers_read_are_bounded():
    err = quick(model("for i in range(300) {", "    y = [x] * 1000 -> concat", "}", "output x"), max_nodes=1000)
    assert err.message == ("The model's layers read more than 10000 tensors in all (10 times the node limit of 1000); "
                           "raise the limit (max_nodes= in the API, --max-nodes on the command line) if this size "
                           "is intended.")
    assert where(err) == ("<string>", 4, 27, 4, 33)


def test_a_long_sum_and_a_long_chain_parse_without_recursion():
    text = "c = 0" + " + 1" * 30_000 + "\n" + model("output x" + " -> relu" * 5_000)     # 70,000 tokens
    module = parse(text, "long.arch")
    assert len(module.items) == 2


BUDGET = ("The spec is too large to compile: it and its imports hold more than 75000 tokens (names, numbers and "
          "symbols), all that one compile may read; the largest network of the zoo needs under 5000.")


def test_the_tokens_one_compile_reads_are_bounded_and_the_error_is_at_the_first_one_beyond():
    assert MAX_TOKENS == MAX_STEPS // STEPS_PER_TOKEN == 75_000
    fits = model("n = 1" + "+1" * 30_000, "output x")               # 60,000 tokens and the model's few
    assert len(archdsl.load(fits)) == 1
    src = model("n = 1" + "+1" * 40_000, "output x")
    err = quick(src)
    assert err.message == BUDGET
    beyond = list(parser_mod.tokens(src))[75_000]                     # the 75,001st
    assert where(err) == ("<string>", beyond.line, beyond.column, beyond.line, beyond.end_column)
    assert beyond.line == 3 and str(beyond) in ("+", "1")


def test_every_parse_reads_at_most_the_token_limit_fmt_and_defines_too():
    from archdsl.syntax.formatter import format_source
    from archdsl.syntax.parser import parse_expression
    src = model("n = 1" + "+1" * 40_000, "output x")
    for run in (lambda: format_source(src, "big.arch"), lambda: parse(src, "big.arch"),
                lambda: parse_expression("1" + "+1" * 40_000, "<command line>")):
        with pytest.raises(ArchError) as info:
            run()
        assert info.value.message == BUDGET


def test_a_spec_whose_length_spends_the_budget_is_told_so():
    lines = [f"h = h -> b{i}: [conv(4, 3, padding=1) -> relu]" for i in range(3_500)]
    err = quick(model("h = x", *lines, "output h"))
    assert err.message.startswith("Elaboration took more than 1500000 steps, ")
    assert err.message.endswith("tokens; write repeated layers as a loop or a block instead of line by line.")


def test_comments_and_blank_lines_cost_no_tokens():
    text = model(*["# a comment line, long enough to be seen " * 4] * 5_000, "output x")
    assert len(text) > 800_000 and len(archdsl.load(text)) == 1


def test_imports_share_the_token_budget(tmp_path):
    (tmp_path / "a.arch").write_text("A = 1" + "+1" * 30_000 + "\n")
    (tmp_path / "b.arch").write_text("B = 1" + "+1" * 30_000 + "\n")
    main = tmp_path / "main.arch"
    main.write_text('import "a.arch"\nimport "b.arch"\n' + model("output x"))
    err = quick(main)
    assert err.message == BUDGET and err.span.file.endswith("b.arch")
    main.write_text('import "a.arch"\n' + model("output x"))
    assert len(archdsl.load(main)) == 1


def test_layers_spend_the_step_budget_and_a_higher_node_limit_brings_their_cost():
    src = model("h = x", "for i in range(12000) {", "    h = h -> relu", "}", "output h")
    assert quick(src).message.startswith("The model has more than 10000 nodes")
    assert len(archdsl.load(src, max_nodes=13_000)) == 12_001     # 1.2M steps of layers: within 1.5M + 300k
    loop_and_layers = model("h = x", "for i in range(9000) {", "    h = h -> relu", "}",
                            "n = 0", "for i in range(700000) {", "    n = n + 1", "}", "output h")
    assert quick(loop_and_layers).message == "Elaboration took more than 1500000 steps; is a loop running away?"


def test_the_fast_lexer_gives_larks_tokens():
    """archdsl.syntax.lexer against Lark's own lexer (same tables), on every zoo file and on text with every
    terminal, keyword-like names, strings with escapes, comments and numbers of every form."""
    lark = parser_mod._lark()
    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "zoo_specs").glob("*.arch"))]
    texts.append('ifx if1 for_ in-out a-1 1.5e3 .5 3. 2e-2 "a\\"b" # c\n ** // == != <= >= -> : , . = { } < ( [ '
                 '- > % + } ) ] / * parallel residual shortcut assert import output return block dense false input '
                 'model elif else none true and def for not stn as if in or\n\n  x')
    fields = ("type", "value", "start_pos", "line", "column", "end_line", "end_column", "end_pos")
    for text in texts:
        for keep in (False, True):                 # the parser's tokens, and fmt's (whitespace and comments too)
            ours = [tuple(getattr(t, f) for f in fields) for t in parser_mod.tokens(text, keep_ignored=keep)]
            theirs = [tuple(getattr(t, f) for f in fields) for t in lark.lex(text, dont_ignore=keep)]
            assert ours == theirs
    with pytest.raises(ArchError) as info:
        parse("model m() { input x: [3] output x -> $ }", "bad.arch")
    assert info.value.message == "The character '$' is not part of the .arch language."
    assert where(info.value) == ("bad.arch", 1, 38, 1, 39)


# ---- the parser: reductions build the AST, errors keep their order -------------------------------

def test_a_syntax_error_is_reported_before_an_earlier_constructor_error():
    src = model("y = " + "9" * 41, "output x ->")
    with pytest.raises(ArchError) as info:
        parse(src)
    assert info.value.message.startswith("The file ends") or info.value.message.startswith("Unexpected")


def test_the_nesting_limit_is_reported_before_an_earlier_constructor_error():
    src = model("y = " + "9" * 41, "z = " + "[" * 150 + "1" + "]" * 150, "output x")
    with pytest.raises(ArchError) as info:
        parse(src)
    assert info.value.message.startswith("The spec nests too deeply here for the compiler")
    assert (info.value.span.line, info.value.span.col) == (4, 105)


def test_the_shipped_tables_are_those_of_the_grammar():
    """Regenerate with `python -m archdsl.syntax.tables` after editing grammars/arch.lark."""
    saved = json.loads(tables.TABLES.read_text(encoding="utf-8"))
    assert saved["key"] == tables.key(grammar_text())
    shipped = tables.load(grammar_text(), Postlex())
    built = tables.build(grammar_text(), Postlex())
    assert sorted(map(str, shipped.rules)) == sorted(map(str, built.rules))
    assert sorted((t.name, t.pattern.value) for t in shipped.terminals) == \
        sorted((t.name, t.pattern.value) for t in built.terminals)
    text = (ROOT / "zoo_specs" / "resnet.arch").read_text(encoding="utf-8")
    assert shipped.parse(text, start="start") == built.parse(text, start="start")


def test_stale_tables_are_not_used(tmp_path, monkeypatch):
    stale = tmp_path / "arch_tables.json"
    stale.write_text(json.dumps({"key": "0" * 64, "data": {}, "memo": {}}))
    monkeypatch.setattr(tables, "TABLES", stale)
    lark = tables.load(grammar_text(), Postlex())
    assert lark.parse("model m() { input x: [3]\n output x }", start="start").data == "start"


# ---- 5. no cache file in the temp directory -------------------------------------------------------

def test_parsing_reads_and_writes_nothing_in_the_temp_directory(monkeypatch):
    import builtins
    import io

    import lark.utils
    temp = os.path.realpath(tempfile.gettempdir())
    opened = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        opened.append(os.path.realpath(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else "")
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)
    monkeypatch.setattr(lark.utils.FS, "open", staticmethod(spy))
    parser_mod._lark.cache_clear()
    try:
        parse((ROOT / "zoo_specs" / "resnet.arch").read_text(encoding="utf-8"), "resnet.arch")
    finally:
        parser_mod._lark.cache_clear()
    # the checkout itself may live in the temp directory (CI clones there): its own files are fine
    ours = [os.path.realpath(ROOT) + os.sep, os.path.realpath(os.path.dirname(archdsl.__file__)) + os.sep]
    assert not [p for p in opened if p.startswith(temp + os.sep) and not any(p.startswith(o) for o in ours)]


def test_a_fresh_process_leaves_a_fresh_temp_directory_empty(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "OMP_NUM_THREADS": "1"}
    code = "import archdsl; archdsl.load('zoo_specs/resnet.arch', 'resnet18')"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)
    assert list(temp.iterdir()) == []
