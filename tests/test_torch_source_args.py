"""Constructor arguments of the generated PyTorch source never silently ignore a value.

Every argument the generated model class accepts, given a value other than its default, must build the
module that ``to_torch`` builds from the spec loaded with that value: the same state_dict names and
shapes, and the same outputs on the same weights, in eval and in train mode with the same seed. A model
parameter that decides numbers the generator cannot write as expressions of it is not offered.
"""
import inspect

import pytest
import torch

import archdsl
from archdsl.backends.torch_source import _top_class_name, generate_source, load_source

from zoo import ZOO, forwards_agree

TINY_STAGES = [(8, 1), (16, 1), (24, 2), (32, 1)]      # the ConvNeXt spec with few, narrow blocks

MADE_UP = """
model made(w: int = 8, k: int = 3, p: float = 0.25, n: int = 10, e: int = 2, slope: float = 0.1) {
    input x: [3, 16, 16]
    output x -> c1: conv(w * 2 + 1, k, padding=k // 2) -> leaky_relu(slope)
             -> c2: conv(e * 4, 3, padding=1) -> relu -> c3: conv(8, k)
             -> adaptive_avgpool(1) -> flatten -> dropout(p) -> fc: linear(n)
}
"""


def generated(graph):
    src = generate_source(graph)
    return src, getattr(load_source(src), _top_class_name(src))


def offered(cls) -> dict:
    return {n: p.default for n, p in inspect.signature(cls).parameters.items()}


def agree(cls, kwargs: dict, ref_graph) -> None:
    """``cls(**kwargs)`` and ``to_torch(ref_graph)``: names, shapes, and outputs on the reference's weights."""
    torch.manual_seed(0)
    built, ref = cls(**kwargs), archdsl.to_torch(ref_graph)
    a, b = built.state_dict(), ref.state_dict()
    assert [(k, tuple(v.shape)) for k, v in a.items()] == [(k, tuple(v.shape)) for k, v in b.items()], kwargs
    built.load_state_dict(b, strict=True)
    x = torch.randn(2, *ref_graph.data(ref_graph.inputs[0])["shape"][1:], generator=torch.Generator().manual_seed(1))
    forwards_agree(built, ref, x, tol=1e-5, seed=3, what=kwargs)


def check_every_argument(spec, model, values: dict, **base) -> dict:
    """For each argument the class offers with a value in ``values``: that value builds the spec's module.
    Returns what the class offers."""
    g = archdsl.load(spec, model, **base)
    _, cls = generated(g)
    args = offered(cls)
    for name, value in values.items():
        if name in args:
            agree(cls, {name: value}, archdsl.load(spec, model, **{**base, name: value}))
    return args


def test_convnext_drop_rates_are_never_a_half_applied_argument():
    args = check_every_argument(ZOO / "convnext.arch", "convnext_tiny",
                                {"stochastic_depth_prob": 0.5, "layer_scale": 0.25, "num_classes": 7},
                                stages=TINY_STAGES, size=32)
    assert args["num_classes"] == 1000
    # 17 of the 18 drop rates are drop_rate * k / 17, written as numbers: the rate is no argument
    assert "stochastic_depth_prob" not in args
    src, cls = generated(archdsl.load(ZOO / "convnext.arch", "convnext_tiny"))
    assert offered(cls) == {"num_classes": 1000}
    assert "CnBlock(96, 0.0058823529411764705, (96, 1, 1))," in src
    assert "ConvnextFeatures(3)" in src and "drop_rate" not in src


def test_resnet_num_classes():
    args = check_every_argument(ZOO / "resnet.arch", "resnet18", {"num_classes": 13}, size=32)
    assert args == {"num_classes": 1000}


def test_densenet_offers_only_what_it_can_follow():
    """growth and theta also set the transitions' widths, which the source writes as numbers."""
    args = check_every_argument(ZOO / "densenet.arch", "densenet_bc_100",
                                {"bn_size": 2, "num_classes": 5, "growth": 8, "theta": 0.25})
    assert args == {"bn_size": 4, "num_classes": 10}


def test_made_up_parameters(tmp_path):
    spec = tmp_path / "made.arch"
    spec.write_text(MADE_UP)
    values = {"w": 5, "k": 5, "p": 0.5, "n": 3, "e": 3, "slope": 0.3}
    args = check_every_argument(spec, "made", values)
    # w * 2 + 1 is beyond the generator's expressions; the rest follow their parameters
    assert args == {"k": 3, "p": 0.25, "n": 10, "e": 2, "slope": 0.1}
    src, _ = generated(archdsl.load(spec))
    assert "nn.Conv2d(3, 17, kernel_size=k, padding=k // 2)" in src
    assert "nn.Conv2d(17, e * 4, kernel_size=3, padding=1)" in src and "nn.Linear(8, n)" in src


def test_a_parameter_that_sets_a_flattened_width_is_not_offered(tmp_path):
    spec = tmp_path / "flat.arch"
    spec.write_text("model flat(k: int = 3, n: int = 4) {\n    input x: [2, 8, 8]\n"
                    "    output x -> conv(4, k) -> flatten -> linear(n)\n}\n")
    args = check_every_argument(spec, "flat", {"k": 5, "n": 6})
    assert args == {"n": 4}                        # linear's in_features 4 * (9 - k) ** 2 is a number


def test_a_parameter_that_sets_the_depth_is_not_offered(tmp_path):
    spec = tmp_path / "deep.arch"
    spec.write_text("model deep(d: int = 2) {\n    input x: [4, 8, 8]\n"
                    "    output x -> [conv(4, 3, padding=1) -> relu for i in range(d)] -> conv(d, 1)\n}\n")
    g = archdsl.load(spec)
    src, cls = generated(g)
    assert offered(cls) == {}                      # conv(d, 1) would take it, but d also counts the layers
    assert "nn.Conv2d(4, 2, kernel_size=1)" in src


def test_spec_text_offers_no_model_parameter():
    """Without a file the spec cannot be elaborated again, so nothing vouches for an argument."""
    g = archdsl.loads(MADE_UP) if hasattr(archdsl, "loads") else archdsl.load(MADE_UP)
    _, cls = generated(g)
    assert offered(cls) == {}


def test_the_source_is_the_same_bytes_each_time(tmp_path):
    spec = tmp_path / "made.arch"
    spec.write_text(MADE_UP)
    assert generate_source(archdsl.load(spec)) == generate_source(archdsl.load(spec))


@pytest.mark.parametrize("p", [0.0, 0.9])
def test_dropout_extremes(tmp_path, p):
    spec = tmp_path / "made.arch"
    spec.write_text(MADE_UP)
    agree(generated(archdsl.load(spec))[1], {"p": p}, archdsl.load(spec, p=p))
