"""The pass machinery: pipeline text, option typing, errors, verification, IR dumps and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import archdsl
from archdsl import ArchError
from archdsl.cli import COMMANDS, main
from archdsl.ir.printer import print_graph
from archdsl.ir.stats import stats_table
from archdsl.passes import PASSES, Pass, parse_pipeline, replace_node, run_pipeline
from archdsl.passes.dce import DeadCodeElimination
from archdsl.passes.drop_noops import DropInferenceNoops
from archdsl.passes.fold_bn import FoldBatchNorm
from archdsl.passes.context import PassContext

ROOT = Path(__file__).resolve().parents[2]
RESNET = ROOT / "zoo_specs" / "resnet.arch"
SMALL = """model m() {
    input x: [3, 8, 8]
    output x -> c: conv(4, 3, padding=1, bias=false) -> b: bn -> relu -> d: dropout(0.3) -> i: identity
}
"""


def small():
    g = archdsl.load(SMALL)
    rng = np.random.default_rng(0)
    bn = next(n for n in g.nodes() if n.op == "bn")
    bn.param("running_mean").value = rng.uniform(-1, 1, 4).astype(np.float32)
    bn.param("running_var").value = rng.uniform(0.5, 2, 4).astype(np.float32)
    return g


# ---- a pass with every option type, registered only inside the tests that use it ---------------

@dataclass
class Tune(Pass):
    """Does nothing, with options of every type."""
    name = "tune"
    ratio: float = field(default=0.5, metadata={"doc": "a fraction"})
    rounds: int = 1
    exact: bool = False
    label: str = "x"

    def rewrite(self, graph, report, ctx):
        return False


@dataclass
class Needs(Pass):
    """Needs an option."""
    name = "needs"
    level: int

    def rewrite(self, graph, report, ctx):
        return False


@pytest.fixture
def extra_passes(monkeypatch):
    monkeypatch.setitem(PASSES, "tune", Tune)
    monkeypatch.setitem(PASSES, "needs", Needs)


# ---- parsing -------------------------------------------------------------------------------------

def test_pipeline_text_becomes_pass_objects():
    passes = parse_pipeline(" fold-bn , dce,drop-inference-noops{training=true} ")
    assert passes == [FoldBatchNorm(), DeadCodeElimination(), DropInferenceNoops(training=True)]
    assert [str(p) for p in passes] == ["fold-bn", "dce", "drop-inference-noops{training=true}"]


def test_options_are_typed_by_the_dataclass_fields(extra_passes):
    (p,) = parse_pipeline('tune{ratio=0.25, rounds=3, exact=true, label="two words"}')
    assert p == Tune(ratio=0.25, rounds=3, exact=True, label="two words")
    assert str(p) == 'tune{ratio=0.25,rounds=3,exact=true,label="two words"}'
    assert parse_pipeline(str(p)) == [p]
    assert parse_pipeline("tune{}") == [Tune()]
    assert parse_pipeline("needs{level=2}") == [Needs(2)]
    assert parse_pipeline("drop-inference-noops{training=false}") == [DropInferenceNoops()]


ERRORS = [
    ("fold-bm", 1, 8, "There is no pass 'fold-bm'; did you mean 'fold-bn'? The passes are dce, "
                      "drop-inference-noops, fold-bn, lowrank, prune, quantize and weight-share."),
    ("zzz", 1, 4, "There is no pass 'zzz'. The passes are dce, drop-inference-noops, fold-bn, lowrank, prune, quantize and weight-share."),
    ("fold-bn{ratio=1}", 9, 14, "Pass 'fold-bn' has no option 'ratio'. It takes no options."),
    ("drop-inference-noops{trainng=true}", 22, 29,
     "Pass 'drop-inference-noops' has no option 'trainng'; did you mean 'training'? Its options are training."),
    ("drop-inference-noops{training=yes}", 31, 34,
     "Option 'training' of pass 'drop-inference-noops' expects true or false, but got 'yes'."),
    ('drop-inference-noops{training="true"}', 31, 37,
     "Option 'training' of pass 'drop-inference-noops' expects true or false, not quoted text."),
    ("drop-inference-noops{training=true,training=false}", 36, 44,
     "Option 'training' of pass 'drop-inference-noops' is given twice."),
    ("fold-bn,", 9, 10, "Expected a pass name in the pass pipeline, but found the end of the pipeline."),
    ("fold-bn dce", 9, 12, "Expected ',' between passes in the pass pipeline, but found 'dce'."),
    ("fold-bn{", 9, 10, "Expected an option name for pass 'fold-bn' in the pass pipeline, but found the end "
                        "of the pipeline."),
    ("drop-inference-noops{training}", 30, 31,
     "Expected '=' after option 'training' in the pass pipeline, but found '}'."),
    ("dce;fold-bn", 4, 5, "Expected ',' between passes in the pass pipeline, but found ';'."),
]


@pytest.mark.parametrize("text,col,end,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_pipeline_errors_name_the_problem_and_the_place(text, col, end, message):
    with pytest.raises(ArchError) as info:
        parse_pipeline(text)
    err = info.value
    assert err.message == message
    assert (err.span.file, err.span.line, err.span.col, err.span.end_col) == ("<passes>", 1, col, end)


def test_option_type_errors(extra_passes):
    cases = {"tune{rounds=2.5}": "Option 'rounds' of pass 'tune' expects an integer, but got '2.5'.",
             "tune{ratio=half}": "Option 'ratio' of pass 'tune' expects a number, but got 'half'.",
             "needs": "Pass 'needs' needs the option level, as in needs{level=...}.",
             "tune{ratio=}": "Expected a value for option 'ratio' in the pass pipeline, but found '}'."}
    for text, message in cases.items():
        with pytest.raises(ArchError) as info:
            parse_pipeline(text)
        assert info.value.message == message, text


def test_a_pass_built_in_python_checks_its_option_types():
    from archdsl.passes.base import OptionError
    from archdsl.passes.prune import Prune
    cases = [(lambda: Tune(rounds=2.5), "rounds", "rounds must be an integer, but it is 2.5 (float)."),
             (lambda: Tune(rounds=True), "rounds", "rounds must be an integer, but it is True (bool)."),
             (lambda: Tune(ratio="half"), "ratio", "ratio must be a number, but it is 'half' (str)."),
             (lambda: Tune(exact=1), "exact", "exact must be true or false, but it is 1 (int)."),
             (lambda: Prune(ratio="0.5"), "ratio", "ratio must be a number or None, but it is '0.5' (str)."),
             (lambda: Prune(ratio=0.5, keep=["fc"]), "keep",
              "keep must be a string or None, but it is ['fc'] (list).")]
    for make, option, message in cases:
        with pytest.raises(OptionError) as info:
            make()
        assert (str(info.value), info.value.option) == (message, option)
    assert Tune(ratio=1).ratio == 1 and Prune(ratio=0.5, keep=None).keep is None   # an int is a number

def test_pipeline_error_renders_with_a_caret():
    with pytest.raises(ArchError) as info:
        parse_pipeline("fold-bn,dce{x=1}")
    assert str(info.value) == ("<passes>:1:13: error: Pass 'dce' has no option 'x'. It takes no options.\n"
                               " 1 | fold-bn,dce{x=1}\n"
                               "   |             ^")


def test_empty_pipeline_is_an_error():
    with pytest.raises(ArchError, match="The pass pipeline is empty"):
        parse_pipeline("  ")


# ---- running -------------------------------------------------------------------------------------

def test_run_pipeline_returns_the_last_graph_and_one_report_per_pass():
    g = small()
    text = print_graph(g)
    result = run_pipeline(g, "fold-bn,drop-inference-noops,dce")
    assert print_graph(g) == text                                   # the input is not changed
    assert [r.pass_name for r in result.reports] == ["fold-bn", "drop-inference-noops", "dce"]
    assert [r.modified for r in result.results] == [True, True, False]
    assert [n.op for n in result.graph.nodes()] == ["input", "conv", "relu"]
    fold, drop, dce = result.reports
    assert (fold.removed, drop.removed, dce.removed) == (["b"], ["d", "i"], [])
    assert (fold.nodes_before, fold.nodes_after, drop.nodes_after) == (6, 5, 3)
    assert (fold.params_before, fold.params_after) == (4 * 3 * 9 + 8, 4 * 3 * 9 + 4)
    assert result.summary().splitlines()[0] == (
        "fold-bn: modified; nodes 6 -> 5 (1 removed, 0 added, 1 rewritten); params 116 -> 112; "
        "MACs 6,912 -> 6,912")


def test_run_pipeline_accepts_pass_objects_and_mixed_lists():
    g = small()
    a = run_pipeline(g, [FoldBatchNorm(), "dce"])
    b = run_pipeline(g, FoldBatchNorm())
    assert print_graph(a.graph) == print_graph(b.graph)
    for passes, message in (([3], "A pipeline holds pass names and Pass objects, not int."),
                            (None, "A pipeline is pipeline text, a Pass or a list of them, not NoneType."),
                            (b"dce", "A pipeline is pipeline text, a Pass or a list of them, not bytes.")):
        with pytest.raises(ArchError) as info:
            run_pipeline(g, passes)
        assert info.value.message == message


def test_the_api_refuses_wrong_arguments_with_typed_errors():
    g = small()
    x = np.random.default_rng(0).standard_normal((4, *g.data(g.inputs[0])["shape"][1:])).astype(np.float32)
    for call, message in (
            (lambda: run_pipeline(None, "dce"), "run_pipeline takes a Graph (from archdsl.load), not NoneType."),
            (lambda: run_pipeline(g, "dce", ctx={}), "ctx must be a PassContext, but it is dict."),
            (lambda: run_pipeline(g, "dce", print_ir_after=5), "print_ir_after takes pass names (a string or a "
                                                                "list of them)."),
            (lambda: run_pipeline(g, "fold-bn", verify=True, tolerance="x"),
             "The tolerance must be a finite number of at least 0, but it is 'x'."),
            (lambda: PassContext(data=x), "PassContext.data must be a dict with an array 'x' (inputs, batch first) "
                                          "and optionally 'y' (labels), but it is ndarray."),
            (lambda: PassContext(data={"X": x}), "PassContext.data holds 'X', which no pass reads; its keys are 'x' "
                                                 "(inputs) and 'y' (labels)."),
            (lambda: PassContext(data={"x": x.tolist()}), "PassContext.data's 'x' must be a NumPy array, but it is "
                                                          "list."),
            (lambda: PassContext(data={"x": x + 1j}), "The array 'x' must hold real numbers, but its dtype is "
                                                      "complex64."),
            (lambda: PassContext(data={"x": x, "y": np.zeros(3, np.int64)}),
             "PassContext.data's 'y' must hold one integer label per sample of 'x' (4), but it has shape (3,) and "
             "dtype int64."),
            (lambda: PassContext(data={"x": np.where(x > 1, np.nan, x)}),
             f"The array 'x' holds {int((x > 1).sum()):,} NaN or infinite values; clean the data first."),
            (lambda: PassContext(seed=-1), "The seed must be an integer from 0 to 2**63 - 1, but it is -1."),
            (lambda: PassContext(calib_samples=0), "The number of calibration samples must be an integer of at "
                                                   "least 1, but it is 0."),
            (lambda: run_pipeline(g, "dce", ctx=PassContext(data={"x": x[:, :1]})),
             f"PassContext.data's 'x' holds samples of shape (1, {x.shape[2]}, {x.shape[3]}) (rank 4 with the "
             f"batch), but model '{g.name}' takes (N, {', '.join(map(str, x.shape[1:]))}); give inputs of that "
             "shape, batch first."),
            (lambda: run_pipeline(g, "dce", ctx=PassContext(data={"x": (x, x)})),
             f"PassContext.data gives 2 input arrays, but model '{g.name}' takes 1 input; give 'x' as a tuple "
             "with one array per input.")):
        with pytest.raises(ArchError) as info:
            call()
        assert info.value.message == message
    assert (x > 1).any()


def test_the_same_pass_twice_reports_no_change_the_second_time():
    result = run_pipeline(small(), "fold-bn,fold-bn")
    assert [r.modified for r in result.results] == [True, False]
    assert result.reports[1].params_before == result.reports[1].params_after


@dataclass
class BreakShapes(Pass):
    """Records a wrong shape on the first conv."""
    name = "break-shapes"

    def rewrite(self, graph, report, ctx):
        conv = next(n for n in graph.nodes() if n.op == "conv")
        graph.update(conv.id, shape=("N", 5, 8, 8))
        return True


def test_the_ir_is_verified_after_every_pass():
    with pytest.raises(ArchError) as info:
        run_pipeline(small(), ["fold-bn", BreakShapes(), "dce"])
    assert info.value.message == ("The IR is invalid after pass 'break-shapes': Node @c (conv) records shape "
                                  "(N, 5, 8, 8) but its inputs give (N, 4, 8, 8).")
    assert info.value.span is not None and info.value.span.line == 3


@dataclass
class Perturb(Pass):
    """Scales one conv weight: a wrong rewrite."""
    name = "perturb"
    factor: float = 1.01

    def rewrite(self, graph, report, ctx):
        conv = next(n for n in graph.nodes() if n.op == "conv")
        conv.param("weight").value = conv.param("weight").value * self.factor
        report.touched(conv.id)
        return True


def test_verify_names_the_pass_that_changed_the_outputs():
    pytest.importorskip("torch")
    with pytest.raises(ArchError) as info:
        run_pipeline(small(), ["fold-bn", "drop-inference-noops", Perturb()], verify=True)
    msg = info.value.message
    assert msg.startswith("Pass 'perturb' changed the model's output 1: the relative difference is ")
    assert msg.endswith(", above the tolerance 0.0001 (--verify ran a random input of batch 2 before and "
                        "after the pass).")
    # within the tolerance it passes
    run_pipeline(small(), ["fold-bn", Perturb(1.000001)], verify=True)


def test_print_ir_after_dumps_the_canonical_text():
    g = small()
    dumps = []
    result = run_pipeline(g, "fold-bn,dce,drop-inference-noops", print_ir_after=["fold-bn", "drop-inference-noops"],
                          emit=dumps.append)
    after_fold = run_pipeline(g, "fold-bn").graph
    assert dumps == [f"// IR after fold-bn (pass 1 of 3)\n{print_graph(after_fold)}",
                     f"// IR after drop-inference-noops (pass 3 of 3)\n{print_graph(result.graph)}"]


def test_print_ir_after_a_pass_not_in_the_pipeline_is_an_error():
    with pytest.raises(ArchError) as info:
        run_pipeline(small(), "fold-bn,dce", print_ir_after=["fold-b"])
    assert info.value.message == ("--print-ir-after names 'fold-b', which is not in the pipeline; did you mean "
                                  "'fold-bn'? The pipeline runs fold-bn and dce.")


# ---- the pass contract -----------------------------------------------------------------------------

@dataclass
class DropoutToIdentity(Pass):
    """Replaces dropout by identity through replace_node."""
    name = "dropout-to-identity"

    def rewrite(self, graph, report, ctx):
        hits = [n.id for n in graph.nodes() if n.op == "dropout"]
        for nid in hits:
            replace_node(graph, nid, "identity", attrs={})
        return bool(hits)


def test_new_nodes_keep_the_span_and_scope_of_the_node_they_replace():
    g = small()
    old = next(n for n in g.nodes() if n.op == "dropout")
    result = DropoutToIdentity().run(g)
    new = next(n for n in result.graph.nodes() if n.scope == "d")
    assert new.op == "identity" and new.id != old.id
    assert (new.span, new.scope, new.shape) == (old.span, old.scope, old.shape)
    assert (result.report.removed, result.report.added, result.report.rewired) == (["d"], ["d"], ["i"])
    run_pipeline(g, [DropoutToIdentity()], verify=True)


@dataclass
class Spanless(Pass):
    """Adds a node without a source location."""
    name = "spanless"

    def rewrite(self, graph, report, ctx):
        out = graph.outputs[0]
        nid = graph.add_node("relu", [out], shape=graph.data(out)["shape"])
        graph.replace_all_uses(out, nid)
        graph.set_inputs(nid, [out])
        return True


@dataclass
class Liar(Pass):
    """Changes the graph but says it did not."""
    name = "liar"

    def rewrite(self, graph, report, ctx):
        DropInferenceNoops().rewrite(graph, report, ctx)
        return False


def test_the_contract_is_enforced():
    with pytest.raises(RuntimeError, match="created node %6 without a source location"):
        Spanless().run(small())
    with pytest.raises(RuntimeError, match="returned modified=False but the graph changed"):
        Liar().run(small())


def test_register_rejects_malformed_passes():
    from archdsl.passes.base import register

    class NoName(Pass):
        """x"""

    with pytest.raises(TypeError, match="needs a class attribute `name`"):
        register(NoName)

    @dataclass
    class NoDoc(Pass):
        name = "no-doc"

    with pytest.raises(TypeError, match="needs a docstring"):
        register(NoDoc)

    @dataclass
    class Dup(Pass):
        """Duplicate."""
        name = "dce"

    with pytest.raises(ValueError, match="already registered"):
        register(Dup)


def test_the_pass_core_does_not_import_torch():
    code = ("import sys, archdsl\n"
            "from archdsl.passes import run_pipeline\n"
            f"g = archdsl.load({str(RESNET)!r}, 'resnet18', size=64)\n"
            "run_pipeline(g, 'fold-bn,dce,drop-inference-noops')\n"
            "import archdsl.cli.opt, archdsl.cli.passes\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- CLI ---------------------------------------------------------------------------------------------

def test_opt_and_passes_are_commands():
    assert "opt" in COMMANDS and "passes" in COMMANDS


def test_archc_passes_lists_every_pass_with_options(capsys):
    assert main(["passes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    width = max(map(len, PASSES))
    for name, cls in PASSES.items():
        assert f"{name.ljust(width)}  {cls.summary()}" in lines
    doc = DropInferenceNoops.__dataclass_fields__["training"].metadata["doc"]
    assert " " * (width + 4) + f"training: bool = false  {doc}" in lines
    assert main(["passes", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in data] == sorted(PASSES)
    noops = next(p for p in data if p["name"] == "drop-inference-noops")
    assert noops["options"] == [{"name": "training", "type": "bool", "default": "false",
                                 "doc": DropInferenceNoops.__dataclass_fields__["training"].metadata["doc"]}]


def test_archc_opt_emits_ir_and_reports_on_stderr(capsys):
    argv = ["opt", str(RESNET), "--model", "resnet18", "-D", "size=64", "--passes", "fold-bn,dce"]
    assert main(argv) == 0
    out = capsys.readouterr()
    expected = run_pipeline(archdsl.load(RESNET, "resnet18", size=64), "fold-bn,dce")
    assert out.out == print_graph(expected.graph) + "\n"
    assert out.err == expected.summary() + "\n"
    assert main(argv + ["--emit", "arch-stats", "-q"]) == 0
    out = capsys.readouterr()
    assert out.out == stats_table(expected.graph) + "\n" and out.err == ""
    assert main(argv + ["--emit", "report"]) == 0
    assert json.loads(capsys.readouterr().out) == [r.to_json() for r in expected.reports]


def test_archc_opt_verify_and_print_ir_after(capsys):
    pytest.importorskip("torch")
    argv = ["opt", str(RESNET), "--model", "resnet18", "-D", "size=32", "--passes", "fold-bn,dce", "--verify",
            "--print-ir-after", "fold-bn", "--emit", "arch-stats", "-q"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    after = run_pipeline(archdsl.load(RESNET, "resnet18", size=32), "fold-bn").graph
    assert err == f"// IR after fold-bn (pass 1 of 2)\n{print_graph(after)}\n"


def test_archc_opt_errors_are_diagnostics(capsys):
    assert main(["opt", str(RESNET), "--model", "resnet18", "--passes", "fold-bn,dcee"]) == 1
    assert capsys.readouterr().err == (
        "<passes>:1:9: error: There is no pass 'dcee'; did you mean 'dce'? The passes are dce, "
        "drop-inference-noops, fold-bn, lowrank, prune, quantize and weight-share.\n 1 | fold-bn,dcee\n   |         ^^^^\n")


def test_archc_opt_saves_the_optimised_ir(tmp_path, capsys):
    from archdsl.ir.serialize import load
    out = tmp_path / "folded.json"
    assert main(["opt", str(RESNET), "--model", "resnet18", "-D", "size=64", "--passes", "fold-bn", "-q",
                 "-o", str(out)]) == 0
    capsys.readouterr()
    back = load(out)
    assert print_graph(back) == print_graph(run_pipeline(archdsl.load(RESNET, "resnet18", size=64),
                                                         "fold-bn").graph)
    assert "conv1.bias" in back.params and back.params["conv1.bias"].materialised


def test_archc_compile_runs_passes(tmp_path, capsys):
    pytest.importorskip("archdsl.backends.onnx_export")
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "m.onnx"
    assert main(["compile", str(RESNET), "--model", "resnet18", "-D", "size=64", "--passes", "fold-bn,dce",
                 "--target", "onnx", "-o", str(out)]) == 0
    model = onnx.load(str(out))
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]


def test_relative_error_is_normwise():
    torch = pytest.importorskip("torch")
    from archdsl.passes.pipeline import relative_error
    ref = torch.tensor([[2.0, -4.0], [1.0, 0.0]], dtype=torch.float64)
    assert relative_error(ref, ref.clone()) == 0.0
    assert relative_error(ref, ref + torch.tensor([[0.0, 0.0], [0.0, 0.4]], dtype=torch.float64)) == 0.1
    assert relative_error(torch.zeros(3), torch.zeros(3)) == 0.0
    assert relative_error(torch.zeros(3), torch.ones(3)) == float("inf")
    assert relative_error(torch.tensor([float("nan"), 1.0]), torch.tensor([0.0, 1.0])) == float("inf")


def test_print_ir_after_takes_a_single_name():
    dumps = []
    run_pipeline(small(), "fold-bn", print_ir_after="fold-bn", emit=dumps.append)
    assert len(dumps) == 1 and dumps[0].startswith("// IR after fold-bn (pass 1 of 1)\ngraph m(")
