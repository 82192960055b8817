"""How each IR op becomes PyTorch: one :class:`Lowering` per op, read by both PyTorch backends.

An entry holds what the in-memory module (:mod:`.torch_module`) and the
generated source (:mod:`.torch_source`, :mod:`.torch_classes`) need:

* ``module``: the op as a ``torch.nn`` module, when it can be one: the class and
  its constructor arguments (:class:`Module`). In memory such an op is always
  that module; the source writes the constructor call (arguments at their
  defaults left out) for layers with parameters, labelled layers and members of
  sequences, and the functional form for the others;
* ``run`` and ``text``: the op as a function of its operands, as a Python
  callable (in memory, for ops without a module form) and as source text;
* ``inplace``: how the op writes its result over its first operand (``relu_``,
  ``+=``), and ``keeps_output``: whether autograd keeps the op's result for the
  backward pass (or the result is a view of an operand), so that nothing may
  overwrite it. :mod:`.inplace` decides from these two where writing in place
  is safe;
* a few facts that make the source read well: ``alias`` (the result is the
  operand: rename, do not call), ``result_name``/``operand_name``/``skip_name``
  (conventional variable names), ``literals`` (attributes always written as
  constants) and ``by_rank`` (the form depends on the operand's rank).

Facts about channels come from the op registry (``ops.get(op).channels``: its
kind, and ``width``, the attribute that is a new channel count), not from here.
A new op is one :func:`archdsl.ir.ops.register` call, one entry in
:data:`LOWERINGS` and one ONNX rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..diagnostics import ArchError
from ..ir import ops
from ..ir.types import FLOAT_DTYPES, INT_RANGES
from .torch_exprs import Lin, literal
from .torch_tensors import dtype_source, torch_dtype


@dataclass(frozen=True)
class Same:
    """A default equal to another argument's value (a pool's stride defaults to its kernel size)."""
    other: str


@dataclass(frozen=True)
class Module:
    """An op as ``nn.<cls>(*args, **kwargs)``.

    ``args`` and ``kwargs`` are ``(name, default)`` pairs naming the op's attributes
    (or ``features``); a default of ``...`` means always written. Trailing positional
    arguments at their default, and keyword arguments at their default, are left out
    of generated source. ``features`` is ``(name, dim)``: that argument is the size of
    the input's dimension ``dim`` (``in_channels`` = dim 1), or of the dimension an attribute
    names (``("normalized_shape", "dim")``). ``inits`` maps a parameter to the IR initialiser
    that equals PyTorch's own for it (else ``"default"``). A class name that is not in
    ``torch.nn`` is one of :mod:`.torch_layers` (``LayerNorm2d``), whose text the
    generated source carries.
    """
    cls: str | tuple | Callable  # torch.nn class name, ((input rank, name), ...) with None for any rank, or
                                 # (input rank, attrs) -> name
    args: tuple = ()
    kwargs: tuple = ()
    features: tuple | None = None
    inits: tuple = ()
    factory: Callable | None = None    # (graph, nid) -> a subclass of ``cls`` built in memory instead (integer
                                       # or shared weights); the generated source cannot write these layers

    def class_name(self, rank: int, attrs: dict | None = None) -> str:
        if isinstance(self.cls, str):
            return self.cls
        if callable(self.cls):
            return self.cls(rank, attrs)
        return dict(self.cls).get(rank, dict(self.cls).get(None))

    def values(self, attrs: dict, in_shapes: list) -> tuple[list, dict]:
        """The constructor's positional and keyword values for a node (every argument written)."""
        def value(name):
            if self.features and name == self.features[0]:
                return in_shapes[0][self.feature_dim(attrs)]
            return attrs[name]
        return [value(n) for n, _ in self.args], {n: value(n) for n, _ in self.kwargs}

    def feature_dim(self, attrs: dict) -> int:
        """The input dimension whose size the ``features`` argument is."""
        dim = self.features[1]
        return attrs[dim] if isinstance(dim, str) else dim

    def default_init(self, local: str):
        return dict(self.inits).get(local, "default")


@dataclass(frozen=True)
class InPlace:
    """How an op writes its result over its first operand; a module form takes ``inplace=True``.

    ``run(first, *rest)`` is the in-memory function form, ``text(args)`` the source
    expression; with ``augmented`` (``"+="``) ``text`` is the right-hand side of
    ``first += ...``, written when the result keeps the first operand's variable.
    """
    run: Callable | None = None
    text: Callable | None = None
    augmented: str | None = None


@dataclass(frozen=True)
class Lowering:
    module: Module | None = None
    run: Callable | None = None        # (attrs, operand TensorTypes) -> fn(*tensors)
    text: Callable | None = None       # (Src) -> source expression
    inplace: InPlace | None = None
    keeps_output: bool = True          # autograd saves the result, or it is a view: never overwrite it
    alias: bool = False                # the result is the operand itself (identity)
    result_name: str | None = None     # the variable for the result (grid)
    operand_name: str | None = None    # the variable for an operand computed for this op alone (theta)
    skip_name: str | None = None       # the variable for an optional part feeding this op (identity)
    literals: tuple = ()               # attributes written as constants, never constructor arguments
    by_rank: bool = False              # instances with operands of other ranks need another class

    def default_init(self, local: str):
        return self.module.default_init(local) if self.module else "default"


@dataclass
class Src:
    """What a ``text`` form sees: the node's numbers as expressions (``x``), its attributes,
    the variables of its operands and their types."""
    x: dict
    attrs: dict
    args: list
    types: list
    param: str = ""          # the expression of the op's bare parameter (scale's ``self.layer_scale``)

    @property
    def a(self) -> str:
        return self.args[0] if self.args else ""

    def e(self, name: str) -> str:
        return self.x[name].render()

    def const(self, name: str, value) -> bool:
        return is_const(self.x[name], value)


def is_const(expr, value) -> bool:
    return isinstance(expr, Lin) and expr.is_const and expr.const == value and type(expr.const) is type(value)


# ---- function forms in memory --------------------------------------------------------

def _fold(binary):
    def run(a, types):
        def fold(*xs):
            out = xs[0]
            for x in xs[1:]:
                out = binary(out, x)
            return out
        return fold
    return run


def _add_(out, *xs):
    """``out += x`` for each x: the sum written over the first operand (see inplace.py)."""
    for x in xs:
        out = out.add_(x)
    return out


def _view(axis, rank: int) -> tuple | None:
    """The shape that broadcasts per-channel values along ``axis`` (None: per tensor)."""
    if axis is None:
        return None
    shape = [1] * rank
    shape[axis % rank] = -1
    return tuple(shape)


def _quantize(a, types):
    """q = clamp(round_half_even(x / scale) + zero_point, lo, hi) as ``dtype`` (ONNX QuantizeLinear).

    As in the ONNX lowering, x is converted to float32 and divided by the float32
    scale, a true division (by a tensor: for a Python-number divisor torch may
    multiply by its reciprocal instead, on CUDA and in half precision); the zero
    point is added in float32, which is exact over the int8 and uint8 ranges, or in
    float64 for int32, and the sum saturated."""
    view = _view(a["axis"], len(types[0].shape))
    lo, hi = INT_RANGES[a["dtype"]]
    wide = torch.float64 if a["dtype"] == "int32" else torch.float32
    out = torch_dtype(a["dtype"])
    scale, zero = (a["scale"], a["zero_point"]) if view else (a["scale"][0], a["zero_point"][0])

    def quantize(x):
        x = x.float()
        s, z = x.new_tensor(scale), zero
        if view:
            s, z = s.view(view), torch.tensor(zero, device=x.device).view(view)
        return torch.clamp(torch.round(x / s).to(wide) + z, lo, hi).to(out)
    return quantize


def _dequantize(a, types):
    """x = (q - zero_point) * scale in float32 (ONNX DequantizeLinear), with the operand's quantisation.

    ``q - zero_point`` is exact in float32 for int8 and uint8 (float64 for int32), so
    the only rounding is the product's."""
    q = types[0].quant
    view = _view(q.axis, len(types[0].shape))
    wide = torch.float64 if types[0].dtype == "int32" else torch.float32
    scale, zero = (q.scale, q.zero_point) if view else (q.scale[0], q.zero_point[0])

    def dequantize(t):
        s, z = scale, zero
        if view:
            s = torch.tensor(scale, dtype=wide, device=t.device).view(view)
            z = torch.tensor(zero, device=t.device).view(view)
        return ((t.to(wide) - z) * s).float()
    return dequantize


def _bounds_view(values, rank: int, dtype, device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device).view((1, -1) + (1,) * (rank - 2))


def _clamp(a, types):
    """min(max(x, low_c), high_c) along dimension 1 (float bounds, +-inf for an open side; integer bounds
    for ``qclamp``, on the integers)."""
    rank = len(types[0].shape)

    def clamp(x):
        lo = _bounds_view(a["low"], rank, x.dtype, x.device)
        hi = _bounds_view(a["high"], rank, x.dtype, x.device)
        return torch.minimum(torch.maximum(x, lo), hi)
    return clamp


def _clamp_text(c: "Src") -> str:
    rank = len(c.types[0].shape)
    view = ", ".join(["1", "-1"] + ["1"] * (rank - 2))

    def bound(values):
        text = literal([float(v) for v in values] if c.types[0].is_float else list(values))
        text = text.replace("inf", 'float("inf")')
        return f"{c.a}.new_tensor({text}).view({view})"
    return f"torch.minimum(torch.maximum({c.a}, {bound(c.attrs['low'])}), {bound(c.attrs['high'])})"


def _layer_norm_class(rank: int, attrs: dict) -> str:
    """nn.LayerNorm over the last dimension; LayerNorm2d (torch_layers) over dimension 1 before others."""
    return "LayerNorm" if attrs is None or attrs["dim"] % rank == rank - 1 else "LayerNorm2d"


def _layer_norm_text(c: "Src") -> str:
    """F.layer_norm without parameters (a labelled or affine layer norm is a module)."""
    eps = "" if c.const("eps", 1e-5) else f", eps={c.e('eps')}"
    rank = len(c.types[0].shape)
    if c.attrs["dim"] % rank == rank - 1:
        return f"F.layer_norm({c.a}, ({c.e('normalized_shape')},){eps})"
    return f"F.layer_norm({c.a}.movedim(1, -1), ({c.e('normalized_shape')},){eps}).movedim(-1, 1)"


def _permute_text(c: "Src") -> str:
    dims = c.x["dims"]
    text = ", ".join(literal(d) for d in dims.const) if dims.is_const else f"*{c.e('dims')}"
    return f"{c.a}.permute({text})"


def _drop_path_text(c: "Src") -> str:
    return f"StochasticDepth.drop({c.a}, {c.e('p')}, {literal(c.attrs['mode'])}, self.training)"


def init_tensor(t: torch.Tensor, init, fan_in: int, fan_out: int) -> None:
    """Give ``t`` the values of the IR initialiser ``init`` by ``torch.nn.init`` (a bare parameter built
    without the IR's weights): an :class:`~archdsl.ir.inits.Initialiser`, ``"zeros"``/``"ones"`` or values."""
    from ..ir.inits import Initialiser
    with torch.no_grad():
        if isinstance(init, (list, tuple)):
            t.copy_(torch.tensor([float(v) for v in init]).view_as(t))
        elif init in ("zeros", "ones"):
            t.fill_(0.0 if init == "zeros" else 1.0)
        elif isinstance(init, Initialiser) and init.name == "constant":
            t.fill_(init["value"])
        elif isinstance(init, Initialiser) and init.name == "uniform":
            torch.nn.init.uniform_(t, init["a"], init["b"])
        elif isinstance(init, Initialiser) and init.name == "normal":
            torch.nn.init.normal_(t, init["mean"], init["std"])
        elif isinstance(init, Initialiser) and init.name == "trunc_normal":
            torch.nn.init.trunc_normal_(t, init["mean"], init["std"], init["a"], init["b"])
        elif isinstance(init, Initialiser) and init.name == "kaiming_normal":
            torch.nn.init.normal_(t, 0.0, init.spread(fan_in, fan_out))
        elif isinstance(init, Initialiser) and init.name == "kaiming_uniform":
            bound = init.spread(fan_in, fan_out)
            torch.nn.init.uniform_(t, -bound, bound)
        else:
            bound = 1.0 / fan_in ** 0.5 if fan_in > 0 else 0.0       # "default", as conv and linear
            torch.nn.init.uniform_(t, -bound, bound)


def _cast(a, types):
    dtype = torch_dtype(a["dtype"])
    return lambda x: x.to(dtype)


# ---- function forms in source ----------------------------------------------------------

def _pool_text(fn: str):
    def text(c: Src) -> str:
        parts = [c.a, c.e("kernel_size")]
        if c.x["stride"] != c.x["kernel_size"] or not c.const("padding", 0):
            parts.append(c.e("stride"))
        if not c.const("padding", 0):
            parts.append(c.e("padding"))
        if "dilation" in c.x and not c.const("dilation", 1):
            parts.append(f"dilation={c.e('dilation')}")
        if c.attrs["ceil_mode"]:
            parts.append("ceil_mode=True")
        if not c.attrs.get("count_include_pad", True):
            parts.append("count_include_pad=False")
        return f"{fn}({', '.join(parts)})"
    return text


def _reshape_text(c: Src) -> str:
    shape = c.x["shape"]
    dims = ", ".join(literal(d) for d in shape.const) if shape.is_const else f"*{c.e('shape')}"
    return f"{c.a}.reshape({c.a}.size(0), {dims})"


def _slice_text(c: Src) -> str:
    if c.const("dim", 1):
        if c.x["start"].is_const and c.x["end"].is_const:
            return f"{c.a}[:, {c.e('start')}:{c.e('end')}]"
        return f"{c.a}[:, {c.e('start')} : {c.e('end')}]"
    return f"{c.a}.narrow({c.e('dim')}, {c.e('start')}, {c.e('end')} - {c.e('start')})"


def _grid_sample_text(c: Src) -> str:
    kw = []
    if c.attrs["mode"] != "bilinear":
        kw.append(f'mode="{c.attrs["mode"]}"')
    if c.attrs["padding_mode"] != "zeros":
        kw.append(f'padding_mode="{c.attrs["padding_mode"]}"')
    kw.append(f"align_corners={c.attrs['align_corners']}")
    return f"F.grid_sample({', '.join(c.args + kw)})"


def _per_channel(values, view, device: str, dtype: str = "") -> str:
    """``torch.tensor([...], device=...).view(...)``: per-channel constants broadcast along their axis."""
    return (f"torch.tensor({literal(list(values))}{dtype}, device={device}.device)"
            f".view({', '.join(str(d) for d in view)})")


def _quantize_text(c: Src) -> str:
    a = c.attrs
    view = _view(a["axis"], len(c.types[0].shape))
    lo, hi = INT_RANGES[a["dtype"]]
    wide = ".double()" if a["dtype"] == "int32" else ""
    x, f32 = (c.a, "") if c.types[0].dtype == "float32" else (f"{c.a}.float()", ", dtype=torch.float32")
    if view:
        scale = f"{c.a}.new_tensor({literal(list(a['scale']))}{f32}).view({', '.join(map(str, view))})"
        zero = " + " + _per_channel(a["zero_point"], view, c.a)
    else:
        scale = f"{c.a}.new_tensor({literal(a['scale'][0])}{f32})"
        zero = f" + {a['zero_point'][0]}" if a["zero_point"][0] else ""
    return f"torch.clamp(torch.round({x} / {scale}){wide}{zero}, {lo}, {hi}).to({dtype_source(a['dtype'])})"


def _dequantize_text(c: Src) -> str:
    t = c.types[0]
    q = t.quant
    view = _view(q.axis, len(t.shape))
    wide = t.dtype == "int32"
    if view:
        zero = " - " + _per_channel(q.zero_point, view, c.a)
        scale = _per_channel(q.scale, view, c.a, ", dtype=torch.float64" if wide else "")
    else:
        zero = f" - {q.zero_point[0]}" if q.zero_point[0] else ""
        scale = literal(q.scale[0])
    diff = f"{c.a}.double(){zero}" if wide else f"{c.a}.float(){zero}"
    prod = f"({diff}) * {scale}" if zero else f"{diff} * {scale}"
    return f"({prod}).float()" if wide else prod


# ---- the table ---------------------------------------------------------------------------

_INPLACE_RELU = InPlace(text=lambda args: f"torch.relu_({args[0]})")
_INPLACE_ADD = InPlace(run=_add_, text=lambda args: " + ".join(args[1:]), augmented="+=")
_POOL_ARGS = (("kernel_size", ...), ("stride", Same("kernel_size")), ("padding", 0))


def _simple(cls: str, fn: str, **kw) -> Lowering:
    """An activation without arguments: ``nn.<cls>()`` or ``<fn>(x)``."""
    return Lowering(Module(cls), text=lambda c: f"{fn}({c.a})", **kw)


LOWERINGS: dict[str, Lowering] = {
    "conv": Lowering(
        Module("Conv2d", (("in_channels", ...), ("out_channels", ...)),
               (("kernel_size", ...), ("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1),
                ("bias", True)), features=("in_channels", 1)),
        keeps_output=False),
    "linear": Lowering(
        Module("Linear", (("in_features", ...), ("out_features", ...)), (("bias", True),),
               features=("in_features", -1)),
        keeps_output=False, by_rank=True),
    "bn": Lowering(
        Module(((4, "BatchNorm2d"), (None, "BatchNorm1d")), (("num_features", ...),),
               (("eps", 1e-5), ("momentum", 0.1), ("affine", True)), features=("num_features", 1),
               inits=(("weight", "ones"), ("bias", "zeros"), ("running_mean", "zeros"), ("running_var", "ones"),
                      ("num_batches_tracked", "zeros"))),
        keeps_output=False, by_rank=True),
    "relu": _simple("ReLU", "torch.relu", inplace=_INPLACE_RELU),
    "relu6": _simple("ReLU6", "F.relu6"),
    "sigmoid": _simple("Sigmoid", "torch.sigmoid"),
    "tanh": _simple("Tanh", "torch.tanh"),
    "gelu": _simple("GELU", "F.gelu"),
    "silu": _simple("SiLU", "F.silu"),
    "hardswish": _simple("Hardswish", "F.hardswish"),
    "hardsigmoid": _simple("Hardsigmoid", "F.hardsigmoid"),
    "identity": Lowering(Module("Identity"), text=lambda c: c.a, alias=True),
    "leaky_relu": Lowering(Module("LeakyReLU", kwargs=(("negative_slope", 0.01),)),
                           text=lambda c: f"F.leaky_relu({c.a}, {c.e('negative_slope')})"),
    "elu": Lowering(Module("ELU", kwargs=(("alpha", 1.0),)), text=lambda c: f"F.elu({c.a}, {c.e('alpha')})"),
    "softmax": Lowering(Module("Softmax", kwargs=(("dim", ...),)),
                        text=lambda c: f"F.softmax({c.a}, dim={c.e('dim')})"),
    "log_softmax": Lowering(Module("LogSoftmax", kwargs=(("dim", ...),)),
                            text=lambda c: f"F.log_softmax({c.a}, dim={c.e('dim')})"),
    "dropout": Lowering(Module("Dropout", kwargs=(("p", 0.5),)),
                        text=lambda c: f"F.dropout({c.a}, {c.e('p')}, self.training)"),
    "dropout2d": Lowering(Module("Dropout2d", kwargs=(("p", 0.5),)),
                          text=lambda c: f"F.dropout2d({c.a}, {c.e('p')}, self.training)"),
    "lrn": Lowering(Module("LocalResponseNorm", (("size", ...),), (("alpha", 1e-4), ("beta", 0.75), ("k", 1.0))),
                    text=lambda c: f"F.local_response_norm({c.a}, {c.e('size')}, {c.e('alpha')}, {c.e('beta')}, "
                                   f"{c.e('k')})"),
    "maxpool": Lowering(Module("StridedMaxPool2d", kwargs=_POOL_ARGS + (("dilation", 1), ("ceil_mode", False))),
                        text=_pool_text("StridedMaxPool2d.pool"), keeps_output=False),
    "avgpool": Lowering(Module("StridedAvgPool2d",
                               kwargs=_POOL_ARGS + (("ceil_mode", False), ("count_include_pad", True))),
                        text=_pool_text("StridedAvgPool2d.pool"), keeps_output=False),
    "adaptive_avgpool": Lowering(Module("AdaptiveAvgPool2d", (("output_size", ...),)),
                                 text=lambda c: f"F.adaptive_avg_pool2d({c.a}, {c.e('output_size')})",
                                 keeps_output=False),
    "adaptive_maxpool": Lowering(Module("AdaptiveMaxPool2d", (("output_size", ...),)),
                                 text=lambda c: f"F.adaptive_max_pool2d({c.a}, {c.e('output_size')})"),
    "flatten": Lowering(Module("Flatten", (("start_dim", 1), ("end_dim", -1))), by_rank=True,
                        text=lambda c: f"torch.flatten({c.a}, {c.e('start_dim')}"
                                       + ("" if c.const("end_dim", -1) else f", {c.e('end_dim')}") + ")"),
    "reshape": Lowering(run=lambda a, t: (lambda x: x.reshape(x.shape[0], *a["shape"])), text=_reshape_text),
    "transpose": Lowering(run=lambda a, t: (lambda x: x.transpose(a["dim0"], a["dim1"])),
                          text=lambda c: f"{c.a}.transpose({c.e('dim0')}, {c.e('dim1')})"),
    "slice": Lowering(run=lambda a, t: (lambda x: x.narrow(a["dim"], a["start"], a["end"] - a["start"])),
                      text=_slice_text),
    "concat": Lowering(run=lambda a, t: (lambda *xs: torch.cat(xs, a["dim"])), keeps_output=False,
                       text=lambda c: f"torch.cat([{', '.join(c.args)}], {c.e('dim')})"),
    "add": Lowering(run=_fold(torch.add), text=lambda c: " + ".join(c.args), inplace=_INPLACE_ADD,
                    keeps_output=False, skip_name="identity"),
    "mul": Lowering(run=_fold(torch.mul), text=lambda c: " * ".join(c.args)),
    "affine_grid": Lowering(
        run=lambda a, t: (lambda th: F.affine_grid(th, [th.shape[0], *a["size"]], align_corners=a["align_corners"])),
        text=lambda c: f"F.affine_grid({c.a}, [{c.a}.size(0), {', '.join(literal(d) for d in c.attrs['size'])}], "
                       f"align_corners={c.attrs['align_corners']})",
        result_name="grid", operand_name="theta"),
    "grid_sample": Lowering(
        run=lambda a, t: (lambda x, g: F.grid_sample(x, g, mode=a["mode"], padding_mode=a["padding_mode"],
                                                     align_corners=a["align_corners"])),
        text=_grid_sample_text),
    "quantize": Lowering(run=_quantize, text=_quantize_text, literals=("scale", "zero_point", "axis")),
    "dequantize": Lowering(run=_dequantize, text=_dequantize_text),
    "cast": Lowering(run=_cast, text=lambda c: f"{c.a}.to({dtype_source(c.attrs['dtype'])})"),
    "qconv": Lowering(
        Module("Conv2d", (("in_channels", ...), ("out_channels", ...)),
               (("kernel_size", ...), ("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1)),
               features=("in_channels", 1), factory=lambda g, nid: _quant().QuantConv2d.from_graph(g, nid)),
        keeps_output=False),
    "qlinear": Lowering(
        Module("Linear", (("in_features", ...), ("out_features", ...)), features=("in_features", -1),
               factory=lambda g, nid: _quant().QuantLinear.from_graph(g, nid)),
        keeps_output=False, by_rank=True),
    "shared_conv": Lowering(
        Module("Conv2d", (("in_channels", ...), ("out_channels", ...)),
               (("kernel_size", ...), ("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1),
                ("bias", True)), features=("in_channels", 1),
               factory=lambda g, nid: _quant().SharedConv2d.from_graph(g, nid)),
        keeps_output=False),
    "shared_linear": Lowering(
        Module("Linear", (("in_features", ...), ("out_features", ...)), (("bias", True),),
               features=("in_features", -1), factory=lambda g, nid: _quant().SharedLinear.from_graph(g, nid)),
        keeps_output=False, by_rank=True),
    "layer_norm": Lowering(
        Module(_layer_norm_class, (("normalized_shape", ...), ("eps", 1e-5), ("affine", True)),
               features=("normalized_shape", "dim"), inits=(("weight", "ones"), ("bias", "zeros"))),
        text=_layer_norm_text, literals=("dim",)),
    "permute": Lowering(Module("Permute", (("dims", ...),)), text=_permute_text),
    "scale": Lowering(run=lambda a, t: (lambda p, x: p * x), text=lambda c: f"{c.param} * {c.a}",
                      keeps_output=False),
    "drop_path": Lowering(Module("StochasticDepth", (("p", ...), ("mode", "row"))), text=_drop_path_text),
    "clamp": Lowering(run=_clamp, text=_clamp_text),
    "qclamp": Lowering(run=_clamp, text=_clamp_text),
}


def _quant():
    from . import torch_quant
    return torch_quant


def get(op: str) -> Lowering | None:
    return LOWERINGS.get(op)


def lowering(op: str) -> Lowering:
    """The op's entry; ArchError for an op the PyTorch backends cannot lower."""
    low = LOWERINGS.get(op)
    if low is None:
        raise ArchError(f"The PyTorch backend has no rule for op '{op}'; add an entry for it to LOWERINGS in "
                        "archdsl/backends/torch_lowering.py.")
    return low


def factory_dtype(graph, nid: int) -> str | None:
    """The float dtype a layer's module is built with (``dtype=`` of ``nn.Conv2d``...); None for float32.

    Parameters the registry declares floating point must all be of one float dtype;
    the others (``num_batches_tracked``, int64) keep the registry's dtype."""
    d = graph.data(nid)
    if not d["params"]:
        return None
    specs = ops.param_specs(d["op"], d["attrs"], [graph.data(s)["shape"] for s in d["inputs"]])
    floats = {}
    for local, pname in d["params"].items():
        p, spec = graph.params[pname], specs.get(local)
        fixed = spec is not None and spec.dtype not in FLOAT_DTYPES
        if fixed and p.dtype != spec.dtype:
            raise ArchError(f"Parameter {pname} is {p.dtype}, but PyTorch keeps it as {spec.dtype}; "
                            f"give it dtype {spec.dtype}.")
        if not fixed and p.dtype not in FLOAT_DTYPES:
            raise ArchError(f"Parameter {pname} is {p.dtype}, but the PyTorch backends build '{d['op']}' from "
                            "floating-point parameters; keep it float, or store it dequantized and insert a "
                            "'quantize' node where integer values are wanted.")
        if not fixed:
            floats.setdefault(p.dtype, pname)
    if len(floats) > 1:
        names = " and ".join(f"{n} is {t}" for t, n in sorted(floats.items()))
        raise ArchError(f"The parameters of @{d['scope']} have different float dtypes ({names}); a PyTorch "
                        "module holds one, so cast them to one dtype.")
    dtype = next(iter(floats), "float32")
    return None if dtype == "float32" else dtype
