"""The model zoo (zoo_specs/*.arch) checked against its references.

* every model of every zoo file elaborates and shape-checks (the list of models
  is read from the files themselves);
* models named like a torchvision model have the same parameter names, shapes
  and trainable count, and compute the same outputs once torchvision's weights
  are loaded by name (eval mode with randomised batch-norm statistics; train mode,
  running-stat updates and gradients for resnet18 and densenet121);
* spatial transformers start at the identity and pass gradients to their
  localisation nets; the MNIST STN equals the PyTorch tutorial's network;
* DenseNet-BC (L=100, k=12) matches the paper's parameter formula, ZF Net the
  paper's feature-map sizes, VGG the weight-layer counts in its names.

Tolerances: outputs in eval mode must agree to 1e-5 absolute (the same float32
kernels run in the same order, so the difference is expected to be 0). In train
mode outputs, running statistics and gradients are compared element-wise with
|a - b| <= 1e-5 + 1e-5 * |b|: gradients of deep nets reach magnitudes where a
purely absolute bound would be meaningless in either direction.
"""
from __future__ import annotations

import re

import numpy as np

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
nn = torch.nn
F = torch.nn.functional

import archdsl  # noqa: E402
from archdsl.ir.verify import verify  # noqa: E402
from archdsl.syntax import ast  # noqa: E402
from archdsl.syntax.parser import parse  # noqa: E402

from zoo import (REPRESENTATIVES, ZOO, input_dependence, load_small, randomise_batch_norm,  # noqa: E402
                 representatives, zoo_models)

TV_KWARGS = {"googlenet": {"aux_logits": False, "init_weights": False},
             "inception_v3": {"aux_logits": False, "init_weights": True}}
TV_NAMES = set(torchvision.models.list_models(module=torchvision.models))


ALL_MODELS = [(p.name, m.name, m.required) for p in sorted(ZOO.glob("*.arch")) for m in archdsl.list_models(p)]
EVERY = zoo_models(every=True)          # every model that compiles as it is
MODELS = zoo_models()                   # those that run numerics (one per family of REPRESENTATIVES)
ALL_TWINS = [(f, m) for f, m in EVERY if m in TV_NAMES]
TWINS = [(f, m) for f, m in MODELS if m in TV_NAMES]
OTHERS = [(f, m) for f, m in MODELS if m not in TV_NAMES]
NEW_FAMILIES = [(f, m) for f in REPRESENTATIVES if (ZOO / f).exists() for m in representatives(f)]
ids = [m for _, m in EVERY]


def input_for(g, batch: int = 2, seed: int = 0):
    shape = g.data(g.inputs[0])["shape"][1:]
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def _regnet_widths_on_the_cpu():
    """torchvision's RegNet computes its stage widths with tensors and ``.tolist()``, which fails on the
    meta device: compute them on the CPU whatever the default device."""
    from torchvision.models import regnet
    original = regnet.BlockParams.from_init_params.__func__

    def on_cpu(cls, *args, **kwargs):
        with torch.device("cpu"):
            return original(cls, *args, **kwargs)
    regnet.BlockParams.from_init_params = classmethod(on_cpu)


_regnet_widths_on_the_cpu()


def torchvision_model(name: str, device: str = "cpu"):
    torch.manual_seed(0)
    with torch.device(device):
        return torchvision.models.get_model(name, weights=None, **TV_KWARGS.get(name, {}))


def arch_module_with(g, state: dict) -> nn.Module:
    """``to_torch(g)`` holding ``state``, loaded strictly; built on the meta device and given the tensors
    of ``state`` themselves (``assign``), which skips initialising and copying VGG's 100M+ weights."""
    with torch.device("meta"):
        m = archdsl.to_torch(g, load_weights=False)
    m.load_state_dict(state, strict=True, assign=True)
    return m


def shapes_of(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items()}


# ---- every model --------------------------------------------------------------------------

def test_the_zoo_is_enumerated():
    assert TWINS and OTHERS
    assert len({f for f, _, _ in ALL_MODELS}) >= 2


@pytest.mark.parametrize("file", sorted({f for f, _, _ in ALL_MODELS}))
def test_every_parameterised_model_has_an_alias(file):
    """A model with required parameters is reached through at least one alias of its file."""
    module = parse((ZOO / file).read_text(encoding="utf-8"), file)
    aliased = {item.target[-1] for item in module.items if isinstance(item, ast.ModelAlias)}
    for f, name, required in ALL_MODELS:
        if f == file and required:
            assert name in aliased, f"{file}: model '{name}' needs {required} but no alias instantiates it"


@pytest.mark.parametrize("file, model", EVERY, ids=ids)
def test_model_loads_and_shape_checks(file, model):
    for g in (archdsl.load(ZOO / file, model), load_small(file, model)):
        verify(g)
        assert g.meta["model"] == model
        (out,) = g.outputs
        shape = g.data(out)["shape"]
        assert len(shape) == 2 and shape[0] == "N" and shape[1] >= 2
        assert g.param_count() > 0


@pytest.mark.parametrize("file, model", OTHERS, ids=[m for _, m in OTHERS])
def test_models_without_twin_run_with_their_own_weights(file, model):
    """The PyTorch module with the IR's initial weights runs and gives the IR's output shape."""
    g = load_small(file, model)
    m = archdsl.to_torch(g).eval()
    x = input_for(g)
    with torch.no_grad():
        y = m(x)
    assert tuple(y.shape) == (2, *g.data(g.outputs[0])["shape"][1:])
    assert torch.isfinite(y).all()


# ---- torchvision twins -------------------------------------------------------------------

@pytest.mark.parametrize("file, model", ALL_TWINS, ids=[m for _, m in ALL_TWINS])
def test_twin_has_torchvisions_parameter_names_and_count(file, model):
    g = archdsl.load(ZOO / file, model)
    with torch.device("meta"):
        ours = archdsl.to_torch(g, load_weights=False)
    theirs = torchvision_model(model, device="meta")
    assert shapes_of(ours.state_dict()) == shapes_of(theirs.state_dict())
    assert g.param_count() == sum(p.numel() for p in theirs.parameters() if p.requires_grad)


@pytest.mark.parametrize("file, model", TWINS, ids=[m for _, m in TWINS])
def test_twin_computes_torchvisions_outputs(file, model):
    g = load_small(file, model)
    tv = torchvision_model(model)
    x = input_for(g)
    randomise_batch_norm(tv, tuple(x.shape))
    ours = arch_module_with(g, tv.state_dict()).eval()
    tv.eval()
    with torch.no_grad():
        a, b = ours(x), tv(x)
    assert a.shape == b.shape == (2, 1000)
    assert input_dependence(b) > 0.01, "the reference output does not depend on the input"
    assert (a - b).abs().max().item() <= 1e-5


TRAIN_TWINS = ["resnet18", "densenet121"] + [m for _, m in NEW_FAMILIES if m in TV_NAMES]


@pytest.mark.parametrize("model", TRAIN_TWINS)
def test_train_mode_matches_torchvision(model):
    """Batch statistics, running-stat updates and gradients agree (tolerance in the module docstring).
    Dropout and stochastic depth draw from torch's global generator: both forwards start from the same
    seed, so they drop the same units when they draw in the same order."""
    file = next(f for f, m in TWINS if m == model)
    g = load_small(file, model)
    tv = torchvision_model(model)
    x = input_for(g)
    randomise_batch_norm(tv, tuple(x.shape))
    ours = archdsl.to_torch(g, load_weights=False)
    ours.load_state_dict(tv.state_dict(), strict=True)
    ours.train()
    tv.train()
    w = torch.randn(2, 1000, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(11)
    a = ours(x)
    torch.manual_seed(11)
    b = tv(x)
    (a * w).sum().backward()
    (b * w).sum().backward()
    close = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, b, **close)
    buffers_a, buffers_b = dict(ours.named_buffers()), dict(tv.named_buffers())
    assert buffers_a.keys() == buffers_b.keys()
    for name, buf in buffers_b.items():
        torch.testing.assert_close(buffers_a[name], buf, **close, msg=lambda m: f"{name}: {m}")
    tracked = [buf for name, buf in buffers_b.items() if name.endswith("num_batches_tracked")]
    assert all(t.item() == 8 for t in tracked), "the running statistics were updated once"
    params_a = dict(ours.named_parameters())
    for name, p in tv.named_parameters():
        assert p.grad is not None and params_a[name].grad is not None, name
        torch.testing.assert_close(params_a[name].grad, p.grad, **close, msg=lambda m: f"{name}: {m}")


# ---- initial weights ----------------------------------------------------------------------------

KS_MIN_ELEMENTS = 256       # smaller tensors are only checked for support and constants
KS_P = 1e-6                 # the same distribution gives p below this about once in a million tensors
KS_MAX_SAMPLES = 100_000    # larger tensors are compared on a fixed random subset (the test's cost)


CLASSICS = [("resnet.arch", "resnet18"), ("resnet.arch", "resnet50"), ("vgg.arch", "vgg11_bn"),
            ("densenet.arch", "densenet121"), ("alexnet.arch", "alexnet")]
INIT_TWINS = CLASSICS + [(f, m) for f, m in NEW_FAMILIES if m in TV_NAMES]


@pytest.mark.parametrize("file, model", INIT_TWINS, ids=[m for f, m in INIT_TWINS])
def test_initial_weights_follow_torchvisions_distributions(file, model):
    """Every tensor torchvision initialises starts from the same distribution here: constants are equal,
    larger tensors pass a two-sample Kolmogorov-Smirnov test against torchvision's own draw, and no value
    lies outside the range torchvision's initialiser can produce (with a margin for the sample)."""
    stats = pytest.importorskip("scipy.stats")
    g = load_small(file, model)
    ours = archdsl.to_torch(g).state_dict()
    theirs = torchvision_model(model).state_dict()
    assert ours.keys() == theirs.keys()
    wrong = []
    rng = np.random.default_rng(0)
    for name, b in theirs.items():
        a, b = ours[name].ravel(), b.ravel()
        (a_lo, a_hi), (b_lo, b_hi) = ((t.min().item(), t.max().item()) for t in (a, b))   # every value
        if b_lo == b_hi:
            if not (a_lo == a_hi == b_lo):
                wrong.append(f"{name}: torchvision starts at the constant {b_lo}, ours at [{a_lo}, {a_hi}]")
            continue
        spread = b_hi - b_lo
        if a_lo < b_lo - 0.5 * spread or a_hi > b_hi + 0.5 * spread:
            wrong.append(f"{name}: ours spans [{a_lo:.4g}, {a_hi:.4g}], torchvision [{b_lo:.4g}, {b_hi:.4g}]")
        elif a.numel() >= KS_MIN_ELEMENTS:
            if a.numel() > KS_MAX_SAMPLES:      # one fixed random subset of both (with replacement: cheap on 100M)
                pick = torch.from_numpy(rng.integers(0, a.numel(), KS_MAX_SAMPLES))
                a, b = a[pick], b[pick]
            a, b = a.double().numpy(), b.double().numpy()
            p = stats.ks_2samp(a, b).pvalue
            if p < KS_P:
                wrong.append(f"{name}: a different distribution (KS p = {p:.2g}; std {a.std():.4g} against "
                             f"{b.std():.4g}, mean {a.mean():.4g} against {b.mean():.4g})")
    assert not wrong, "\n".join(wrong)


# ---- spatial transformers --------------------------------------------------------------------

STN_MODELS = [(f, m) for f, m in MODELS if f == "stn.arch"]


def _stn_nodes(g):
    nodes = [n for n in g.nodes() if n.op == "grid_sample"]
    assert nodes, "the model has a spatial transformer"
    return nodes


@pytest.mark.parametrize("file, model", STN_MODELS, ids=[m for _, m in STN_MODELS])
def test_stn_starts_at_the_identity(file, model):
    g = load_small(file, model)
    (sampler,) = _stn_nodes(g)
    image = sampler.inputs[0]
    g.outputs = [image, sampler.id]          # expose the transformer's input and output
    m = archdsl.to_torch(g).eval()
    with torch.no_grad():
        before, after = m(input_for(g))
    assert before.shape == after.shape
    assert before.abs().max() > 0.1
    assert (before - after).abs().max().item() <= 1e-5


@pytest.mark.parametrize("file, model", STN_MODELS, ids=[m for _, m in STN_MODELS])
def test_stn_gradients_reach_the_localisation_net(file, model):
    """At the identity start the regressor's zero weights block the gradient to the layers before it,
    so the localisation convs get exactly zero; after one SGD step they get a non-zero gradient."""
    g = load_small(file, model)
    convs = [n.scope for n in g.nodes() if n.op == "conv" and "localization" in n.scope.split(".")]
    (sampler,) = _stn_nodes(g)
    reshape = g.data(sampler.inputs[1])["inputs"][0]          # grid <- affine_grid <- reshape <- theta
    regressor = g.data(g.data(reshape)["inputs"][0])
    assert convs and regressor["op"] == "linear"
    m = archdsl.to_torch(g).eval()
    params = dict(m.named_parameters())
    x, target = input_for(g), torch.randn(2, *g.data(g.outputs[0])["shape"][1:])
    opt = torch.optim.SGD(m.parameters(), lr=0.1)

    def backward():
        opt.zero_grad()
        ((m(x) - target) ** 2).mean().backward()

    backward()
    assert params[regressor["scope"] + ".weight"].grad.abs().sum() > 0
    for scope in convs:
        assert params[scope + ".weight"].grad.abs().sum() == 0
    opt.step()
    backward()
    for scope in convs:
        assert params[scope + ".weight"].grad.abs().sum() > 0, scope


class TutorialNet(nn.Module):
    """The network of the PyTorch tutorial "Spatial Transformer Networks", as published."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)
        self.localization = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=7), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2, stride=2), nn.ReLU(True))
        self.fc_loc = nn.Sequential(nn.Linear(10 * 3 * 3, 32), nn.ReLU(True), nn.Linear(32, 3 * 2))
        self.fc_loc[2].weight.data.zero_()
        self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

    def stn(self, x):
        xs = self.localization(x).view(-1, 10 * 3 * 3)
        theta = self.fc_loc(xs).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.size(), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def forward(self, x):
        x = self.stn(x)
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


def test_stn_mnist_is_the_tutorial_network():
    g = archdsl.load(ZOO / "stn.arch", "stn_mnist")
    ours = archdsl.to_torch(g)
    torch.manual_seed(0)
    ref = TutorialNet()
    assert shapes_of(ours.state_dict()) == shapes_of(ref.state_dict())
    assert g.param_count() == sum(p.numel() for p in ref.parameters())
    # the identity initialisation of the regressor is the tutorial's
    for key in ("fc_loc.2.weight", "fc_loc.2.bias"):
        assert torch.equal(ours.state_dict()[key], ref.state_dict()[key])
    state = ref.state_dict()
    with torch.no_grad():               # a non-identity transform, so the sampler does real work
        state["fc_loc.2.weight"].normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    ref.load_state_dict(state)
    ours.load_state_dict(state, strict=True)
    ours.eval()
    ref.eval()
    x = input_for(g, batch=2)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-5


def test_resnet18_stn_keeps_resnet18_names():
    """Apart from the transformer's own scope, resnet18_stn is torchvision's resnet18 by name."""
    g = archdsl.load(ZOO / "stn.arch", "resnet18_stn")
    with torch.device("meta"):
        ours = shapes_of(archdsl.to_torch(g, load_weights=False).state_dict())
    theirs = shapes_of(torchvision_model("resnet18", device="meta").state_dict())
    extra = {k: v for k, v in ours.items() if k not in theirs}
    assert {k: v for k, v in ours.items() if k in theirs} == theirs
    assert extra and all(k.startswith("transformer.") for k in extra)


# ---- facts from the papers ----------------------------------------------------------------------

def densenet_bc_parameters(depth: int, k: int, theta: float = 0.5, blocks: int = 3, classes: int = 10) -> int:
    """Parameters of a CIFAR DenseNet-BC from the paper's definition.

    depth = 3 * n * 2 + 4 (n bottleneck layers of two convs per block, the first conv, two
    transitions, the classifier). The first conv gives 2k maps; a bottleneck layer with c inputs
    has BN(c), conv1x1 c -> 4k, BN(4k), conv3x3 4k -> k (no conv biases); a transition with c
    inputs has BN(c) and conv1x1 c -> floor(theta * c); the head is BN(c) and a c -> classes
    linear layer with bias.
    """
    n = (depth - 4) // 6
    c = 2 * k
    total = 3 * 3 * 3 * c
    for b in range(blocks):
        for _ in range(n):
            total += 2 * c + c * 4 * k + 2 * 4 * k + 4 * k * 3 * 3 * k
            c += k
        if b < blocks - 1:
            out = int(theta * c)
            total += 2 * c + c * out
            c = out
    return total + 2 * c + c * classes + classes


def test_densenet_bc_100_matches_the_paper():
    g = archdsl.load(ZOO / "densenet.arch", "densenet_bc_100")
    expected = densenet_bc_parameters(100, 12)
    assert g.param_count() == expected
    assert 0.75e6 < expected < 0.85e6                         # "0.8M" in the paper's Table 2
    assert sum(n.op in ("conv", "linear") for n in g.nodes()) == 100          # L = 100
    assert g.data(g.inputs[0])["shape"] == ("N", 3, 32, 32)


def test_zfnet_feature_maps_follow_the_paper():
    """Figure 3 of Zeiler and Fergus: 224 -> 110 -> 55 -> 26 -> 13 -> 13 -> 13 -> 13 -> 6."""
    g = archdsl.load(ZOO / "zfnet.arch", "zfnet")
    sizes = [n.shape[2] for n in g.nodes() if n.op in ("conv", "maxpool")]
    assert sizes == [110, 55, 26, 13, 13, 13, 13, 6]
    first = next(n for n in g.nodes() if n.op == "conv")
    assert first.attrs["kernel_size"] == (7, 7) and first.attrs["stride"] == (2, 2)


@pytest.mark.parametrize("model", [m for f, m in EVERY if f == "vgg.arch"])
def test_vgg_weight_layers_match_the_name(model):
    g = archdsl.load(ZOO / "vgg.arch", model)
    layers = int(re.match(r"vgg(\d+)", model).group(1))
    assert sum(n.op in ("conv", "linear") for n in g.nodes()) == layers
    assert all(n.attrs["kernel_size"] == (3, 3) for n in g.nodes() if n.op == "conv")
    assert any(n.op == "bn" for n in g.nodes()) == model.endswith("_bn")


def test_googlenet_has_nine_inception_modules():
    g = archdsl.load(ZOO / "googlenet.arch", "googlenet")
    blocks = [s for s, info in g.scopes.items() if info.kind == "block" and info.name == "inception"]
    assert len(blocks) == 9
    assert all(n.attrs["ceil_mode"] for n in g.nodes() if n.op == "maxpool")
