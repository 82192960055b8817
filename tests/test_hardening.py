"""Inputs that used to escape as Python exceptions or as silently wrong graphs (issue 15)."""
from __future__ import annotations

import pytest

import archdsl
from archdsl import ArchError
from archdsl.diagnostics import MAX_ECHO

ALEXNET = "zoo_specs/alexnet.arch"


# ---- the Python API with wrong types ----------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(defines=["n=5"]), 'error: load() takes defines as a dict from parameter name to spec text, such as '
                            '{"num_classes": "10"}, not list; for Python values pass keyword arguments: '
                            'load(source, num_classes=10).'),
    (dict(defines={"n": 5}), "error: load() takes defines as a dict from parameter name to spec text, but it holds "
                             "'n': 5; both must be strings, the name an identifier."),
    (dict(model=5), 'error: load() takes the model\'s name as a string (or None for a file\'s only model), not int: '
                    'load(source, "resnet18").'),
    (dict(max_nodes=None), "error: load() takes max_nodes as an int, not None."),
    (dict(max_nodes=0), "error: load() needs max_nodes of at least 1, but got 0."),
    (dict(seed="x"), "error: load() takes seed as an int, not str."),
])
def test_load_says_which_argument_has_the_wrong_type(kwargs, message):
    with pytest.raises(ArchError) as err:
        archdsl.load(ALEXNET, **kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize("fn", [archdsl.load, archdsl.list_models])
def test_a_source_that_is_neither_path_nor_text(fn):
    with pytest.raises(ArchError) as err:
        fn(5)
    assert "takes a path (str or pathlib.Path)" in str(err.value) and str(err.value).endswith("not int.")


def test_model_parameters_of_the_wrong_type_are_located_errors():
    with pytest.raises(ArchError) as err:
        archdsl.load("zoo_specs/resnet.arch", "resnet18", num_classes=[1, 2])
    assert str(err.value).splitlines()[0] == ("<api>:1:1: error: Argument 'num_classes' of model 'resnet' must be "
                                              "an int, but got a list [1, 2].")


# ---- element-wise ops keep the batch in front ---------------------------------------------------------

def test_mul_of_different_ranks_is_refused_instead_of_moving_the_batch():
    src = ("model m() {\n    input x: [3, 12, 12]\n    a = x -> adaptive_avgpool(1)\n    b = x -> reshape([-1])\n"
           "    output (a, b) -> mul\n}\n")
    with pytest.raises(ArchError) as err:
        archdsl.load(src)
    assert str(err.value).splitlines()[0] == (
        "<string>:5:22: error: 'mul' combines tensors element by element, which needs them to have the same "
        "number of dimensions so that their batch dimensions line up, but got shapes (N, 3, 1, 1) and (N, 432); "
        "reshape or flatten one of them first.")


def test_mul_of_one_rank_still_broadcasts():
    src = ("model m() {\n    input x: [3, 12, 12]\n    a = x -> adaptive_avgpool(1)\n"
           "    output (x, a) -> mul\n}\n")
    g = archdsl.load(src)
    assert g.data(g.outputs[0])["shape"] == ("N", 3, 12, 12)


# ---- diagnostics stay short ----------------------------------------------------------------------

def test_a_diagnostic_on_a_megabyte_line_shows_a_window_around_the_caret():
    src = "model m() { input x: [3, 8, 8] output x -> " + "relu -> " * 5_000 + " " * 900_000 + "nosuch }"
    with pytest.raises(ArchError) as err:
        archdsl.load(src)
    text = str(err.value)
    head, line, caret = text.splitlines()
    assert head == "<string>:1:940044: error: Unknown layer 'nosuch'; no op, block or variable has this name."
    assert len(line) < MAX_ECHO + 20 and line.startswith(" 1 | ...    ")
    assert line.index("nosuch") == caret.index("^") and caret.count("^") == len("nosuch")


# ---- pooling windows agree with PyTorch ---------------------------------------------------------------

def test_window_sizes_are_pytorchs_on_a_grid_including_overhanging_ceil_windows():
    torch = pytest.importorskip("torch")
    from archdsl.ir.shape_rules import ShapeError, window_out
    for size in range(1, 10):
        for k in range(1, 6):
            for stride in range(1, 4):
                for pad in range(0, k // 2 + 1):
                    for ceil in (False, True):
                        try:
                            want = torch.nn.functional.max_pool2d(torch.zeros(1, 1, size, size), k, stride, pad,
                                                                  ceil_mode=ceil).shape[-1]
                        except RuntimeError:
                            want = None
                        try:
                            got = window_out("maxpool", size, k, stride, pad, 1, ceil)
                        except ShapeError:
                            got = None
                        assert got == want, (size, k, stride, pad, ceil)


# ---- op arguments that torch or fold-bn would fail on later ------------------------------------------

@pytest.mark.parametrize("layer, message", [
    ("bn(eps=-1)", "'bn' needs eps above 0, but it is -1.0."),
    ("bn(momentum=2.0)", "'bn' needs momentum between 0 and 1, but it is 2.0."),
    ("leaky_relu(1e308)", "'leaky_relu' was given negative_slope=1e+308, which float32 cannot hold; use a finite "
                          "number of magnitude below 3.4e38."),
    ("elu(-1e39)", "'elu' was given alpha=-1e+39, which float32 cannot hold; use a finite number of magnitude "
                   "below 3.4e38."),
])
def test_float_arguments_are_checked_where_they_are_written(layer, message):
    with pytest.raises(ArchError) as err:
        archdsl.load("model m() {\n    input x: [3, 8, 8]\n    output x -> " + layer + "\n}\n")
    assert str(err.value).splitlines()[0] == "<string>:3:17: error: " + message


# ---- numbers on the command line that used to be taken or to crash ------------------------------------

TINY = """model tiny(classes: int = 10) {
    input x: [1, 8, 8]
    output x -> conv1: conv(8, 3, padding=1, bias=false) -> bn1: bn -> relu
             -> adaptive_avgpool(1) -> flatten -> fc: linear(classes)
}
"""


@pytest.mark.parametrize("argv, message", [
    (["train", "--lr", "inf"], "error: --lr must be a positive finite number, but it is inf."),
    (["train", "--momentum", "5"], "error: --momentum must be in [0, 1), but it is 5.0."),
    (["train", "--weight-decay", "nan"], "error: --weight-decay must be a finite number of at least 0, but it is "
                                         "nan."),
    (["train", "--threads", "100000"], "error: --threads must be at most 1024, but it is 100000."),
    (["eval", "--threads", "100000"], "error: --threads must be at most 1024, but it is 100000."),
    (["run", "--threads", "5000"], "error: --threads must be at most 1024, but it is 5000."),
    (["opt", "--passes", "fold-bn", "--verify", "--tolerance", "nan"],
     "error: The tolerance must be a finite number of at least 0, but it is nan."),
    (["opt", "--passes", "lowrank{ratio=0.5,min_gain=nan}"],
     "<passes>:1:28: error: Pass 'lowrank': min_gain must be a number, but it is nan."),
    (["opt", "--passes", "lowrank{ratio=0.5,iters=1000000000}"],
     "<passes>:1:25: error: Pass 'lowrank': iters must be at most 10,000, but it is 1,000,000,000."),
    (["opt", "--passes", "weight-share{iterations=-1}"],
     "<passes>:1:25: error: Pass 'weight-share': iterations must be 1 to 100,000, but it is -1."),
    # options that would change nothing are refused rather than ignored
    (["opt", "--passes", "lowrank{ratio=0.5,cost=macs}"],
     "<passes>:1:24: error: Pass 'lowrank': cost applies to macs=, whose cost model chooses the layers and ranks; "
     "with ratio= it would change nothing, so drop cost or give macs=."),
    (["opt", "--passes", "lowrank{ratio=0.5,method=svd,iters=5}"],
     "<passes>:1:36: error: Pass 'lowrank': iters refines Tucker-2 and CP factors; an SVD is exact for its rank and "
     "has none to refine, so drop iters or choose method=tucker2 or cp."),
    (["opt", "--passes", "prune{ratio=0.5,samples=5}"],
     "<passes>:1:25: error: Pass 'prune': samples sets how much data the taylor and obd criteria read; criterion=l1 "
     "reads none, so drop samples."),
])
def test_out_of_range_numbers_are_refused_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    from archdsl.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.arch").write_text(TINY)
    extra = {"train": ["--data", "digits", "-o", "o.pt"], "eval": ["--data", "digits"], "run": [], "opt": ["-q"]}
    assert main([argv[0], "tiny.arch", *argv[1:], *extra[argv[0]]]) == 1
    assert capsys.readouterr().err.splitlines()[0] == message
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize("command", ["run", "train", "opt", "eval", "compress-report"])
def test_a_seed_numpy_or_torch_cannot_take_is_a_usage_error(capsys, command):
    from archdsl.cli import main
    with pytest.raises(SystemExit) as info:
        main([command, "tiny.arch", "--seed", "-1"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"archc {command}: error: argument --seed: a seed is an "
                                                        "integer from 0 to 2**63 - 1, but it is -1")


@pytest.mark.parametrize("source, fix", [
    ("g.json", "for a saved IR use archdsl.ir.serialize.load_checked('g.json')"),
    ("tiny.arc", "give the path of a .arch file, or spec text"),
])
def test_load_names_a_file_that_is_not_a_spec_instead_of_parsing_its_name(source, fix):
    with pytest.raises(ArchError) as err:
        archdsl.load(source)
    assert str(err.value) == (f"error: load() reads .arch spec files and spec text, and '{source}' is neither: it "
                              f"names a file without the .arch suffix; {fix}.")


def test_a_pass_built_in_python_raises_the_typed_error_and_takes_numpy_numbers():
    import numpy as np
    from archdsl.passes import PASSES
    prune = PASSES["prune"]
    with pytest.raises(ArchError) as err:            # OptionError is an ArchError (and still a ValueError)
        prune(ratio="0.5")
    assert isinstance(err.value, ValueError)
    assert err.value.message == str(err.value) == "ratio must be a number or None, but it is '0.5' (str)."
    p = prune(ratio=np.float32(0.5), round_to=np.int64(2))
    assert (p.ratio, p.round_to) == (0.5, 2) and type(p.round_to) is int and str(p) == "prune{ratio=0.5,round_to=2}"
    with pytest.raises(ArchError, match="round_to must be an integer"):
        prune(ratio=0.5, round_to=np.float64(2.0))


@pytest.mark.parametrize("call, message", [
    (lambda: archdsl.to_torch(5), "to_torch takes a Graph (from archdsl.load), not int; for a spec file, "
                                  "archdsl.to_torch(archdsl.load(path))."),
    (lambda: archdsl.to_torch("m.arch"), "to_torch takes a Graph (from archdsl.load), not str; for a spec file, "
                                         "archdsl.to_torch(archdsl.load(path))."),
    (lambda: archdsl.to_onnx(None), "The ONNX backend takes a Graph (from archdsl.load), not NoneType."),
    (lambda: archdsl.to_onnx(archdsl.load(TINY), opset="20"), "The opset is an integer such as 20, not str."),
])
def test_the_backends_refuse_what_is_not_a_graph(call, message):
    with pytest.raises(ArchError) as err:
        call()
    assert err.value.message == message


@pytest.mark.parametrize("argv, message", [
    (["check", "tiny.arch", "-D", "classes=10", "-D", "classes=11"],
     "error: -D classes is given twice (10 and 11); give each parameter once."),
    (["bench", "tiny.arch", "--passes", "", "--no-progress"],
     'error: The pass pipeline is empty; name at least one pass, such as "fold-bn,dce".'),
])
def test_repeated_or_empty_settings_are_refused_not_ignored(tmp_path, monkeypatch, capsys, argv, message):
    from archdsl.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.arch").write_text(TINY)
    assert main(argv) == 1
    assert capsys.readouterr().err.strip() == message
