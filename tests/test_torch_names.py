"""Names in the PyTorch backends: constructor arguments used in ``forward``, labels that are not Python
identifiers or are nn.Module attribute names, non-ASCII labels, and how generated source is loaded."""
import re

import pytest
import torch

import archdsl
from archdsl.backends.torch_source import build_module, generate_source, load_source

from zoo import forwards_agree


def example(graph, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *graph.data(graph.inputs[0])["shape"][1:], generator=gen)


# ---- numbers that vary across instances, or come from the model's parameters, used in forward

SHUFFLE = """
import std.layers

block shuffle_unit(c: int, g: int) {
    input x
    half = c // 2
    keep = x -> slice(0, half)
    work = x -> slice(half, c) -> branch2: [conv(half, 1, bias=false) -> bn -> relu]
    output (keep, work) -> concat -> channel_shuffle(g)
}

block half_of() {
    input x
    output x -> slice(0, channels(x) // 2)
}

block window(a: int, b: int) {
    input x
    output x -> slice(a, b)
}

model shuffle_like() {
    input x: [8, 6, 6]
    output x -> s1: shuffle_unit(8, 2) -> s2: shuffle_unit(8, 4) -> conv(12, 1) -> shuffle_unit(12, 3)
             -> h1: half_of -> conv(10, 1) -> h2: half_of -> w1: window(0, 4) -> w2: window(1, 3)
}
"""

ARGS = """
model args(f: float = 0.5, s: float = 0.2, k: int = 2, d: int = 1, a: int = 1, b: int = 3, t: int = 2) {
    input x: [4, 8, 8]
    output x -> dropout(f) -> leaky_relu(s) -> maxpool(k) -> softmax(d) -> slice(a, b) -> transpose(t, 3)
}
"""


def agree(g, batch=2, train=False):
    built, ref = build_module(g), archdsl.to_torch(g)
    assert list(built.state_dict()) == list(ref.state_dict())
    forwards_agree(built, ref, example(g, batch), tol=1e-6, seed=1, modes=(train,))
    return built


def test_instance_numbers_used_in_forward_are_stored_by_the_constructor():
    g = archdsl.load(SHUFFLE)
    src = generate_source(g)
    built = agree(g)
    assert "        self.shape = shape" in src.splitlines() or re.search(r"^        self\.\w+ = \w+$", src, re.M)
    assert built.s1.__class__ is built.s2.__class__            # one class: the groups are an argument
    agree(g, train=True)


def test_model_parameters_used_in_forward_are_stored_by_the_constructor(tmp_path):
    spec = tmp_path / "args.arch"                  # a file: the generator reads which argument each layer names
    spec.write_text(ARGS)
    g = archdsl.load(spec)
    src = generate_source(g)
    for name in "fskdabt":
        assert f"        self.{name} = {name}" in src.splitlines(), name
    agree(g)
    agree(g, train=True)                                    # dropout(f) draws the same mask
    module = load_source(src)
    for change in [dict(s=0.3), dict(k=4), dict(a=0, b=2), dict(d=2), dict(t=1), dict(f=0.25)]:
        m, ref = module.Args(**change), archdsl.to_torch(archdsl.load(spec, **change))
        forwards_agree(m, ref, example(g), tol=1e-6, seed=2, what=change)


# ---- labels that are not Python identifiers, or are nn.Module members

LABELLED = """
block unit(c: int, proj: bool = false) {
    input x
    h = x -> p0: conv(c, 3, padding=1, bias=false) -> p1: bn -> relu
    if proj { h = h -> p2: conv(c, 1) }
    output h
}

block chain(c: int) {
    input x
    output x -> p3: conv(c, 1) -> p4: bn -> p5: relu
}

model m() {
    input x: [3, 8, 8]
    output x -> p6: conv(8, 3, padding=1, weight_init="kaiming_normal") -> p7: unit(8) -> p8: unit(8, proj=true)
             -> p9: [p10: conv(8, 1) -> p11: bn -> p12: [p13: conv(8, 1, weight_init="xavier_uniform") -> p14: relu]]
             -> p15: chain(8) -> p16: relu -> flatten -> p17: linear(10)
}
"""

NN_NAMES = ["train", "training", "to", "state_dict", "forward", "eval", "cuda", "parameters", "float", "half",
            "type", "apply", "_modules", "training", "append", "pop", "_parameters", "add_module"]
KEYWORDS = ["if", "in", "import", "def", "return", "lambda", "None", "for", "class", "block", "True", "is",
            "while", "not", "yield", "from", "with", "del"]
BUILTINS = ["block1-0", "int", "print", "self", "super", "range", "trunk_output", "block1-1", "getattr", "F",
            "nn", "torch", "x", "Tensor", "OrderedDict", "block1_0", "object", "isinstance"]
ODD = ["\ufb01", "fi", "p-1", "train_", "a\"b", "train", "\u00e9", "\U0001d431", "x", "spec_names", "rename_keys",
       "c\\d", "partial", "\u2028", "i", "training_", "training", "self"]
LABELS = {"nn members": NN_NAMES, "keywords": KEYWORDS, "builtins and dashes": BUILTINS, "odd": ODD}


def relabel(graph, names: dict):
    """The graph with each scope component ``p<k>`` renamed ``names[p<k>]`` (parameters too)."""
    def path(p):
        return ".".join(names.get(part, part) for part in p.split(".")) if p else p
    for nid in graph.node_ids():
        d = graph.data(nid)
        graph.update(nid, scope=path(d["scope"]), params={k: path(v) for k, v in d["params"].items()})
    graph.params = {path(k): p for k, p in graph.params.items()}
    for p in graph.params.values():
        p.name = path(p.name)
    graph.scopes = {path(k): v for k, v in graph.scopes.items()}
    return graph


def labelled(kind):
    return relabel(archdsl.load(LABELLED), {f"p{k}": name for k, name in enumerate(LABELS[kind])})


@pytest.mark.parametrize("kind", sorted(LABELS))
def test_any_label_keeps_its_state_dict_key_in_both_backends(kind):
    g = labelled(kind)
    src = generate_source(g)
    assert src.isascii()
    compile(src, "<generated>", "exec")
    built, ref = build_module(g), archdsl.to_torch(g)
    keys = list(ref.state_dict())
    assert list(built.state_dict()) == keys
    assert set(keys) == set(g.params)
    forwards_agree(built, ref, example(g))
    fresh = getattr(load_source(src), "M")()                # the spec's own initialisation, no IR weights
    fresh.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(built.state_dict(), strict=True)
    forwards_agree(fresh, ref, example(g, seed=1))


def test_labels_that_are_module_members_leave_the_members_alone():
    g = labelled("nn members")
    for m in (build_module(g), archdsl.to_torch(g)):
        assert callable(m.train) and callable(m.to) and callable(m.state_dict) and callable(m.forward)
        m.eval()
        assert m.training is False
        assert m.float() is m and m.half().float() is m
        keys = m.state_dict()
        assert "parameters.train.weight" in keys and "parameters.training.running_mean" in keys
        assert "half._modules.training.weight" in keys and "float.to.bias" in keys
    src = generate_source(g).splitlines()
    assert "        self.train_ = nn.Conv2d(in_channels, 8, kernel_size=3, padding=1, bias=False)" in src
    assert '        spec_names(self, {"train_": "train", "training_": "training", "to_": "to"})' in src
    assert '                "half_._modules_.training_": "half._modules.training",' in src


def test_a_module_with_member_labels_exports():
    from archdsl.backends.torch_save import example_inputs, export_program
    g = labelled("nn members")
    program = export_program(g)
    x = example_inputs(g)[0]
    with torch.no_grad():
        assert (program.module()(x) - archdsl.to_torch(g).eval()(x)).abs().max().item() <= 1e-5


def test_names_that_python_reads_as_one_stay_apart():
    g = labelled("odd")                                     # "\ufb01" is "fi" after NFKC, as Python reads names
    src = generate_source(g)
    assert '"\\ufb01"' in src and "\ufb01" not in src
    built = build_module(g)
    unit = built._modules["\U0001d431"]
    assert {"\ufb01", "fi"} <= set(unit._modules) and unit._modules["\ufb01"] is not unit._modules["fi"]


# ---- loading generated source

PLAIN = """
model tiny() {
    input x: [3, 8, 8]
    output x -> conv(4, 3, padding=1) -> relu -> flatten -> linear(5)
}
"""


def test_a_planted_bytecode_cache_is_never_executed(tmp_path, monkeypatch):
    """Issue 15: generated source was imported from a predictable folder in the temp directory, so a
    ``.pyc`` planted in its ``__pycache__`` ran. Loading now writes and reads no file at all."""
    import hashlib
    import importlib._bootstrap_external as bootstrap
    import importlib.util
    import sys
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    g = archdsl.load(PLAIN)
    text = generate_source(g)
    name = f"archdsl_generated_{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    folder = tmp_path / "archdsl_torch_source"
    folder.mkdir()
    source = folder / f"{name}.py"
    source.write_text(text)
    marker = tmp_path / "planted-code-ran"
    evil = compile(f"open({str(marker)!r}, 'w').close()\n" + text, str(source), "exec")
    cache = importlib.util.cache_from_source(str(source))
    (folder / "__pycache__").mkdir()
    with open(cache, "wb") as f:
        f.write(bootstrap._code_to_hash_pyc(evil, importlib.util.source_hash(text.encode()), checked=False))
    before = sorted(tmp_path.rglob("*"))
    monkeypatch.delitem(sys.modules, name, raising=False)
    for load in (lambda: load_source(text), lambda: build_module(g)):
        model = load()
        assert not marker.exists()
    assert sorted(tmp_path.rglob("*")) == before           # nothing written either
    x = example(g)
    with torch.no_grad():
        assert (model(x) - archdsl.to_torch(g)(x)).abs().max().item() <= 1e-6


def test_generated_classes_have_their_source_for_tracebacks():
    import inspect
    import linecache
    g = archdsl.load(PLAIN)
    module = load_source(generate_source(g))
    assert "class Tiny(nn.Module):" in inspect.getsource(module.Tiny)
    assert linecache.getline(module.__file__, 1).startswith('"""PyTorch model ``tiny``')
