"""The model zoo as test parameters: every model of zoo_specs/, and small-input loading."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import archdsl
from archdsl import ArchError

ZOO = Path(__file__).resolve().parent.parent / "zoo_specs"
SMALL = 64            # test resolution for models whose default input is larger
SMALL_SIZES = {"inception_v3.arch": 80}     # families whose smallest valid input is above SMALL

# The model (or models) per family file that run numerics (outputs, gradients, initial weights, the
# backends and the passes). Every model of every file is still loaded, shape-checked and, for
# torchvision twins, compared by parameter names, shapes and counts. Files not listed here (the
# first zoo families, all small) run every model.
REPRESENTATIVES = {
    "resnext.arch": "resnext50_32x4d",
    "wide_resnet.arch": "wide_resnet50_2",
    "mobilenet_v2.arch": "mobilenet_v2",
    "mobilenet_v3.arch": "mobilenet_v3_small",
    "squeezenet.arch": "squeezenet1_1",
    "shufflenet_v2.arch": "shufflenet_v2_x0_5",
    "mnasnet.arch": "mnasnet0_5",
    "efficientnet.arch": "efficientnet_b0",
    "efficientnet_v2.arch": "efficientnet_v2_s",
    "regnet.arch": ("regnet_x_400mf", "regnet_y_400mf"),      # RegNetY adds squeeze-and-excitation
    "inception_v3.arch": "inception_v3",
    "convnext.arch": "convnext_tiny",
}


# The first zoo families run more than one size through the generic tests, but not every size: the
# deeper and wider members repeat the same blocks (and VGG's 100M-weight classifiers make every copy
# slow). tests/test_zoo.py still checks every size's names, shapes and counts.
SAMPLED = {
    "resnet.arch": ("resnet18", "resnet50"),                 # basic and bottleneck units
    "densenet.arch": ("densenet121", "densenet_bc_100"),     # ImageNet and CIFAR DenseNets
    "vgg.arch": ("vgg11", "vgg16_bn"),                       # without and with batch norm
}


def zoo_models(compilable: bool = True, every: bool = False) -> list[tuple[str, str]]:
    """(file name, model name) for the models of every zoo file; by default only those that compile as
    they are (generic models with required parameters are reached through their aliases), and for the
    files of :data:`REPRESENTATIVES` and :data:`SAMPLED` only the models named there unless ``every``."""
    out = []
    for path in sorted(ZOO.glob("*.arch")):
        chosen = SAMPLED.get(path.name) or (representatives(path.name) if path.name in REPRESENTATIVES else None)
        for m in archdsl.list_models(path):
            if compilable and m.required:
                continue
            if not every and chosen is not None and m.name not in chosen:
                continue
            out.append((path.name, m.name))
    return out


def representatives(file: str) -> tuple:
    """The models of a family file that run numerics."""
    chosen = REPRESENTATIVES[file]
    return (chosen,) if isinstance(chosen, str) else tuple(chosen)


def small_size(file) -> int:
    """The test resolution of a zoo file's models."""
    return SMALL_SIZES.get(Path(file).name, SMALL)


def load_small(file, model: str, size: int | None = None):
    """The model at ``size`` x ``size`` (default :func:`small_size`) where it has a ``size`` parameter
    and a larger default input. ``file`` is a zoo file name or a path."""
    path = file if isinstance(file, Path) else ZOO / file
    size = small_size(path) if size is None else size
    g = archdsl.load(path, model)
    if g.data(g.inputs[0])["shape"][-1] > size:
        try:
            g = archdsl.load(path, model, size=size)
        except ArchError:
            pass            # no `size` parameter: keep the default input
    return g


def randomise_bn(g, seed: int = 0, zero_shift: bool = False) -> None:
    """Running statistics and affine parameters far from the defaults (mean 0, var 1, gamma 1, beta 0)."""
    rng = np.random.default_rng(seed)
    for n in g.nodes():
        if n.op != "bn":
            continue
        c = n.shape[1]
        values = {"running_mean": rng.uniform(-0.5, 0.5, c), "running_var": rng.uniform(0.3, 2.5, c),
                  "weight": rng.uniform(0.5, 1.5, c) * rng.choice([-1.0, 1.0], c),
                  "bias": rng.uniform(-0.5, 0.5, c)}
        if zero_shift:
            values["running_mean"][:] = 0.0
            values["bias"][:] = 0.0
        for local, v in values.items():
            if local in n.params:
                n.param(local).value = v.astype(np.float32)


def outputs_with_the_weights_of(g, ref, x, prefix: str = "", seed: int = 1):
    """``(ours, theirs)``: the outputs in inference mode of ``to_torch(g)`` holding the weights of the
    PyTorch module ``ref`` (its state-dict keys under ``prefix``) and of ``ref`` itself, after moving
    ``ref``'s batch-norm statistics and affine parameters far from their defaults."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
                m.weight.normal_(1, 0.2, generator=gen)
                m.bias.normal_(0, 0.2, generator=gen)
    ours = archdsl.to_torch(g, load_weights=False)
    ours.load_state_dict({prefix + k: v for k, v in ref.state_dict().items()}, strict=True)
    ours.eval()
    ref.eval()
    with torch.no_grad():
        return ours(x), ref(x)


def forwards_agree(a, b, x, tol: float = 1e-5, seed: int | None = None, modes=(False, True), what=None) -> None:
    """``a(x)`` and ``b(x)`` (``nn.Module`` s) have one shape and agree within ``tol`` in each of ``modes``
    (train or not). With ``seed``, each forward starts from ``torch.manual_seed(seed)``, so dropout and
    stochastic depth draw the same masks in both."""
    import torch
    for train in modes:
        a.train(train)
        b.train(train)
        with torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            got = a(x)
            if seed is not None:
                torch.manual_seed(seed)
            want = b(x)
        assert got.shape == want.shape and (got - want).abs().max().item() <= tol, (what, train)
    assert a.training == b.training == modes[-1]


def torchvision_counts(file, model: str) -> dict:
    """The totals of ``model``, checked against torchvision's weight metadata: ``meta["num_params"]``
    exactly, ``meta["_ops"]`` (GMACs of the conv and linear layers) to its 3 decimals."""
    import pytest

    from archdsl.ir.stats import totals
    torchvision = pytest.importorskip("torchvision")
    meta = torchvision.models.get_model_weights(model).DEFAULT.meta
    t = totals(archdsl.load(file, model))
    assert t["params"] == meta["num_params"]
    assert round(t["macs"] / 1e9, 3) == pytest.approx(meta["_ops"], abs=1e-9)
    return t


def assert_convs_kaiming_fan_out(g, min_size: int = 2000) -> None:
    """Every conv of ``g`` has no bias and, where it has at least ``min_size`` weights for the sample to
    mean something, the weight statistics of kaiming_normal(mode="fan_out"): mean 0, std sqrt(2 / fan_out)."""
    import math
    for n in g.nodes():
        if n.op == "conv":
            w = n.param("weight").value
            assert "bias" not in n.params
            fan_out = w.shape[0] * w.shape[2] * w.shape[3]
            if w.size >= min_size:
                assert abs(w.std() / math.sqrt(2 / fan_out) - 1) <= 0.1, n.scope
                assert abs(w.mean()) < 0.1 * w.std(), n.scope
