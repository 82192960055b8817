"""The op registry: every primitive the language and the IR know.

An :class:`OpDef` states everything the compiler knows about an op: its
spec-level arguments (``args``), how many tensors it takes, its shape rule
(``infer``), its type rule (``types``: element type and quantisation of the
result), its parameters, its multiply-accumulate count and its channel
semantics (``channels``: how output channels relate to the inputs' channels and
to the parameters, which :mod:`archdsl.ir.channels` turns into channel groups).
Shapes carry the symbolic batch ``"N"`` in front. A new op is one ``register``
call here plus one lowering per backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .inits import Initialiser, as_param_init
from .shape_rules import ShapeError, broadcast, expect_rank, fmt, norm_dim, numel, window_out
from .types import DTYPES, FLOAT_DTYPES, INT_RANGES as INT_RANGES_Q, QUANT_DTYPES, QuantParams, TensorType


@dataclass(frozen=True)
class Arg:
    name: str
    kind: str                  # int, float, bool, str, pair, ints, init, any, choice:a|b
    default: object = ...      # ... means required

    @property
    def required(self) -> bool:
        return self.default is ...


@dataclass(frozen=True)
class ParamSpec:
    shape: tuple
    init: object = "default"
    fan_in: int = 1
    fan_out: int = 1
    trainable: bool = True
    dtype: str = "float32"


@dataclass(frozen=True)
class Channels:
    """How an op's output channels relate to its inputs' channels and its parameters.

    ``kind`` is one of

    * ``"same"``: output channel c is computed from input channel c alone (batch norm,
      activations, pooling, dropout); ``params`` lists the per-channel parameters as
      ``(local, axis)`` (batch norm's weight, bias and running statistics, axis 0);
    * ``"produce"``: the output channels are new (conv out-channels, linear out-features);
      ``params`` lists the parameter axes indexed by output channel, ``consumes`` the axes
      indexed by input channel (``("weight", 1)``); a conv with ``groups > 1`` couples
      channels group-wise (see :mod:`archdsl.ir.channels`);
    * ``"elementwise"``: the inputs are combined element by element with broadcasting,
      so their channels are coupled (add, mul, including a squeeze-and-excitation gate);
    * ``"concat"``: channels are concatenated along ``attrs["dim"]`` with offsets
      (:func:`concat_offsets`); ``"slice"``: a range of one dimension is kept;
    * ``"reshape"``: elements keep their row-major order (flatten: each channel becomes a
      block of features; a channel shuffle's reshape, transpose, reshape permutes);
      ``"transpose"``: two dimensions swap; ``"permute"``: the dimensions move as
      ``attrs["dims"]`` says (the channel axis with them);
    * ``"broadcast"``: y = f(x, p) element by element, with each parameter of ``params``
      (``(local, None)``) broadcast against the sample (x without its batch), aligned from the
      right: an element of x keeps its channel, and a parameter axis of size > 1 that lies
      along the channels is indexed by them (``scale``'s (C, 1, 1));
    * ``"mix"``: output element depends on the neighbours along ``attrs["dim"]``, or along
      channels when the op has no ``dim`` (softmax, LRN): channels varying there cannot be
      removed without changing the function;
    * ``"sample"``: the first input's channels pass through (grid sampling); the other
      inputs are consumed whole;
    * ``"opaque"``: nothing is known; every input channel is fixed.
    """
    kind: str
    params: tuple = ()       # (local, axis) indexed by output channel
    consumes: tuple = ()     # (local, axis) indexed by input channel ("produce")
    width: str = ""          # the attribute holding the output channel count ("produce": out_channels)


SAME = Channels("same")
# an element-wise function of one tensor (activations): every element keeps its channel, along whichever
# dimension the channels lie (dimension 3 after permute([0, 2, 3, 1]))
POINTWISE = Channels("elementwise")


@dataclass(frozen=True)
class OpDef:
    name: str
    args: tuple = ()
    arity: int | None = 1      # None: one or more tensors
    infer: Callable = None     # (attrs, [shape]) -> shape
    params: Callable | None = None   # (attrs, [shape]) -> {local: ParamSpec}
    macs: Callable | None = None     # (attrs, [shape], out_shape) -> int (per sample)
    doc: str = ""
    category: str = "layer"
    types: Callable | None = None    # (attrs, [TensorType]) -> (dtype, QuantParams | None); None: float_op
    channels: Channels = field(default_factory=lambda: Channels("opaque"))
    internal: bool = False     # made by passes only: not callable from a spec
    bare: str = ""             # the local name of a parameter stored under the node's own scope (scale)

    @property
    def in_specs(self) -> bool:
        """Whether a spec can call this op (``input`` and pass-made ops cannot)."""
        return self.arity != 0 and not self.internal


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    OPS[op.name] = op
    return op


def get(name: str) -> OpDef | None:
    return OPS.get(name)


def param_name(op: str, scope: str, local: str) -> str:
    """The name of parameter ``local`` of a node of ``op`` at ``scope``: ``scope.local``, or ``scope``
    itself for the op's bare parameter (``scale``'s, as torchvision's ``layer_scale``)."""
    opdef = OPS.get(op)
    return scope if opdef is not None and opdef.bare and local == opdef.bare else f"{scope}.{local}"


def infer(name: str, attrs: dict, shapes: list) -> tuple:
    """The output shape of op ``name``, within the size guard (:func:`check_attrs`, :func:`check_shape`)."""
    check_attrs(name, attrs)
    return check_shape(name, OPS[name].infer(attrs, shapes))


# ---- the size guard ----------------------------------------------------------------------------
# Sizes, indices and counts must fit the int32 that ONNX shapes, torch kernels and tensor allocation
# assume; a dimension of 2**63 or an int of 4,300 digits would fail far from the spec (or in str()).

MAX_DIM = 2**31 - 1
MAX_PARAM_ELEMENTS = 2**31


def number_text(n: int) -> str:
    """An int as messages write it: its digits, or its size when it has too many to print."""
    if abs(n).bit_length() <= 256:
        return str(n)
    return f"a {int(abs(n).bit_length() * 0.30103) + 1}-digit number"


FLOAT32_MAX = 3.4028234663852886e38
POSITIVE = {("bn", "eps")}       # added to a variance before its square root (layer_norm checks its own)
UNIT = {("bn", "momentum")}                                                         # fractions in [0, 1]


def _check_float(name: str, key: str, v: float) -> None:
    """A float an op is given becomes a float32 (a kernel argument or a tensor), so it must be finite
    there; epsilons are positive and momenta fractions (``bn(eps=-1)`` would take the square root of a
    negative variance, and fold-bn with it)."""
    if not abs(v) <= FLOAT32_MAX:           # also NaN
        raise ShapeError(f"'{name}' was given {key}={v!r}, which float32 cannot hold; use a finite "
                         f"number of magnitude below 3.4e38.")
    if (name, key) in POSITIVE and not v > 0:
        raise ShapeError(f"'{name}' needs {key} above 0, but it is {v!r}.")
    if (name, key) in UNIT and not 0 <= v <= 1:
        raise ShapeError(f"'{name}' needs {key} between 0 and 1, but it is {v!r}.")


def _too_big(name: str, key: str, value, v: int):
    given = f"{key}={number_text(v)}" if v is value else f"{key} holding {number_text(v)}"
    return ShapeError(f"'{name}' was given {given}, more than {MAX_DIM} (2**31 - 1), the most a size, "
                      "index or count can be; tensors that large cannot be allocated or exported.")


def check_attrs(name: str, attrs: dict) -> None:
    """Every int an op is given (out_channels, kernel sizes, shapes, dims ...) is at most MAX_DIM in size;
    every float is one float32 can hold (:func:`_check_float`). Runs for every node a spec makes, so the
    common cases (an int, a float, a flat tuple) take the short paths."""
    for key, value in attrs.items():
        t = type(value)
        if t is int:
            if -MAX_DIM <= value <= MAX_DIM:
                continue
            raise _too_big(name, key, value, value)
        if t is float:
            if -FLOAT32_MAX <= value <= FLOAT32_MAX and (name, key) not in POSITIVE and (name, key) not in UNIT:
                continue
            _check_float(name, key, value)
        elif t is tuple or t is list:
            pending = list(value)
            while pending:
                v = pending.pop()
                tv = type(v)
                if tv is tuple or tv is list:
                    pending.extend(v)
                elif tv is int and not -MAX_DIM <= v <= MAX_DIM:
                    raise _too_big(name, key, value, v)


def check_shape(name: str, shape: tuple) -> tuple:
    """``shape``, if each of its dimensions is at most MAX_DIM."""
    big = next((d for d in shape if d != "N" and d > MAX_DIM), None)
    if big is not None:
        dims = ", ".join(str(d) if d == "N" else number_text(d) for d in shape)
        raise ShapeError(f"'{name}' would make a tensor of shape ({dims}), and its dimension {number_text(big)} is "
                         f"more than {MAX_DIM} (2**31 - 1), the most a dimension can be.")
    return shape


def check_param_sizes(name: str, specs: dict) -> dict:
    """``specs``, if each parameter tensor holds at most MAX_PARAM_ELEMENTS elements."""
    for local, spec in specs.items():
        n = numel(spec.shape)
        if n > MAX_PARAM_ELEMENTS:
            dims = " x ".join(number_text(d) for d in spec.shape)
            raise ShapeError(f"The {local} of '{name}' would hold {number_text(n)} elements ({dims}), more than "
                             f"{MAX_PARAM_ELEMENTS} (2**31), the most one parameter tensor may hold.")
    return specs


def float_rule(op: str, a, types) -> tuple:
    """The type rule of an op computing in floating point: inputs share one float dtype, the result has it."""
    for i, t in enumerate(types, 1):
        if t.dtype not in FLOAT_DTYPES:
            what = f"input {i}" if len(types) > 1 else "its input"
            fix = "dequantize it first" if t.quant is not None else "cast it to a float type first"
            raise ShapeError(f"'{op}' computes in floating point, but {what} is {t.dtype}; {fix}.")
    dtypes = sorted({t.dtype for t in types})
    if len(dtypes) > 1:
        raise ShapeError(f"'{op}' needs inputs of one dtype, but got {' and '.join(dtypes)}; cast them to one.")
    return (types[0].dtype if types else "float32"), None


def infer_type(name: str, attrs: dict, types: list) -> TensorType:
    """The result type of ``name`` on inputs of ``types``: its shape rule and its type rule together."""
    op = OPS[name]
    shape = tuple(op.infer(attrs, [t.shape for t in types]))
    dtype, quant = op.types(attrs, types) if op.types else float_rule(name, attrs, types)
    return TensorType(shape, dtype, quant)


def concat_offsets(attrs: dict, shapes: list) -> list[int]:
    """Where each operand of a concat starts along the concatenated dimension."""
    d = attrs["dim"] % len(shapes[0])
    out, at = [], 0
    for s in shapes:
        out.append(at)
        at += s[d]
    return out


ATTR_KINDS = ("int", "float", "bool", "str", "pair", "pair?", "ints", "floats", "init", "any", "int?")


def attr_ok(kind: str, value) -> bool:
    """Whether ``value`` is a normalised attribute of ``kind`` (see :class:`Arg`)."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "int":
        return is_int
    if kind == "int?":
        return value is None or is_int
    if kind == "float":
        return isinstance(value, float) and value == value          # never NaN: no spec writes one
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind in ("pair", "pair?"):
        if value is None:
            return kind == "pair?"
        return isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                     for v in value)
    if kind == "ints":
        return isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if kind == "floats":
        return isinstance(value, (tuple, list)) and all(isinstance(v, float) and v == v for v in value)
    if kind == "init":
        if isinstance(value, Initialiser) or isinstance(value, float):
            return True
        return isinstance(value, str) or (isinstance(value, (list, tuple))
                                          and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in value))
    if kind.startswith("choice:"):
        return value in kind[len("choice:"):].split("|")
    return True


def complete_attrs(name: str, attrs: dict, span=None) -> dict:
    """``attrs`` with the registry's defaults filled in; IRError for unknown, missing or ill-typed ones."""
    from ..diagnostics import IRError
    op = OPS.get(name)
    if op is None:
        raise IRError(f"There is no op '{name}' in the registry.", span)
    known = {a.name: a for a in op.args}
    unknown = sorted(set(attrs) - set(known))
    if unknown:
        raise IRError(f"'{name}' has no attribute '{unknown[0]}'; its attributes are "
                      f"{', '.join(known) or 'none'}.", span)
    out = {}
    for arg in op.args:
        if arg.name in attrs:
            value = attrs[arg.name]
        elif arg.required:
            raise IRError(f"'{name}' needs the attribute '{arg.name}'.", span)
        else:
            value = arg.default
        if arg.kind == "pair" and isinstance(value, int) and not isinstance(value, bool):
            value = (value, value)
        elif arg.kind in ("float", "init") and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif arg.kind in ("ints", "floats") and isinstance(value, list):
            value = tuple(float(v) if arg.kind == "floats" else v for v in value)
        if not attr_ok(arg.kind, value):
            raise IRError(f"Attribute '{arg.name}' of '{name}' must be {arg.kind}, but got {value!r}.", span)
        out[arg.name] = value
    if name in ("maxpool", "avgpool") and out.get("stride") is None:
        out["stride"] = out["kernel_size"]
    return out


def param_specs(name: str, attrs: dict, shapes: list) -> dict:
    op = OPS[name]
    return check_param_sizes(name, op.params(attrs, shapes)) if op.params else {}


def macs(name: str, attrs: dict, shapes: list, out) -> int:
    op = OPS[name]
    return op.macs(attrs, shapes, out) if op.macs else 0


# ---- convolution and linear ---------------------------------------------------

def _check_inits(op: str, a, weight_shape: tuple) -> None:
    """A list given as ``weight_init``/``bias_init`` must hold one value per element."""
    for key, shape in (("weight_init", weight_shape), ("bias_init", weight_shape[:1])):
        init = a[key]
        if isinstance(init, (list, tuple)) and (key == "weight_init" or a["bias"]) and len(init) != numel(shape):
            raise ShapeError(f"'{op}' {key} lists {len(init)} values, but the {key[:-5]} of shape {fmt(shape)} "
                             f"has {numel(shape)}.")


def _conv_infer(a, shapes):
    (x,) = shapes
    expect_rank("conv", x, (4,), " (N, C, H, W)")
    c = x[1]
    g = a["groups"]
    if a["out_channels"] < 1:
        raise ShapeError(f"'conv' needs at least 1 output channel, but out_channels is {a['out_channels']}.")
    if g < 1:
        raise ShapeError(f"'conv' needs groups of at least 1, but groups is {g}.")
    if c % g or a["out_channels"] % g:
        raise ShapeError(f"'conv' with groups={g} needs in-channels ({c}) and out-channels "
                         f"({a['out_channels']}) that are both multiples of {g}.")
    kh, kw = a["kernel_size"]
    sh, sw = a["stride"]
    ph, pw = a["padding"]
    dh, dw = a["dilation"]
    out = (x[0], a["out_channels"], window_out("conv", x[2], kh, sh, ph, dh),
           window_out("conv", x[3], kw, sw, pw, dw, axis="width"))
    _check_inits("conv", a, (a["out_channels"], c // g, kh, kw))
    return out


def _conv_params(a, shapes):
    c = shapes[0][1]
    kh, kw = a["kernel_size"]
    per_group = c // a["groups"]
    fan_in, fan_out = per_group * kh * kw, a["out_channels"] * kh * kw
    out = {"weight": ParamSpec((a["out_channels"], per_group, kh, kw), as_param_init(a["weight_init"]), fan_in,
                               fan_out)}
    if a["bias"]:
        out["bias"] = ParamSpec((a["out_channels"],), as_param_init(a["bias_init"]), fan_in, fan_out)
    return out


def _conv_macs(a, shapes, out):
    kh, kw = a["kernel_size"]
    return numel(out) * (shapes[0][1] // a["groups"]) * kh * kw


register(OpDef("conv", (
    Arg("out_channels", "int"), Arg("kernel_size", "pair"), Arg("stride", "pair", 1),
    Arg("padding", "pair", 0), Arg("dilation", "pair", 1), Arg("groups", "int", 1),
    Arg("bias", "bool", True), Arg("weight_init", "init", "default"), Arg("bias_init", "init", "default"),
), infer=_conv_infer, params=_conv_params, macs=_conv_macs,
    channels=Channels("produce", (("weight", 0), ("bias", 0)), (("weight", 1),), "out_channels"),
    doc="2-D convolution (torch.nn.Conv2d); in-channels come from the input."))


def _linear_infer(a, shapes):
    (x,) = shapes
    if len(x) < 2:
        raise ShapeError(f"'linear' expects at least a 2-D input (N, features) but got {fmt(x)}.")
    if a["out_features"] < 1:
        raise ShapeError(f"'linear' needs at least 1 output feature, but out_features is {a['out_features']}.")
    _check_inits("linear", a, (a["out_features"], x[-1]))
    return (*x[:-1], a["out_features"])


def _linear_params(a, shapes):
    fin = shapes[0][-1]
    out = {"weight": ParamSpec((a["out_features"], fin), as_param_init(a["weight_init"]), fin, a["out_features"])}
    if a["bias"]:
        out["bias"] = ParamSpec((a["out_features"],), as_param_init(a["bias_init"]), fin, a["out_features"])
    return out


register(OpDef("linear", (
    Arg("out_features", "int"), Arg("bias", "bool", True), Arg("weight_init", "init", "default"),
    Arg("bias_init", "init", "default"),
), infer=_linear_infer, params=_linear_params,
    channels=Channels("produce", (("weight", 0), ("bias", 0)), (("weight", 1),), "out_features"),
    macs=lambda a, s, out: numel(out) * s[0][-1],
    doc="Fully connected layer over the last dimension (torch.nn.Linear)."))


def _bn_infer(a, shapes):
    (x,) = shapes
    expect_rank("bn", x, (2, 3, 4))
    return x


def _bn_params(a, shapes):
    c = shapes[0][1]
    out = {}
    if a["affine"]:
        out["weight"] = ParamSpec((c,), "ones")
        out["bias"] = ParamSpec((c,), "zeros")
    out["running_mean"] = ParamSpec((c,), "zeros", trainable=False)
    out["running_var"] = ParamSpec((c,), "ones", trainable=False)
    out["num_batches_tracked"] = ParamSpec((), "zeros", trainable=False, dtype="int64")
    return out


register(OpDef("bn", (Arg("eps", "float", 1e-5), Arg("momentum", "float", 0.1), Arg("affine", "bool", True)),
               infer=_bn_infer, params=_bn_params,
               channels=Channels("same", (("weight", 0), ("bias", 0), ("running_mean", 0), ("running_var", 0))),
               doc="Batch normalisation over channels (BatchNorm1d/2d by input rank)."))


# ---- element-wise ---------------------------------------------------------------

def _same(a, shapes):
    return shapes[0]


for _name, _doc in [("relu", "max(x, 0)"), ("relu6", "min(max(x, 0), 6)"), ("sigmoid", "1 / (1 + exp(-x))"),
                    ("tanh", "tanh(x)"), ("gelu", "Gaussian error linear unit"),
                    ("silu", "x * sigmoid(x) (swish)"), ("hardswish", "x * relu6(x + 3) / 6"),
                    ("hardsigmoid", "relu6(x + 3) / 6"), ("identity", "x, unchanged")]:
    register(OpDef(_name, (), infer=_same, doc=_doc, category="activation", channels=POINTWISE))
register(OpDef("leaky_relu", (Arg("negative_slope", "float", 0.01),), infer=_same,
               doc="x if x > 0 else negative_slope * x", category="activation", channels=POINTWISE))
register(OpDef("elu", (Arg("alpha", "float", 1.0),), infer=_same,
               doc="x if x > 0 else alpha * (exp(x) - 1)", category="activation", channels=POINTWISE))


def _dim_checked(op):
    def rule(a, shapes):
        norm_dim(op, a["dim"], len(shapes[0]))
        if norm_dim(op, a["dim"], len(shapes[0])) == 0:
            raise ShapeError(f"'{op}' cannot work across the batch dimension (dim 0).")
        return shapes[0]
    return rule


register(OpDef("softmax", (Arg("dim", "int", 1),), infer=_dim_checked("softmax"), category="activation",
               channels=Channels("mix"),
               doc="Softmax along a dimension (default: channels)."))
register(OpDef("log_softmax", (Arg("dim", "int", 1),), infer=_dim_checked("log_softmax"),
               category="activation", channels=Channels("mix"), doc="Log-softmax along a dimension."))


def _dropout_infer(a, shapes):
    if not 0.0 <= a["p"] <= 1.0:
        raise ShapeError(f"'dropout' needs a probability between 0 and 1, but p is {a['p']}.")
    return shapes[0]


register(OpDef("dropout", (Arg("p", "float", 0.5),), infer=_dropout_infer, category="regularisation", channels=SAME,
               doc="Zeroes elements with probability p in training; identity in inference."))
register(OpDef("dropout2d", (Arg("p", "float", 0.5),), infer=_dropout_infer, category="regularisation",
               channels=SAME,
               doc="Zeroes whole channels with probability p in training; identity in inference."))


def _lrn_infer(a, shapes):
    expect_rank("lrn", shapes[0], (3, 4))
    if a["size"] < 1:
        raise ShapeError(f"'lrn' needs a size of at least 1, but size is {a['size']}.")
    return shapes[0]


register(OpDef("lrn", (Arg("size", "int"), Arg("alpha", "float", 1e-4), Arg("beta", "float", 0.75),
                       Arg("k", "float", 1.0)),
               infer=_lrn_infer, channels=Channels("mix"),
               doc="Local response normalisation across channels (AlexNet)."))


# ---- pooling ----------------------------------------------------------------------

def _pool_infer(op):
    def rule(a, shapes):
        (x,) = shapes
        expect_rank(op, x, (4,), " (N, C, H, W)")
        (kh, kw), (sh, sw), (ph, pw) = a["kernel_size"], a["stride"], a["padding"]
        dh, dw = a.get("dilation", (1, 1))
        if ph * 2 > kh or pw * 2 > kw:
            raise ShapeError(f"'{op}' padding {a['padding']} must be at most half the kernel size "
                             f"{a['kernel_size']}.")
        return (x[0], x[1], window_out(op, x[2], kh, sh, ph, dh, a["ceil_mode"]),
                window_out(op, x[3], kw, sw, pw, dw, a["ceil_mode"], axis="width"))
    return rule


register(OpDef("maxpool", (Arg("kernel_size", "pair"), Arg("stride", "pair?", None), Arg("padding", "pair", 0),
                           Arg("dilation", "pair", 1), Arg("ceil_mode", "bool", False)),
               infer=_pool_infer("maxpool"), category="pooling", channels=SAME,
               doc="Max pooling; stride defaults to the kernel size."))
register(OpDef("avgpool", (Arg("kernel_size", "pair"), Arg("stride", "pair?", None), Arg("padding", "pair", 0),
                           Arg("ceil_mode", "bool", False), Arg("count_include_pad", "bool", True)),
               infer=_pool_infer("avgpool"), category="pooling", channels=SAME,
               doc="Average pooling; stride defaults to the kernel size."))


def _adaptive_infer(op):
    def rule(a, shapes):
        (x,) = shapes
        expect_rank(op, x, (4,), " (N, C, H, W)")
        if min(a["output_size"]) < 1:
            raise ShapeError(f"'{op}' needs an output size of at least 1, but got {a['output_size']}.")
        return (x[0], x[1], *a["output_size"])
    return rule


register(OpDef("adaptive_avgpool", (Arg("output_size", "pair", 1),), infer=_adaptive_infer("adaptive_avgpool"),
               category="pooling", channels=SAME, doc="Average pooling to a fixed output size (1 = global)."))
register(OpDef("adaptive_maxpool", (Arg("output_size", "pair", 1),), infer=_adaptive_infer("adaptive_maxpool"),
               category="pooling", channels=SAME, doc="Max pooling to a fixed output size (1 = global)."))


# ---- shape manipulation ------------------------------------------------------------

def _flatten_infer(a, shapes):
    (x,) = shapes
    s, e = norm_dim("flatten", a["start_dim"], len(x)), norm_dim("flatten", a["end_dim"], len(x))
    if s == 0:
        raise ShapeError("'flatten' cannot fold the batch dimension (start_dim must be at least 1).")
    if e < s:
        raise ShapeError(f"'flatten' needs end_dim ({a['end_dim']}) at or after start_dim ({a['start_dim']}).")
    return (*x[:s], numel(x[s:e + 1]), *x[e + 1:])


register(OpDef("flatten", (Arg("start_dim", "int", 1), Arg("end_dim", "int", -1)), infer=_flatten_infer,
               category="shape", channels=Channels("reshape"), doc="Merges dimensions start_dim..end_dim into one."))


def _reshape_infer(a, shapes):
    (x,) = shapes
    want = list(a["shape"])
    total = numel(x[1:])
    if want.count(-1) > 1:
        raise ShapeError("'reshape' allows at most one -1 in its shape.")
    if any(d == 0 or d < -1 for d in want):
        raise ShapeError(f"'reshape' needs positive sizes (or one -1), but got {tuple(want)}.")
    known = numel([d for d in want if d != -1])
    if -1 in want:
        if known == 0 or total % known:
            raise ShapeError(f"'reshape' cannot fit {total} elements per sample into {tuple(want)}.")
        want[want.index(-1)] = total // known
    if numel(want) != total:
        raise ShapeError(f"'reshape' to {tuple(want)} needs {numel(want)} elements per sample, but the "
                         f"input {fmt(x)} has {total}.")
    return (x[0], *want)


register(OpDef("reshape", (Arg("shape", "ints"),), infer=_reshape_infer, category="shape",
               channels=Channels("reshape"),
               doc="Reshapes each sample; the shape excludes the batch dimension."))


def _transpose_infer(a, shapes):
    (x,) = shapes
    d0, d1 = norm_dim("transpose", a["dim0"], len(x)), norm_dim("transpose", a["dim1"], len(x))
    if 0 in (d0, d1):
        raise ShapeError("'transpose' cannot move the batch dimension (dim 0).")
    out = list(x)
    out[d0], out[d1] = out[d1], out[d0]
    return tuple(out)


register(OpDef("transpose", (Arg("dim0", "int"), Arg("dim1", "int")), infer=_transpose_infer, category="shape",
               channels=Channels("transpose"),
               doc="Swaps two dimensions (dims count the batch as 0, as in torch)."))


def _slice_infer(a, shapes):
    (x,) = shapes
    d = norm_dim("slice", a["dim"], len(x))
    if d == 0:
        raise ShapeError("'slice' cannot cut the batch dimension (dim 0).")
    start, end = a["start"], a["end"]
    if not 0 <= start < end <= x[d]:
        raise ShapeError(f"'slice' needs 0 <= start < end <= {x[d]} on dimension {d}, "
                         f"but got start={start}, end={end}.")
    out = list(x)
    out[d] = end - start
    return tuple(out)


register(OpDef("slice", (Arg("start", "int"), Arg("end", "int"), Arg("dim", "int", 1)), infer=_slice_infer,
               category="shape", channels=Channels("slice"), doc="Keeps indices start..end-1 of one dimension (channel split)."))


# ---- merging -----------------------------------------------------------------------------

def _concat_infer(a, shapes):
    rank = len(shapes[0])
    d = norm_dim("concat", a["dim"], rank)
    if d == 0:
        raise ShapeError("'concat' cannot join along the batch dimension (dim 0).")
    for i, s in enumerate(shapes[1:], 2):
        if len(s) != rank or any(p != q for k, (p, q) in enumerate(zip(shapes[0], s)) if k != d):
            what = "spatial size" if rank == 4 and d == 1 else "shape"
            raise ShapeError(f"'concat' along dimension {d} needs inputs that agree in every other "
                             f"dimension, but the {what} differs: input 1 is {fmt(shapes[0])} and "
                             f"input {i} is {fmt(s)}.")
    out = list(shapes[0])
    out[d] = sum(s[d] for s in shapes)
    return tuple(out)


register(OpDef("concat", (Arg("dim", "int", 1),), arity=None, infer=_concat_infer, category="merge",
               channels=Channels("concat"),
               doc="Concatenates its inputs along a dimension (channels by default)."))


def _add_infer(a, shapes):
    for i, s in enumerate(shapes[1:], 2):
        if tuple(s) != tuple(shapes[0]):
            what = "channel count" if len(s) == len(shapes[0]) and len(s) > 1 and s[1] != shapes[0][1] \
                else "shape"
            fix = "; a 1x1 conv can project one to the other's channels" if what == "channel count" else ""
            raise ShapeError(f"'add' needs inputs of the same shape, but the {what} differs: input 1 is "
                             f"{fmt(shapes[0])} and input {i} is {fmt(s)}{fix}.")
    return shapes[0]


register(OpDef("add", (), arity=None, infer=_add_infer, category="merge", channels=Channels("elementwise"),
               doc="Element-wise sum of inputs of equal shape (residual connections)."))
register(OpDef("mul", (), arity=None, infer=lambda a, s: broadcast("mul", s), category="merge",
               channels=Channels("elementwise"),
               doc="Element-wise product with broadcasting (squeeze-and-excitation gating)."))


# ---- spatial transformer ---------------------------------------------------------------

def _affine_grid_infer(a, shapes):
    (theta,) = shapes
    if tuple(theta[1:]) != (2, 3):
        raise ShapeError(f"'affine_grid' expects theta of shape (N, 2, 3) but got {fmt(theta)}; "
                         "reshape the 6 regression outputs with reshape([2, 3]).")
    size = a["size"]
    if len(size) != 3 or any(d <= 0 for d in size):
        raise ShapeError(f"'affine_grid' needs size=[C, H, W] with positive sizes, but got {size}.")
    return (theta[0], size[1], size[2], 2)


register(OpDef("affine_grid", (Arg("size", "ints"), Arg("align_corners", "bool", False)),
               infer=_affine_grid_infer, category="spatial",
               doc="Sampling grid (N, H, W, 2) from affine transforms theta (N, 2, 3)."))


def _grid_sample_infer(a, shapes):
    if len(shapes) != 2:
        raise ShapeError("'grid_sample' takes two inputs: the image and the sampling grid.")
    x, grid = shapes
    expect_rank("grid_sample", x, (4,), " image (N, C, H, W)")
    if len(grid) != 4 or grid[3] != 2:
        raise ShapeError(f"'grid_sample' expects a grid of shape (N, H, W, 2) but got {fmt(grid)}.")
    return (x[0], x[1], grid[1], grid[2])


register(OpDef("grid_sample", (Arg("mode", "choice:bilinear|nearest", "bilinear"),
                               Arg("padding_mode", "choice:zeros|border|reflection", "zeros"),
                               Arg("align_corners", "bool", False)),
               arity=2, infer=_grid_sample_infer, category="spatial", channels=Channels("sample"),
               doc="Samples the image at the grid's points (bilinear by default)."))

# ---- layer norm, permute, layer scale, stochastic depth (ConvNeXt) --------------------------------

def _layer_norm_infer(a, shapes):
    (x,) = shapes
    if len(x) < 2:
        raise ShapeError(f"'layer_norm' expects at least a 2-D input (N, features) but got {fmt(x)}.")
    d = norm_dim("layer_norm", a["dim"], len(x))
    if d == 0:
        raise ShapeError("'layer_norm' cannot normalise across the batch dimension (dim 0).")
    if d not in (1, len(x) - 1):
        raise ShapeError(f"'layer_norm' normalises dimension 1 (the channels) or the last one ({len(x) - 1}), but "
                         f"dim is {a['dim']}; permute the dimension to normalise to the end first.")
    if not a["eps"] > 0:
        raise ShapeError(f"'layer_norm' needs a positive eps, but eps is {a['eps']}.")
    return x


def _layer_norm_params(a, shapes):
    if not a["affine"]:
        return {}
    c = shapes[0][a["dim"] % len(shapes[0])]
    return {"weight": ParamSpec((c,), "ones"), "bias": ParamSpec((c,), "zeros")}


register(OpDef("layer_norm", (Arg("dim", "int", -1), Arg("eps", "float", 1e-5), Arg("affine", "bool", True)),
               infer=_layer_norm_infer, params=_layer_norm_params, category="normalisation",
               # the mean and variance along `dim` couple its positions: removing a channel changes the others
               channels=Channels("mix"),
               doc="y = (x - mean) / sqrt(var + eps) * weight + bias, mean and (biased) variance over the one "
                   "dimension dim: 1, the channels of (N, C, H, W), as ConvNeXt's LayerNorm2d, or -1, the last "
                   "one, as nn.LayerNorm(C); weight (C,) ones and bias (C,) zeros."))


def _permute_infer(a, shapes):
    (x,) = shapes
    dims = tuple(a["dims"])
    if len(dims) != len(x):
        raise ShapeError(f"'permute' needs one entry per dimension of its input {fmt(x)} ({len(x)}, batch "
                         f"included), but dims has {len(dims)}: {fmt(dims)}.")
    norm = [d + len(x) if d < 0 else d for d in dims]
    if sorted(norm) != list(range(len(x))):
        raise ShapeError(f"'permute' needs every dimension 0 to {len(x) - 1} exactly once, but dims is {fmt(dims)}.")
    if norm[0] != 0:
        raise ShapeError(f"'permute' cannot move the batch dimension: dims must start with 0, but it is {fmt(dims)}.")
    return tuple(x[d] for d in norm)


register(OpDef("permute", (Arg("dims", "ints"),), infer=_permute_infer, category="shape",
               channels=Channels("permute"),
               doc="Reorders the dimensions as torch.permute: output dimension i is input dimension dims[i] "
                   "(dims counts the batch as 0 and must start with it)."))


def _scale_infer(a, shapes):
    (x,) = shapes
    shape, sample = tuple(a["shape"]), tuple(x[1:])
    if any(d < 1 for d in shape):
        raise ShapeError(f"'scale' needs positive sizes in its shape, but got {fmt(shape)}.")
    if len(shape) > len(sample) or any(p not in (1, s) for p, s in zip(reversed(shape), reversed(sample))):
        raise ShapeError(f"'scale' needs a shape that broadcasts against the input without its batch dimension, "
                         f"{fmt(sample)} (each size 1 or the input's, aligned from the right), but got {fmt(shape)}.")
    init = a["init"]
    if isinstance(init, (list, tuple)) and len(init) != numel(shape):
        raise ShapeError(f"'scale' init lists {len(init)} values, but the parameter of shape {fmt(shape)} has "
                         f"{numel(shape)}.")
    return x


def _scale_params(a, shapes):
    from .inits import torch_fans
    shape = tuple(a["shape"])
    fan_in, fan_out = torch_fans(shape)
    return {"weight": ParamSpec(shape, as_param_init(a["init"]), fan_in, fan_out)}


register(OpDef("scale", (Arg("shape", "ints"), Arg("init", "init", 1.0)), infer=_scale_infer, params=_scale_params,
               category="layer", channels=Channels("broadcast", (("weight", None),)), bare="weight",
               doc="y = p * x with a learnable p of the given shape, broadcast against x without its batch "
                   "dimension (ConvNeXt's layer scale: shape (C, 1, 1), init 1e-6); p is stored under the "
                   "layer's own name (features.1.0.layer_scale)."))


def _drop_path_infer(a, shapes):
    if not 0.0 <= a["p"] < 1.0:
        raise ShapeError(f"'drop_path' needs a drop probability of at least 0 and below 1, but p is {a['p']}.")
    return shapes[0]


register(OpDef("drop_path", (Arg("p", "float"), Arg("mode", "choice:row|batch", "row")), infer=_drop_path_infer,
               category="regularisation", channels=Channels("elementwise"),
               doc="Stochastic depth (torchvision.ops.StochasticDepth): in training x * b / (1 - p) with b ~ "
                   "Bernoulli(1 - p) per sample (mode \"row\") or for the whole batch (\"batch\"); identity in "
                   "inference."))


# `input` nodes are made by the `input` statement, never called from a chain.
register(OpDef("input", (Arg("name", "str"),), arity=0, infer=lambda a, s: tuple(a["shape"]),
               category="io", doc="A model input.", channels=Channels("input")))


# ---- types: quantisation and casts (made by passes, not written in specs) ----------------------

def _quantize_types(a, types):
    (x,) = types
    if x.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"'quantize' maps floating-point values to integers, but its input is {x.dtype}.")
    quant = QuantParams(a["scale"], a["zero_point"], a["axis"])
    problem = quant.problem(a["dtype"], x.shape)
    if problem:
        raise ShapeError(f"'quantize' to {a['dtype']} has unusable parameters: {problem}.")
    return a["dtype"], quant


def _dequantize_types(a, types):
    (x,) = types
    if x.quant is None:
        raise ShapeError(f"'dequantize' needs a quantised input, but its input is a plain {x.dtype} tensor.")
    return "float32", None


def _cast_types(a, types):
    (x,) = types
    if x.quant is not None:
        raise ShapeError(f"'cast' of a quantised {x.dtype} tensor would drop its scale and zero point; "
                         "dequantize it instead.")
    return a["dtype"], None


_QDTYPES = "choice:" + "|".join(d for d in DTYPES if d in QUANT_DTYPES)
register(OpDef("quantize", (Arg("dtype", _QDTYPES, "int8"), Arg("scale", "floats"), Arg("zero_point", "ints"),
                            Arg("axis", "int?", None)),
               infer=_same, types=_quantize_types, category="quantisation", internal=True,
               doc="q = saturate(round(x / scale) + zero_point) (ONNX QuantizeLinear), per tensor or per channel."))
register(OpDef("dequantize", (), infer=_same, types=_dequantize_types, category="quantisation", internal=True,
               doc="x = scale * (q - zero_point), with the input's quantisation (ONNX DequantizeLinear)."))
register(OpDef("cast", (Arg("dtype", "choice:" + "|".join(DTYPES)),), infer=_same, types=_cast_types,
               channels=SAME, category="quantisation", internal=True,
               doc="Converts the elements to another dtype (ONNX Cast)."))


# ---- quantised and weight-shared layers (made by the quantize and weight-share passes) -------------
#
# ``qconv``/``qlinear`` are conv and linear layers whose weights are stored as integers: an int8
# ``weight`` (its Param's ``quant``: one scale per output channel along axis 0, or one per tensor,
# zero point 0) and an int32 ``bias`` (scale = input scale * weight scale, zero point 0). They compute
# in floating point on their (dequantised) input, y = conv(x, dequantize(W)) + dequantize(b), which is
# exactly what ONNX's QDQ form spells, DequantizeLinear on each operand of a float Conv: a runtime that
# sees the quantised activation in front (quantize -> dequantize -> qconv) runs it as an integer
# convolution with int32 accumulation. ``shared_conv``/``shared_linear`` hold k-means weight sharing:
# uint8 ``indices`` of the weight's shape into a float32 ``codebook`` of 2^bits centroids,
# W = codebook[indices]. ``clamp`` and ``qclamp`` are per-channel bounds (dimension 1) on a float and on
# a quantised tensor: min(max(x, low_c), high_c).

_CONV_GEOMETRY = (Arg("out_channels", "int"), Arg("kernel_size", "pair"), Arg("stride", "pair", 1),
                  Arg("padding", "pair", 0), Arg("dilation", "pair", 1), Arg("groups", "int", 1))
_PLAIN = {"bias": True, "weight_init": "default", "bias_init": "default"}


def _as_conv(a) -> dict:
    return {**a, **_PLAIN}


def _qconv_params(a, shapes):
    specs = _conv_params(_as_conv(a), shapes)
    w = specs["weight"]
    return {"weight": ParamSpec(w.shape, "zeros", w.fan_in, w.fan_out, dtype="int8"),
            "bias": ParamSpec((a["out_channels"],), "zeros", w.fan_in, w.fan_out, dtype="int32")}


register(OpDef("qconv", _CONV_GEOMETRY, infer=lambda a, s: _conv_infer(_as_conv(a), s), params=_qconv_params,
               macs=lambda a, s, out: _conv_macs(a, s, out), category="quantisation", internal=True,
               doc="Conv with int8 weights (per output channel) and an int32 bias: conv(x, dequantize(W)) + "
                   "dequantize(b) (ONNX QDQ Conv)."))


def _qlinear_params(a, shapes):
    fin = shapes[0][-1]
    return {"weight": ParamSpec((a["out_features"], fin), "zeros", fin, a["out_features"], dtype="int8"),
            "bias": ParamSpec((a["out_features"],), "zeros", fin, a["out_features"], dtype="int32")}


register(OpDef("qlinear", (Arg("out_features", "int"),),
               infer=lambda a, s: _linear_infer({**a, **_PLAIN}, s), params=_qlinear_params,
               macs=lambda a, s, out: numel(out) * s[0][-1], category="quantisation", internal=True,
               doc="Linear with int8 weights (per output feature) and an int32 bias (ONNX QDQ Gemm)."))


def _check_bits(op, a):
    if not 1 <= a["bits"] <= 8:
        raise ShapeError(f"'{op}' stores indices in 8 bits, so bits must be 1 to 8, but it is {a['bits']}.")


def _shared_conv_infer(a, shapes):
    _check_bits("shared_conv", a)
    return _conv_infer({**a, "weight_init": "default", "bias_init": "default"}, shapes)


def _shared_conv_params(a, shapes):
    specs = _conv_params({**a, "weight_init": "default", "bias_init": "default"}, shapes)
    w = specs.pop("weight")
    out = {"indices": ParamSpec(w.shape, "zeros", w.fan_in, w.fan_out, trainable=False, dtype="uint8"),
           "codebook": ParamSpec((2 ** a["bits"],), "zeros", w.fan_in, w.fan_out)}
    out.update(specs)
    return out


register(OpDef("shared_conv", _CONV_GEOMETRY + (Arg("bias", "bool", True), Arg("bits", "int", 8)),
               infer=_shared_conv_infer, params=_shared_conv_params,
               macs=lambda a, s, out: _conv_macs(a, s, out), category="quantisation", internal=True,
               doc="Conv whose weight is codebook[indices]: uint8 indices, 2^bits float centroids (k-means "
                   "weight sharing)."))


def _shared_linear_infer(a, shapes):
    _check_bits("shared_linear", a)
    return _linear_infer({**a, "weight_init": "default", "bias_init": "default"}, shapes)


def _shared_linear_params(a, shapes):
    fin = shapes[0][-1]
    out = {"indices": ParamSpec((a["out_features"], fin), "zeros", fin, a["out_features"], trainable=False,
                                dtype="uint8"),
           "codebook": ParamSpec((2 ** a["bits"],), "zeros", fin, a["out_features"])}
    if a["bias"]:
        out["bias"] = ParamSpec((a["out_features"],), "zeros", fin, a["out_features"])
    return out


register(OpDef("shared_linear", (Arg("out_features", "int"), Arg("bias", "bool", True), Arg("bits", "int", 8)),
               infer=_shared_linear_infer, params=_shared_linear_params,
               macs=lambda a, s, out: numel(out) * s[0][-1], category="quantisation", internal=True,
               doc="Linear whose weight is codebook[indices] (k-means weight sharing)."))


def _clamp_infer(op):
    def rule(a, shapes):
        (x,) = shapes
        if len(x) < 2:
            raise ShapeError(f"'{op}' bounds dimension 1, but its input {fmt(x)} has none.")
        if len(a["low"]) != x[1] or len(a["high"]) != x[1]:
            raise ShapeError(f"'{op}' needs one low and one high bound per channel ({x[1]}), but got "
                             f"{len(a['low'])} and {len(a['high'])}.")
        if any(lo > hi for lo, hi in zip(a["low"], a["high"])):
            raise ShapeError(f"'{op}' needs low <= high for every channel.")
        return x
    return rule


def _qclamp_types(a, types):
    (x,) = types
    if x.quant is None or x.dtype not in ("int8", "uint8") or x.quant.per_channel:
        raise ShapeError(f"'qclamp' bounds the integers of a per-tensor quantised int8 or uint8 tensor, but its "
                         f"input is {x}.")
    lo, hi = INT_RANGES_Q[x.dtype]
    if any(not lo <= v <= hi for v in a["low"] + a["high"]):
        raise ShapeError(f"'qclamp' bounds must lie in the range of {x.dtype}, {lo} to {hi}.")
    return x.dtype, x.quant


register(OpDef("clamp", (Arg("low", "floats"), Arg("high", "floats")), infer=_clamp_infer("clamp"),
               channels=SAME, category="quantisation", internal=True,
               doc="Per-channel bounds min(max(x, low_c), high_c) along dimension 1 (+-inf: unbounded)."))
register(OpDef("qclamp", (Arg("low", "ints"), Arg("high", "ints")), infer=_clamp_infer("qclamp"),
               types=_qclamp_types, channels=SAME, category="quantisation", internal=True,
               doc="Per-channel integer bounds on a quantised tensor; the quantisation passes through."))
