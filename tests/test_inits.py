"""Initialiser calls (normal, trunc_normal, uniform, constant, kaiming_normal, kaiming_uniform).

The IR's numpy samples are compared with torch.nn.init on the same large tensors: mean, std and
bounds, with tolerances well inside the gap to the nearest wrong formula (a kaiming std off by a
factor sqrt(2), fan_in for fan_out, a trunc_normal bound taken relative to the mean...).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import archdsl
from archdsl import ArchError
from archdsl.ir.inits import Initialiser, make
from archdsl.ir.params import Param
from archdsl.ir.serialize import from_dict, to_dict


def spec(layer: str, shape=(16, 8, 8)) -> str:
    return f"""
model m() {{
    input x: [{", ".join(map(str, shape))}]
    output x -> {layer}
}}
"""


def weight(layer: str, name: str, shape=(16, 8, 8)) -> np.ndarray:
    return archdsl.load(spec(layer, shape)).params[name].value


def torch_sample(fn, shape, **kw) -> np.ndarray:
    torch.manual_seed(0)
    t = torch.empty(shape)
    fn(t, **kw)
    return t.numpy()


def assert_same_distribution(ours: np.ndarray, theirs: np.ndarray, bounded: bool = False) -> None:
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    std = theirs.std()
    assert abs(ours.mean() - theirs.mean()) < 0.02 * std + 1e-12
    assert abs(ours.std() / std - 1) < 0.02
    if bounded:       # uniform and truncated: the same support, reached at both ends
        span = theirs.max() - theirs.min()
        assert abs(ours.min() - theirs.min()) < 0.01 * span and abs(ours.max() - theirs.max()) < 0.01 * span


# ---- distributions against torch.nn.init (conv 256 x 128 x 3 x 3: fan_in 1152, fan_out 2304) -----------

CONV = "c: conv(256, 3, weight_init={})"
CONV_SHAPE = (256, 128, 3, 3)


@pytest.mark.parametrize("call,fn,kw,bounded", [
    ("normal(0.02)", torch.nn.init.normal_, {"std": 0.02}, False),
    ("normal(0.5, mean=-1.0)", torch.nn.init.normal_, {"mean": -1.0, "std": 0.5}, False),
    ("trunc_normal(0.02)", torch.nn.init.trunc_normal_, {"std": 0.02}, False),      # [-2, 2]: no cut at all
    ("trunc_normal(1.0, mean=0.5, a=-0.5, b=1.0)", torch.nn.init.trunc_normal_,
     {"mean": 0.5, "std": 1.0, "a": -0.5, "b": 1.0}, True),
    ("trunc_normal(0.02, a=-0.04, b=0.04)", torch.nn.init.trunc_normal_, {"std": 0.02, "a": -0.04, "b": 0.04}, True),
    ("uniform(-0.3, 0.1)", torch.nn.init.uniform_, {"a": -0.3, "b": 0.1}, True),
    ("kaiming_normal()", torch.nn.init.kaiming_normal_, {"mode": "fan_out", "nonlinearity": "relu"}, False),
    ('kaiming_normal("fan_in", "tanh")', torch.nn.init.kaiming_normal_, {"mode": "fan_in", "nonlinearity": "tanh"},
     False),
    ('kaiming_normal(nonlinearity="linear")', torch.nn.init.kaiming_normal_,
     {"mode": "fan_out", "nonlinearity": "linear"}, False),
    ("kaiming_uniform()", torch.nn.init.kaiming_uniform_, {"mode": "fan_in", "nonlinearity": "relu"}, True),
    ('kaiming_uniform("fan_out", "sigmoid")', torch.nn.init.kaiming_uniform_,
     {"mode": "fan_out", "nonlinearity": "sigmoid"}, True),
    ('kaiming_uniform(nonlinearity="leaky_relu", a=0.2)', torch.nn.init.kaiming_uniform_,
     {"mode": "fan_in", "nonlinearity": "leaky_relu", "a": 0.2}, True),
], ids=lambda v: v if isinstance(v, str) else "")
def test_conv_weights_follow_torch_nn_init(call, fn, kw, bounded):
    ours = weight(CONV.format(call), "c.weight", (128, 8, 8))
    assert_same_distribution(ours, torch_sample(fn, CONV_SHAPE, **kw), bounded)


def test_trunc_normal_bounds_are_absolute_and_hold():
    ours = weight(CONV.format("trunc_normal(0.5, mean=3.0, a=2.5, b=3.2)"), "c.weight", (128, 8, 8))
    assert ours.min() >= 2.5 and ours.max() <= 3.2
    assert ours.min() < 2.51 and ours.max() > 3.19


def test_kaiming_uses_fans_as_pytorch_for_conv_and_linear():
    # conv with groups: fan_in = in/groups * k*k, fan_out = out * k*k (torch's _calculate_fan_in_and_fan_out)
    w = weight('c: conv(64, 3, groups=4, weight_init=kaiming_normal("fan_in", "linear"))', "c.weight", (32, 8, 8))
    assert abs(w.std() - 1 / math.sqrt(8 * 9)) < 0.03 / math.sqrt(8 * 9)
    w = weight('c: conv(64, 3, groups=4, weight_init=kaiming_normal("fan_out", "linear"))', "c.weight", (32, 8, 8))
    assert abs(w.std() - 1 / math.sqrt(64 * 9)) < 0.03 / math.sqrt(64 * 9)
    lin = 'fc: linear(500, weight_init=kaiming_uniform("fan_out"))'
    ours = weight(lin, "fc.weight", (2000,))
    theirs = torch_sample(torch.nn.init.kaiming_uniform_, (500, 2000), mode="fan_out", nonlinearity="relu")
    assert_same_distribution(ours, theirs, bounded=True)


def test_constant_and_bias_initialisers():
    g = archdsl.load(spec("c: conv(8, 3, weight_init=constant(0.25), bias_init=uniform(1.0, 2.0))"))
    assert np.all(g.params["c.weight"].value == np.float32(0.25))
    b = g.params["c.bias"].value
    assert b.min() >= 1.0 and b.max() < 2.0 and b.std() > 0


def test_the_same_spec_gives_the_same_samples():
    one = weight(CONV.format("trunc_normal(0.02)"), "c.weight", (128, 8, 8))
    two = weight(CONV.format("trunc_normal(0.02)"), "c.weight", (128, 8, 8))
    assert np.array_equal(one, two)


def test_a_scale_takes_a_number_or_an_initialiser():
    g = archdsl.load(spec("ls: scale([16, 1, 1], 1e-6)"))
    assert np.all(g.params["ls"].value == np.float32(1e-6)) and g.params["ls"].value.shape == (16, 1, 1)
    assert g.params["ls"].init == make("constant", (1e-6,))
    v = archdsl.load(spec("ls: scale([16, 8, 8], init=normal(0.1))")).params["ls"].value
    assert abs(v.std() - 0.1) < 0.01 and abs(v.mean()) < 0.01
    assert np.all(archdsl.load(spec("ls: scale([16, 1, 1])")).params["ls"].value == 1.0)


# ---- values, texts, JSON ---------------------------------------------------------------------------

def test_spec_text_writes_required_arguments_by_position_and_the_rest_when_not_default():
    assert make("normal", (0.01,)).spec_text == "normal(0.01)"
    assert make("trunc_normal", (0.02,), {"b": 1}).spec_text == "trunc_normal(0.02, b=1.0)"
    assert make("uniform", (-1, 1)).spec_text == "uniform(-1.0, 1.0)"
    assert make("kaiming_normal").spec_text == "kaiming_normal()"
    assert make("kaiming_uniform", ("fan_out",)).spec_text == 'kaiming_uniform(mode="fan_out")'


def test_initialisers_survive_ir_save_and_load():
    g = archdsl.load(spec("c: conv(8, 3, weight_init=trunc_normal(0.02, a=-0.1), bias_init=constant(0.5)) "
                          "-> ls: scale([8, 1, 1], kaiming_uniform())"))
    back = from_dict(to_dict(g))
    assert back.data(back.by_scope("c"))["attrs"]["weight_init"] == make("trunc_normal", (0.02,), {"a": -0.1})
    for name in ("c.weight", "c.bias", "ls"):
        assert back.params[name].init == g.params[name].init
        assert np.array_equal(back.params[name].value, g.params[name].value)


def test_params_draw_from_their_own_generator():
    init = make("normal", (1.0,))
    a = Param("a.weight", (1000,), init, seed=0).value
    b = Param("b.weight", (1000,), init, seed=0).value
    assert not np.array_equal(a, b) and isinstance(init, Initialiser)


# ---- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,message", [
    ("normal(-0.1)", "'normal' needs a standard deviation of at least 0, but std is -0.1."),
    ("trunc_normal(0.0)", "'trunc_normal' needs a positive standard deviation, but std is 0.0."),
    ("trunc_normal(0.02, a=1.0, b=-1.0)", "'trunc_normal' needs a < b (absolute bounds), but a is 1.0 and b is -1.0."),
    ("trunc_normal(1.0, mean=100.0)", "'trunc_normal' bounds [-2.0, 2.0] lie so far from the mean 100.0 (std 1.0) "
                                      "that they hold no probability."),
    ("uniform(1, 1)", "'uniform' needs a < b, but a is 1.0 and b is 1.0."),
    ('kaiming_normal("fan")', "'kaiming_normal' mode must be \"fan_in\" or \"fan_out\", but got \"fan\"."),
    ('kaiming_uniform(nonlinearity="selu")', "'kaiming_uniform' nonlinearity must be one of relu, leaky_relu, "
                                             "linear, sigmoid, tanh, but got \"selu\"."),
    ('normal("wide")', "'normal' needs a number for std, but got the string \"wide\"."),
    ("normal()", "'normal' needs the argument 'std', as in normal(std, mean=0.0)."),
    ("normal(0.1, sd=1)", "'normal' has no argument 'sd'; its arguments are std, mean."),
    ("constant(1, 2)", "'constant' takes at most 1 argument, but 2 were given."),
])
def test_bad_arguments_are_located_errors(call, message):
    text = spec(f"c: conv(8, 3, weight_init={call})")
    with pytest.raises(ArchError) as info:
        archdsl.load(text)
    err = info.value
    assert err.message == message
    line = text.split("\n")[err.span.line - 1]
    assert line[err.span.col - 1:].startswith(call)


def test_an_initialiser_is_a_value_of_the_language():
    g = archdsl.load("""
model m(std: float = 0.05) {
    input x: [4, 8, 8]
    w = trunc_normal(std, a=-2 * std, b=2 * std)
    output x -> c: conv(8, 3, weight_init=w, bias_init=w)
}
""")
    assert g.params["c.weight"].init == make("trunc_normal", (0.05,), {"a": -0.1, "b": 0.1})
    assert np.abs(g.params["c.weight"].value).max() <= 0.1
