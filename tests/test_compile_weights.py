"""Weights given with --weights or changed by --passes reach every target; names never become code."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import archdsl  # noqa: E402
from archdsl.cli import main  # noqa: E402
from archdsl.passes import run_pipeline  # noqa: E402

from zoo import ZOO, randomise_bn  # noqa: E402

SPEC = """
model m() {
    input x: [3, 8, 8]
    output x -> c1: conv(8, 3, padding=1, bias=false) -> b1: bn -> relu -> c2: conv(8, 1) -> b2: bn -> relu
             -> adaptive_avgpool(1) -> flatten -> fc: linear(3)
}
"""


def import_file(path):
    spec = importlib.util.spec_from_file_location(f"gen_{path.stem}_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_ir(graph, x):
    with torch.no_grad():
        return archdsl.to_torch(graph).eval()(x)


def loads_the_pruned_weights(tmp_path):
    """The generated source's ``load_weights`` gives the pruned IR's outputs exactly; returns that IR."""
    gen = import_file(tmp_path / "m.py")
    model = gen.load_weights(gen.M()).eval()
    pruned = run_pipeline(archdsl.load(tmp_path / "m.arch"), "prune{ratio=0.5}").graph
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), run_ir(pruned, x))
    return pruned


def test_torch_src_with_passes_writes_and_loads_the_pruned_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.arch").write_text(SPEC)
    assert main(["compile", "m.arch", "--passes", "prune{ratio=0.5}", "--target", "torch-src", "-o", "m.py"]) == 0
    out = capsys.readouterr().out
    assert "wrote m.pt (the weights; load them with load_weights() from m.py)" in out
    loads_the_pruned_weights(tmp_path)
    assert "Its weights are in ``m.pt`` beside this file" in (tmp_path / "m.py").read_text()


def test_torch_src_with_weights_carries_them(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.arch").write_text(SPEC)
    g = archdsl.load(tmp_path / "m.arch")
    randomise_bn(g, seed=1)
    torch.save({k: torch.from_numpy(np.array(p.value)) for k, p in g.params.items()}, tmp_path / "w.pt")
    assert main(["compile", "m.arch", "--weights", "w.pt", "--passes", "fold-bn", "--target", "torch-src",
                 "-o", "folded.py"]) == 0
    gen = import_file(tmp_path / "folded.py")
    model = gen.load_weights(gen.M()).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), run_ir(g, x), atol=1e-5)


def test_torch_src_without_weights_writes_only_the_source(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.arch").write_text(SPEC)
    assert main(["compile", "m.arch", "--target", "torch-src", "-o", "m.py"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.arch", "m.py"]
    assert "load_weights" not in (tmp_path / "m.py").read_text()


def test_a_file_name_cannot_break_out_of_the_docstring(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = 'x""";__import__("os").system("touch pwned");"""\\x.arch'
    (tmp_path / name).write_text(SPEC)
    assert main(["compile", name, "--target", "torch-src", "-o", "m.py"]) == 0
    text = (tmp_path / "m.py").read_text()
    compile(text, "m.py", "exec")              # still valid Python
    import_file(tmp_path / "m.py")
    assert not (tmp_path / "pwned").exists()
    assert '"""' not in text.split("\n")[0][3:]


def test_pruned_resnet_through_torch_export(tmp_path, capsys):
    out = tmp_path / "r.pt2"
    assert main(["compile", str(ZOO / "resnet.arch"), "--model", "resnet18", "-D", "size=32", "--passes",
                 "prune{ratio=0.5}", "--target", "torch", "-o", str(out)]) == 0
    program = torch.export.load(out)
    pruned = run_pipeline(archdsl.load(ZOO / "resnet.arch", "resnet18", size=32), "prune{ratio=0.5}").graph
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), run_ir(pruned, x), atol=1e-5)


def test_torch_src_weights_as_safetensors_load_without_a_pickle(tmp_path, capsys, monkeypatch):
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.arch").write_text(SPEC)
    argv = ["compile", "m.arch", "--passes", "prune{ratio=0.5}", "--target", "torch-src", "-o", "m.py",
            "--weights-format", "safetensors"]
    assert main(argv) == 0
    assert "wrote m.safetensors (the weights; load them with load_weights() from m.py)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.arch", "m.py", "m.safetensors"]
    first = (tmp_path / "m.safetensors").read_bytes()
    assert main(argv) == 0                                  # the same spec, the same bytes
    assert (tmp_path / "m.safetensors").read_bytes() == first
    pruned = loads_the_pruned_weights(tmp_path)
    state = load_file(tmp_path / "m.safetensors")
    assert sorted(state) == sorted(pruned.params) and state["c1.weight"].shape == (4, 3, 3, 3)
    assert "Its weights are in ``m.safetensors`` beside this file" in (tmp_path / "m.py").read_text()


def test_a_pruned_spec_with_safetensors_weights_loads_them_strictly(tmp_path, capsys, monkeypatch):
    pytest.importorskip("safetensors")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.arch").write_text(SPEC)
    assert main(["opt", "m.arch", "--passes", "prune{ratio=0.5}", "--emit", "arch", "-o", "p.arch", "-q",
                 "--weights-format", "safetensors"]) == 0
    assert "wrote p.safetensors (the weights, by the spec's names: load them with --weights p.safetensors)" \
        in capsys.readouterr().out
    assert main(["compile", "p.arch", "--weights", "p.safetensors", "--target", "onnx", "-o", "p.onnx"]) == 0
    reloaded = archdsl.load(tmp_path / "p.arch")
    from archdsl.backends.weights import load_weights
    load_weights(reloaded, tmp_path / "p.safetensors")
    pruned = run_pipeline(archdsl.load(tmp_path / "m.arch"), "prune{ratio=0.5}").graph
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(run_ir(reloaded, x), run_ir(pruned, x))


@pytest.mark.parametrize("argv, where", [
    (["compile", "m.arch", "--target", "onnx", "-o", "m.onnx", "--passes", "dce"],
     "a torch-src file or an .arch spec (written with --weights or --passes)"),
    (["compile", "m.arch", "--target", "torch-src", "-o", "m.py"],
     "a torch-src file or an .arch spec (written with --weights or --passes)"),
    (["opt", "m.arch", "--passes", "dce", "-o", "g.json"], "the spec of --emit arch -o OUT.arch"),
])
def test_a_weights_format_with_no_weights_file_to_write_is_refused(tmp_path, capsys, monkeypatch, argv, where):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.arch").write_text(SPEC)
    assert main(argv + ["--weights-format", "safetensors"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: --weights-format chooses how the weights beside {where} are stored, but this command writes no "
        "weights file; leave the option out.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.arch"]
