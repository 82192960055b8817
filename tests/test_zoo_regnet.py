"""zoo_specs/regnet.arch against torchvision's RegNet and the paper's design rule.

* the spec's `def` functions (float64 arithmetic of the language) give, for every
  torchvision size, exactly the stage widths, depths and group widths of
  torchvision's BlockParams.from_init_params (float32 torch arithmetic), read from
  the arguments torchvision's own constructors pass it;
* the one exact rounding tie among them (regnet_x_1_6gf) rounds half to even, and
  every other rounding is far enough from a tie for float32 to agree;
* every model has torchvision's published parameter count and GMACs (meta["_ops"])
  at each weight entry's evaluation size;
* the structure of the design space: four stages, each halving the resolution, the
  widths non-decreasing, the SE path only in RegNetY, squeezing to a quarter of the
  block's input width.
Names, shapes and numerics against torchvision models are tests/test_zoo.py's.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.models import regnet as tv_regnet  # noqa: E402

import archdsl  # noqa: E402
from archdsl.ir.stats import totals  # noqa: E402

SPEC = Path(__file__).resolve().parent.parent / "zoo_specs" / "regnet.arch"
NAMES = sorted(n for n in torchvision.models.list_models(module=torchvision.models) if n.startswith("regnet_"))
SMALL = {"regnet_x_400mf", "regnet_x_800mf", "regnet_y_400mf", "regnet_y_800mf"}


def test_every_torchvision_regnet_is_in_the_spec():
    assert len(NAMES) == 15
    assert set(NAMES) <= {m.name for m in archdsl.list_models(SPEC)}


def _init_params(name: str) -> dict:
    """The keyword arguments torchvision's constructor `name` gives BlockParams.from_init_params."""
    class Seen(Exception):
        pass

    def spy(**kwargs):
        raise Seen(kwargs)          # stop before any layer is built

    original = tv_regnet.BlockParams.from_init_params
    tv_regnet.BlockParams.from_init_params = spy
    try:
        torchvision.models.get_model(name, weights=None)
    except Seen as seen:
        return seen.args[0]
    finally:
        tv_regnet.BlockParams.from_init_params = original
    raise AssertionError(f"{name} does not call BlockParams.from_init_params")


INIT = {name: _init_params(name) for name in NAMES}


def _constant(name: str) -> str:
    return name.removeprefix("regnet_").upper()


def _check(expression: str, expected) -> None:
    """Assert in a spec importing regnet.arch that `expression` equals `expected` (a Python value)."""
    literal = repr(expected).replace("None", "none").replace("True", "true").replace("False", "false")
    text = (f'import "{SPEC.as_posix()}" as r\n'
            "model probe() {\n    input x: [1]\n"
            f"    assert {expression} == {literal}, \"{expression} differs\"\n"
            "    output x\n}\n")
    archdsl.load(text)


@pytest.mark.parametrize("name", NAMES)
def test_table_row_is_torchvisions(name):
    k = INIT[name]
    row = (k["depth"], k["w_0"], k["w_a"], k["w_m"], k["group_width"], k.get("bottleneck_multiplier", 1.0),
           k.get("se_ratio"))
    _check(f"r.{_constant(name)}", row)


@pytest.mark.parametrize("name", NAMES)
def test_stage_params_equal_blockparams(name):
    """The spec's float64 width rule against torchvision's float32 one, size by size."""
    k = INIT[name]
    bp = tv_regnet.BlockParams.from_init_params(**k)
    expected = [list(s) for s in zip(bp.widths, bp.depths, bp.group_widths)]
    assert bp.strides == [2, 2, 2, 2] and len(expected) == 4
    d = f"r.{_constant(name)}"
    got = f"[list(s) for s in r.stage_params({d}[0], {d}[1], {d}[2], {d}[3], {d}[4], {d}[5])]"
    _check(got, expected)


def _rounding_margins(k: dict) -> list[tuple[str, float, float]]:
    """(what, value, distance of its fraction from 0.5) for every rounding of the width rule, in float64."""
    out = []
    caps = set()
    for j in range(k["depth"]):
        c = math.log((k["w_a"] * j + k["w_0"]) / k["w_0"]) / math.log(k["w_m"])
        out.append((f"capacity {j}", c, abs(c % 1 - 0.5)))
        caps.add(round(c))
    for s in sorted(caps):
        q = k["w_0"] * k["w_m"] ** s / 8
        out.append((f"width at s={s}", q, abs(q % 1 - 0.5)))
    return out


def test_only_one_exact_tie_and_it_rounds_to_even():
    """float32 and float64 can only disagree near a tie x.5; the rule's values are either
    at least 1e-3 from one (float32's relative error is 6e-8) or an exact tie, which both
    precisions represent exactly and round half to even."""
    ties = []
    for name in NAMES:
        for what, value, margin in _rounding_margins(INIT[name]):
            if margin == 0:
                assert torch.tensor(value, dtype=torch.float32).item() == value
                ties.append((name, what, value))
            else:
                assert margin > 1e-3, (name, what, value)
    assert ties == [("regnet_x_1_6gf", "width at s=1", 22.5)]
    # 22.5 -> 22 (half to even): 176, adjusted to a multiple of the group width 24: 168.
    _check("r.block_widths(18, 80, 34.01, 2.25)[2]", 176)
    _check("[s[0] for s in r.stage_params(18, 80, 34.01, 2.25, 24, 1.0)]", [72, 168, 408, 912])
    _check("r.make_divisible(176, 24)", 168)


def test_make_divisible_is_torchvisions():
    from torchvision.models._utils import _make_divisible
    cases = [(176, 24), (392, 16), (30, 8), (7, 8), (100, 3), (10.4, 4)]
    _check("[" + ", ".join(f"r.make_divisible({v}, {d})" for v, d in cases) + "]",
           [_make_divisible(v, d) for v, d in cases])


def _graph(name: str, size: int = 224):
    return archdsl.load(SPEC, name, size=size)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_and_macs_are_torchvisions(name):
    """Every weight entry's published count and GMACs (meta["_ops"], conv and linear multiply-
    accumulates, rounded to 3 places) at its evaluation crop: 224, or 384 for the SWAG weights."""
    entries = list(torchvision.models.get_model_weights(name))
    by_size = {}
    for w in entries:
        by_size.setdefault(w.transforms.keywords["crop_size"], []).append(w.meta)
    for size, metas in sorted(by_size.items()):
        t = totals(_graph(name, size))
        for meta in metas:
            assert t["params"] == meta["num_params"]
            assert t["macs"] / 1e9 == pytest.approx(meta["_ops"], abs=0.0015), size


def _by_scope(g) -> dict:
    return {n.scope: n for n in g.nodes() if n.scope}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_design_space_structure(name):
    g = _graph(name)
    nodes = _by_scope(g)
    bp = tv_regnet.BlockParams.from_init_params(**INIT[name])
    size = 112                     # after the stem
    prev = 32
    for i, (w, d, gw) in enumerate(zip(bp.widths, bp.depths, bp.group_widths), 1):
        size //= 2
        for j in range(d):
            block = f"trunk_output.block{i}.block{i}-{j}"
            b = nodes[f"{block}.f.b.0"]
            assert b.attrs["groups"] == w // gw
            assert b.attrs["stride"] == ((2, 2) if j == 0 else (1, 1))
            assert nodes[f"{block}.f.c.0"].shape == ("N", w, size, size)
            has_proj = f"{block}.proj.0" in nodes
            assert has_proj == (j == 0)        # every stage changes width and stride in its first block
            se = f"{block}.f.se.fc1" in nodes
            assert se == name.startswith("regnet_y_")
            if se:
                assert nodes[f"{block}.f.se.fc1"].attrs["out_channels"] == (prev if j == 0 else w) // 4
        prev = w
        assert w >= (bp.widths[i - 2] if i > 1 else 32)
    assert size == 7


def test_initialisation_is_torchvisions():
    """torchvision's RegNet loop: conv weights N(0, 2 / fan_out) with fan_out = k * k * out_channels
    (groups ignored, the SE gate's 1x1 convs included), their SE biases left at PyTorch's default
    U(+-1/sqrt(fan_in)), batch norms 1 and 0, the classifier N(0, 0.01^2) with zero bias."""
    g = _graph("regnet_y_400mf", 64)
    nodes = _by_scope(g)

    def value(scope, local):
        return torch.from_numpy(nodes[scope].param(local).value).double()

    for scope in ("stem.0", "trunk_output.block3.block3-0.f.b.0", "trunk_output.block4.block4-5.f.c.0",
                  "trunk_output.block4.block4-0.proj.0", "trunk_output.block4.block4-1.f.se.fc1",
                  "trunk_output.block4.block4-1.f.se.fc2"):
        w = value(scope, "weight")
        fan_out = w.shape[0] * w.shape[2] * w.shape[3]
        assert w.mean().item() == pytest.approx(0, abs=4 * math.sqrt(2 / fan_out / w.numel()))
        assert w.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05), scope
    se = "trunk_output.block4.block4-1.f.se.fc1"
    bias, fan_in = value(se, "bias"), value(se, "weight")[0].numel()
    assert bias.abs().max().item() <= 1 / math.sqrt(fan_in) and bias.abs().max().item() > 0.5 / math.sqrt(fan_in)
    bn = value("trunk_output.block2.block2-0.f.a.1", "weight"), value("trunk_output.block2.block2-0.f.a.1", "bias")
    assert bool((bn[0] == 1).all()) and bool((bn[1] == 0).all())
    fc_w, fc_b = value("fc", "weight"), value("fc", "bias")
    assert fc_w.std().item() == pytest.approx(0.01, rel=0.02) and bool((fc_b == 0).all())
