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
    """Batch norms far from the identity whose running statistics are those of data.

    Each gamma is 0.5 to 1 in size, half of them negative, and each beta 0.5 to 1; the running
    statistics are then measured on a random batch (:func:`calibrate_batch_norm`), so every batch
    norm's output has mean beta and spread |gamma|, and the ReLU after it clips 2 to 30 % of it.

    Both halves matter. Statistics drawn without looking at the data leave most channels of a deep
    net saturated or dead: the outputs of MobileNet, EfficientNet, GoogLeNet or ShuffleNet at test
    sizes then do not depend on the input at all, and comparing two outputs compares biases. Betas
    around zero instead make the nets chaotic: a 1 % change of the input changes ResNet-50's output
    by 45 % and EfficientNetV2's by 100 %, so any rounding, int8's included, is blown up far beyond
    what a trained network does with it. With these ranges the zoo's outputs at the tests' sizes vary
    with the input (0.1 to 0.7 of their spread) and a 1 % change of the input moves them 0.2 to 5 %.
    ``zero_shift`` sets the means and betas to zero after measuring (a fold that needs no shift)."""
    bns = [n for n in g.nodes() if n.op == "bn"]
    if not bns:
        return
    rng = np.random.default_rng(seed)
    for n in bns:
        gamma, beta = bn_affine(rng, n.shape[1])
        for local, v in (("weight", gamma), ("bias", beta)):
            if local in n.params:
                n.param(local).value = v
    import torch

    from archdsl.passes.calibrate import float_module
    module = float_module(g)            # shares the IR's arrays: a VGG's 500 MB are not copied
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(8, *g.data(i)["shape"][1:], generator=gen) for i in g.inputs]
    calibrate_batch_norm(module, xs)
    state = module.state_dict()
    for n in bns:
        for local in ("running_mean", "running_var"):
            p = n.param(local)
            p.value = state[p.name].numpy().astype(np.float32)
        if zero_shift:
            n.param("running_mean").value = np.zeros_like(n.param("running_mean").value)
            if "bias" in n.params:
                n.param("bias").value = np.zeros_like(n.param("bias").value)


def bn_affine(rng, c: int) -> tuple:
    """``(gamma, beta)`` float32 for ``c`` channels: sizes 0.5 to 1, half the gammas negative, betas 0.5 to 1."""
    gamma = rng.uniform(0.5, 1.0, c) * rng.choice([-1.0, 1.0], c)
    return gamma.astype(np.float32), rng.uniform(0.5, 1.0, c).astype(np.float32)


def calibrate_batch_norm(module, xs) -> None:
    """Set the running statistics of every batch norm of ``module`` to those of its inputs on the batch
    ``xs`` (a tensor or a list of them): one forward with only the batch norms in training mode and a
    cumulative average (``momentum=None``), so each one sees the activations that the ones before it,
    already measured, produce. ``num_batches_tracked`` keeps its value; the module ends in eval mode."""
    import torch
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    module.eval()
    for m in bns:
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(m, name, getattr(m, name).clone())      # new buffers: these may share another's memory
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        module(*xs) if isinstance(xs, (list, tuple)) else module(xs)
    for m, (momentum, tracked) in zip(bns, saved):
        m.momentum = momentum
        m.num_batches_tracked.copy_(tracked)
    module.eval()


def random_inputs(g, batch: int = 2, seed: int = 1) -> list[np.ndarray]:
    """One standard-normal float32 batch of ``batch`` per input of the IR ``g``, in its declared shape."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, *g.data(i)["shape"][1:]), dtype=np.float32) for i in g.inputs]


def ir_outputs(g, xs, dtype=None) -> list[np.ndarray]:
    """Every output of the IR ``g`` on the inputs ``xs`` (an array or a list of them), in inference mode
    and in ``dtype`` (a torch dtype; the IR's own when None), as NumPy arrays. Runs ``float_module``:
    ``to_torch`` sharing the IR's arrays instead of copying them (VGG's weights are 500 MB)."""
    import torch
    from archdsl.passes.calibrate import float_module
    xs = [torch.from_numpy(x) for x in (xs if isinstance(xs, (list, tuple)) else [xs])]
    module = float_module(g)
    if dtype is not None:
        module, xs = module.to(dtype), [x.to(dtype) for x in xs]
    with torch.no_grad():
        out = module(*xs)
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def input_dependence(y) -> float:
    """How much a batch of outputs varies with the input: the standard deviation across the batch of
    each output's deviation from the batch mean, relative to the outputs' own spread. Near 0 (float
    noise is 1e-7) when the network's output is a constant and a comparison would mean nothing."""
    y = y.reshape(y.shape[0], -1)
    return float((y - y.mean(0)).std() / y.std())


def randomise_batch_norm(module, shape, seed: int = 1) -> None:
    """Move a PyTorch module's normalisations far from the identity: batch-norm gammas and betas as
    :func:`randomise_bn` draws them, layer norms' around 1 and 0 with a spread of 0.2, ConvNeXt's
    layer scales (1e-6, which would hide every residual branch) to 0.5 to 1; then batch-norm running
    statistics measured on a random batch of ``shape`` (:func:`calibrate_batch_norm`)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                gamma, beta = bn_affine(rng, m.num_features)
                m.weight.copy_(torch.from_numpy(gamma))
                m.bias.copy_(torch.from_numpy(beta))
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, torch.nn.LayerNorm) or type(m).__name__ == "LayerNorm2d":
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
        for name, p in module.named_parameters():
            if name.endswith("layer_scale"):
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=gen))
    calibrate_batch_norm(module, torch.randn(8, *shape[1:], generator=gen))


def outputs_with_the_weights_of(g, ref, x, prefix: str = "", seed: int = 1):
    """``(ours, theirs)``: the outputs in inference mode of ``to_torch(g)`` holding the weights of the
    PyTorch module ``ref`` (its state-dict keys under ``prefix``) and of ``ref`` itself, after moving
    ``ref``'s batch norms far from the identity (:func:`randomise_batch_norm`). Checks that the output
    depends on the input, which a comparison needs to mean anything."""
    import torch
    randomise_batch_norm(ref, tuple(x.shape), seed)
    ours = archdsl.to_torch(g, load_weights=False)
    ours.load_state_dict({prefix + k: v for k, v in ref.state_dict().items()}, strict=True)
    ours.eval()
    ref.eval()
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert input_dependence(b) > 0.01, "the reference output does not depend on the input"
    return a, b


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
