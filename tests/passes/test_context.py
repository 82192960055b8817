"""The pass context: data, seed, per-pass expected errors and metrics for --verify, structured reports."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import archdsl
from archdsl import ArchError
from archdsl.passes import PASSES, Pass, run_pipeline
from archdsl.passes.context import PassContext, load_data

SPEC = """
model m() {
    input x: [3, 8, 8]
    output x -> c: conv(4, 3, padding=1) -> relu -> d: dropout(0.5) -> flatten -> fc: linear(3)
}
"""


def small():
    return archdsl.load(SPEC)


@dataclass
class Scale(Pass):
    """Scales the first conv's weight: lossy, and says how lossy."""
    name = "scale"
    factor: float = 1.01
    bound: float | None = None

    def expected_error(self):
        return self.bound or 0.0

    def rewrite(self, graph, report, ctx):
        conv = next(n for n in graph.nodes() if n.op == "conv")
        conv.param("weight").value = conv.param("weight").value * self.factor
        report.touched(conv.id)
        report.layer(conv.scope, factor=self.factor, seed=ctx.seed)
        return True


@dataclass
class CosineScale(Scale):
    """Scales by a positive factor: the direction of the output hardly moves."""
    name = "cosine-scale"
    verify_metric = "cosine"


@pytest.fixture
def extra(monkeypatch):
    monkeypatch.setitem(PASSES, "scale", Scale)
    monkeypatch.setitem(PASSES, "cosine-scale", CosineScale)


def test_optional_options_take_none(extra):
    (p,) = run_pipeline(small(), "scale{bound=none}").results[0:1]
    assert p.report.modified
    from archdsl.passes.pipeline import parse_pipeline
    assert parse_pipeline("scale{bound=none}")[0].bound is None
    assert parse_pipeline("scale{bound=0.5}")[0].bound == 0.5


def test_a_lossy_pass_is_held_to_its_own_expected_error(extra):
    run_pipeline(small(), "scale{factor=1.01,bound=0.05}", verify=True)
    with pytest.raises(ArchError) as info:
        run_pipeline(small(), "scale{factor=1.5,bound=0.05}", verify=True)
    assert info.value.message.startswith("Pass 'scale{factor=1.5,bound=0.05}' changed the model's output 1: the "
                                         "relative difference is ")
    assert "above the tolerance 0.05 (--verify ran a random input of batch 2" in info.value.message
    with pytest.raises(ArchError, match="above the tolerance 0.0001"):   # --tolerance overrides every pass
        run_pipeline(small(), "scale{factor=1.01,bound=0.05}", verify=True, tolerance=1e-4)


def test_each_pass_is_compared_with_its_own_input(extra):
    # the lossy pass moves the outputs by ~1%; the exact passes after it are still held to 1e-4 against
    # the lossy pass's result, not against the original
    run_pipeline(small(), "scale{factor=1.01,bound=0.05},drop-inference-noops,dce", verify=True)
    with pytest.raises(ArchError) as info:
        run_pipeline(small(), "scale{factor=1.01,bound=0.05},scale{factor=1.01}", verify=True)
    assert info.value.message.startswith("Pass 'scale' changed the model's output 1")


def test_the_cosine_metric(extra):
    # tripling the first conv's weights moves the outputs by far more than 5% but turns them little
    run_pipeline(small(), "cosine-scale{factor=3.0,bound=0.05}", verify=True)
    with pytest.raises(ArchError, match="the relative difference is"):
        run_pipeline(small(), "scale{factor=3.0,bound=0.05}", verify=True)
    with pytest.raises(ArchError) as info:
        run_pipeline(small(), "cosine-scale{factor=-1.0,bound=0.05}", verify=True)
    assert "1 - cosine similarity is" in info.value.message


def test_verify_runs_on_the_context_data(extra):
    x = np.random.default_rng(1).standard_normal((5, 3, 8, 8), dtype=np.float32)
    ctx = PassContext(data={"x": x}, verify=True)
    with pytest.raises(ArchError) as info:
        run_pipeline(small(), "scale{factor=2.0}", ctx=ctx)
    assert "(--verify ran the first 2 samples of the data before and after the pass)" in info.value.message


def test_batches_and_rng_are_deterministic():
    x = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    ctx = PassContext(data={"x": x, "y": np.arange(10)}, seed=3)
    sizes = [len(b.x[0]) for b in ctx.batches(4)]
    assert sizes == [4, 4, 2]
    assert [len(b.y) for b in ctx.batches(4, limit=6)] == [4, 2]
    assert np.array_equal(ctx.rng("a").random(3), PassContext(seed=3).rng("a").random(3))
    assert not np.array_equal(ctx.rng("a").random(3), ctx.rng("b").random(3))
    with pytest.raises(ArchError, match="Pass 'q' needs data for calibration; give it with --data FILE.npz"):
        PassContext().require_data("q", "calibration")


def test_per_layer_details_are_in_the_summary_and_the_json(extra):
    result = run_pipeline(small(), "scale{factor=2.0}", ctx=PassContext(seed=7))
    report = result.reports[0]
    assert report.layers == [{"layer": "c", "factor": 2.0, "seed": 7}]
    assert report.to_json()["layers"] == [{"layer": "c", "factor": 2.0, "seed": 7}]
    assert report.summary().splitlines()[1] == "  @c: factor=2, seed=7"


def test_only_the_final_graph_is_kept():
    result = run_pipeline(small(), "drop-inference-noops,dce")
    assert result.results[0].graph is None and result.results[1].graph is result.graph
    kept = run_pipeline(small(), "drop-inference-noops,dce", keep_graphs=True)
    assert kept.results[0].graph is not None


# ---- --data files -------------------------------------------------------------------------------

def test_data_files_and_their_errors(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((3, 3, 8, 8), np.float64), y=np.array([0, 1, 2]))
    data = load_data(good)
    assert data["x"].dtype == np.float32 and data["y"].dtype == np.int64
    cases = {
        "missing.npz": None,
        "nox.npz": dict(a=np.zeros(3)),
        "rank.npz": dict(x=np.zeros(3)),
        "labels.npz": dict(x=np.zeros((3, 2)), y=np.zeros(2, np.int64)),
        "text.npz": "not a zip",
        "nan.npz": dict(x=np.array([[0.0, np.nan], [np.inf, 1.0]])),
        "complex.npz": dict(x=np.zeros((2, 2), np.complex64)),
        "member.npz": b"zip",
        "x.npy": np.zeros((2, 3)),
        "folder.npz": "dir",
    }
    messages = {}
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, dict):
            np.savez(path, **content)
        elif isinstance(content, str) and content == "dir":
            path.mkdir()
        elif isinstance(content, str):
            path.write_text(content)
        elif isinstance(content, bytes):
            import zipfile
            with zipfile.ZipFile(path, "w") as z:          # a member that is not an .npy array
                z.writestr("x.npy", b"garbage")
        elif isinstance(content, np.ndarray):
            np.save(path, content)
        with pytest.raises(ArchError) as info:
            load_data(path)
        messages[name] = str(info.value).replace(str(tmp_path) + "/", "")
    takes = "--data takes an .npz file with an array 'x' of inputs, batch first, and optionally 'y' of labels."
    assert messages["missing.npz"] == f"missing.npz: error: Cannot read the --data file: there is no such file; {takes}"
    assert messages["nox.npz"] == "nox.npz: error: The --data file has no array 'x'; it holds a."
    assert messages["rank.npz"] == ("rank.npz: error: The data's 'x' must hold samples with the batch first, but it "
                                    "has shape (3,).")
    assert messages["labels.npz"] == ("labels.npz: error: The data's 'y' must hold one integer label per sample of "
                                      "'x' (3), but it has shape (2,) and dtype int64.")
    assert messages["text.npz"] == ("text.npz: error: Cannot read the --data file as an .npz archive: it is not a "
                                    "NumPy array file, and reading it as one would mean unpickling it, which "
                                    "archdsl never does; write it with numpy.savez.")
    assert messages["nan.npz"] == "nan.npz: error: The array 'x' holds 2 NaN or infinite values; clean the data first."
    assert messages["complex.npz"] == ("complex.npz: error: The array 'x' must hold real numbers, but its dtype is "
                                       "complex64.")
    assert messages["member.npz"] == ("member.npz: error: Cannot read the --data file: its member 'x' is not a NumPy "
                                      "array (.npy); write the file with numpy.savez.")
    assert messages["x.npy"] == ("x.npy: error: Cannot read the --data file: only .npz archives are read here "
                                 f"(numpy.savez writes them); {takes}")
    assert messages["folder.npz"] == f"folder.npz: error: Cannot read the --data file: this is a directory; {takes}"


def test_opt_takes_data_and_verifies_on_it(tmp_path, capsys, monkeypatch):
    from archdsl.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.arch").write_text(SPEC)
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3, 8, 8), np.float32))
    assert main(["opt", "m.arch", "--passes", "drop-inference-noops", "--data", "d.npz", "--verify", "-q",
                 "--emit", "report"]) == 0
    assert '"pass": "drop-inference-noops"' in capsys.readouterr().out
    assert main(["opt", "m.arch", "--passes", "dce", "--data", "nope.npz"]) == 1
    assert capsys.readouterr().err.strip() == ("nope.npz: error: Cannot read the --data file: there is no such file; "
                                               "--data takes an .npz file with an array 'x' of inputs, batch "
                                               "first, and optionally 'y' of labels.")
