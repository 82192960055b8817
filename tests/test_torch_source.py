"""The generated PyTorch source (`--target torch-src`) and the saved module (`--target torch`)."""
import re
import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision

import archdsl
from archdsl import ArchError
from archdsl.backends.torch_source import build_module, generate_source, load_source
from archdsl.cli import main

from zoo import ZOO, load_small, zoo_models  # noqa: E402

TWINS = {"resnet18": {}, "resnet50": {}, "densenet121": {}, "vgg11_bn": {}, "alexnet": {},
         "googlenet": {"aux_logits": False, "init_weights": False}}


def small(path, name):
    """The model at 64x64 where it allows, else at its own size."""
    return load_small(path.name, name)


def example(graph, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *graph.data(graph.inputs[0])["shape"][1:], generator=gen)


@pytest.mark.parametrize("spec,model", zoo_models())
def test_source_module_matches_the_interpreter(spec, model):
    g = small(ZOO / spec, model)
    if g.param_count() > 30_000_000:     # the largest zoo models: names and shapes only, on the meta device
        with torch.device("meta"):
            a = build_module(g, load_weights=False).state_dict()
            b = archdsl.to_torch(g, load_weights=False).state_dict()
        assert [(k, v.shape) for k, v in a.items()] == [(k, v.shape) for k, v in b.items()]
        return
    built = build_module(g).eval()
    ref = archdsl.to_torch(g).eval()
    a, b = built.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)
    x = example(g, batch=1)
    with torch.no_grad():
        assert (built(x) - ref(x)).abs().max().item() <= 1e-6


@pytest.mark.parametrize("model", sorted(TWINS))
def test_torchvision_weights_load_strictly_and_agree(model):
    spec = next(s for s, m in zoo_models(every=True) if m == model)
    g = small(ZOO / spec, model)
    built = build_module(g).eval()
    twin = getattr(torchvision.models, model)(**TWINS[model]).eval()
    built.load_state_dict(twin.state_dict(), strict=True)
    x = example(g)
    with torch.no_grad():
        assert (built(x) - twin(x)).abs().max().item() <= 1e-5


def test_the_same_spec_gives_the_same_bytes():
    first = generate_source(archdsl.load(ZOO / "densenet.arch", "densenet121"))
    second = generate_source(archdsl.load(ZOO / "densenet.arch", "densenet121"))
    assert first == second


def test_resnet50_has_one_class_per_block_definition():
    src = generate_source(archdsl.load(ZOO / "resnet.arch", "resnet50"))
    assert re.findall(r"^class (\w+)\((.*)\):", src, re.M) == [
        ("StridedMaxPool2d", "nn.MaxPool2d"), ("Bottleneck", "nn.Module"), ("Resnet50", "nn.Module")]
    assert "import archdsl" not in src and "from archdsl" not in src
    for line in ["        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)",
                 "        self.bn3 = nn.BatchNorm2d(planes * 4)",
                 "        if downsample:",
                 "            identity = self.downsample(x)",
                 "            Bottleneck(64, 64, 1, downsample=True),",
                 "            *[Bottleneck(1024, 256, 1) for _ in range(5)],",
                 "        self.fc = nn.Linear(2048, num_classes)",
                 "    def __init__(self, num_classes: int = 1000) -> None:"]:
        assert line in src.splitlines(), line


def test_densenet121_rolls_its_dense_blocks_into_loops():
    src = generate_source(archdsl.load(ZOO / "densenet.arch", "densenet121"))
    classes = re.findall(r"^class (\w+)\(", src, re.M)
    assert classes == ["StridedMaxPool2d", "StridedAvgPool2d", "DenseLayer", "DenseBlock", "Transition", "DensenetFeatures", "Densenet121"]
    assert "        for i in range(num_layers):" in src
    assert 'f"denselayer{i + 1}",' in src and "DenseLayer(in_channels + i * growth, growth, bn_size)" in src
    assert "nn.Conv2d(in_channels, growth * bn_size, kernel_size=1, bias=False)" in src
    assert "in_channels, int(in_channels * theta), kernel_size=1, bias=False" in src
    # growth also sets the transitions' widths (256 = 64 + 6 * 32), written as numbers: not an argument
    assert "self.denseblock3 = DenseBlock(256, 24, 32, bn_size)" in src
    assert "    def __init__(self, bn_size: int = 4, num_classes: int = 1000) -> None:" in src


def test_the_source_is_black_formatted():
    black = pytest.importorskip("black")
    for spec, model in [("resnet.arch", "resnet50"), ("densenet.arch", "densenet121"), ("stn.arch", "stn_mnist"),
                        ("googlenet.arch", "googlenet")]:
        src = generate_source(archdsl.load(ZOO / spec, model))
        assert black.format_str(src, mode=black.Mode()) == src


BLOCKED = """
import sys
sys.modules["archdsl"] = None          # `import archdsl` now fails
import torch
"""


def run_isolated(tmp_path, body):
    script = tmp_path / "check.py"
    script.write_text(BLOCKED + textwrap.dedent(body))
    proc = subprocess.run([sys.executable, "-I", str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_the_source_runs_without_archdsl(tmp_path):
    g = archdsl.load(ZOO / "resnet.arch", "resnet18", size=64)
    assert main(["compile", str(ZOO / "resnet.arch"), "--model", "resnet18", "-D", "size=64",
                 "--target", "torch-src", "-o", str(tmp_path / "model.py")]) == 0
    assert (tmp_path / "model.py").read_text() == generate_source(g)
    built = build_module(g).eval()
    x = example(g)
    torch.save({"state": built.state_dict(), "x": x}, tmp_path / "data.pt")
    with torch.no_grad():
        want = built(x)
    out = run_isolated(tmp_path, """
        sys.path[:] = [p for p in sys.path if "work" not in p] + ["."]
        import model
        m = model.Resnet18().eval()
        data = torch.load("data.pt")
        m.load_state_dict(data["state"], strict=True)
        with torch.no_grad():
            torch.save(m(data["x"]), "out.pt")
        print("ok")
    """)
    assert out.strip() == "ok"
    assert (torch.load(tmp_path / "out.pt") - want).abs().max().item() <= 1e-6


def test_saved_module_loads_without_archdsl(tmp_path):
    spec = ZOO / "stn.arch"
    assert main(["compile", str(spec), "--model", "stn_mnist", "--target", "torch", "-o",
                 str(tmp_path / "model.pt2")]) == 0
    g = archdsl.load(spec, "stn_mnist")
    x = example(g, batch=3)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        want = build_module(g).eval()(x)
    run_isolated(tmp_path, """
        m = torch.export.load("model.pt2").module()
        torch.save(m(torch.load("x.pt")), "out.pt")
    """)
    assert (torch.load(tmp_path / "out.pt") - want).abs().max().item() <= 1e-6


STN = """
model warp() {
    input x: [2, 8, 8]
    output x -> stn { loc: [flatten -> linear(16) -> relu -> linear(6)] }
}
"""


def test_stn_starts_at_the_identity_in_both_forms():
    g = archdsl.load(STN)
    x = example(g)
    fresh = getattr(load_source(generate_source(g)), "Warp")()      # spec init only, no IR weights
    assert torch.equal(fresh.loc[3].weight, torch.zeros(6, 16))
    assert torch.equal(fresh.loc[3].bias, torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
    with torch.no_grad():
        for m in (fresh, archdsl.to_torch(g), build_module(g)):
            assert (m(x) - x).abs().max().item() <= 1e-6


SHAPES = """
block unit(c: int, deep: bool = false, extra: bool = false) {
    input x
    h = x -> conv1: conv(c, 3, padding=1) -> relu
    if deep { h = h -> proj: conv(c, 1) }
    if extra { h = h -> conv(c, 3, padding=1) }
    output h
}
model m() {
    input x: [3, 8, 8]
    output x -> a: unit(4) -> b: unit(8, deep=true) -> c: unit(8) -> d: unit(8, extra=true)
}
"""


def test_optional_named_parts_become_flags_and_other_differences_number_the_class():
    g = archdsl.load(SHAPES)
    src = generate_source(g)
    assert re.findall(r"^class (\w+)\(", src, re.M) == ["Unit1", "Unit2", "M"]
    assert "    def __init__(self, in_channels: int, c: int, proj: bool = False) -> None:" in src
    assert "self.b = Unit1(4, 8, proj=True)" in src and "self.d = Unit2(8)" in src
    assert '        self.add_module("2", nn.Conv2d(8, 8, kernel_size=3, padding=1))' in src
    x = example(g)
    with torch.no_grad():
        assert (build_module(g)(x) - archdsl.to_torch(g)(x)).abs().max().item() <= 1e-6


def test_torch_compile_and_export_run_the_generated_module():
    g = archdsl.load(STN)
    m = build_module(g).eval()
    x = example(g)
    with torch.no_grad():
        want = m(x)
        compiled = torch.compile(m, backend="aot_eager", fullgraph=True)     # tracing, no C++ build
        assert (compiled(x) - want).abs().max().item() <= 1e-5
    program = torch.export.export(m, (x,))
    assert (program.module()(x) - want).abs().max().item() <= 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_generated_module_runs_on_cuda():
    g = archdsl.load(ZOO / "resnet.arch", "resnet18", size=64)
    m = build_module(g).eval()
    x = example(g)
    with torch.no_grad():
        want = m(x)
        got = m.cuda()(x.cuda()).cpu()
    assert (got - want).abs().max().item() <= 1e-4


def test_ops_without_a_rule_are_an_error_not_a_traceback():
    g = archdsl.load(STN)
    nid = next(n.id for n in g.nodes() if n.op == "affine_grid")
    g.update(nid, op="no_such_op")
    with pytest.raises(ArchError, match="The PyTorch backend has no rule for op 'no_such_op'."):
        generate_source(g)
