"""PyTorch layers for the quantised and weight-shared ops (``qconv``, ``qlinear``, ``shared_conv``, ``shared_linear``).

They subclass ``nn.Conv2d`` and ``nn.Linear`` (same constructor arguments and ``forward``), and keep the
IR's parameter names and dtypes in their ``state_dict``, so ``to_torch`` loads the IR's arrays and
``archdsl.from_torch`` reads them back:

* :class:`QuantConv2d` / :class:`QuantLinear` (``qconv``, ``qlinear``): the ``state_dict`` holds the int8
  ``weight`` and the int32 ``bias``; the module holds them as float parameters equal to their
  dequantised values, ``q * scale`` in float32, which is what ONNX's ``DequantizeLinear`` computes, so in
  eval mode the layer is the float convolution the QDQ graph describes, bit for bit. In training mode
  the parameters are fake-quantised on the fly (``round(w / s) * s`` within the integer range, with a
  straight-through gradient), so quantisation-aware fine-tuning moves the float values and saving
  rounds them to integers again.
* :func:`fake_quant_module`: the whole quantised graph with float fake-quantisation in place of the
  integer tensors (straight-through gradients), for quantisation-aware fine-tuning; eval-mode outputs
  equal the integer module's.
* :func:`int8_module`: the quantised graph on PyTorch's own integer kernels (``torch.ao.nn.quantized``,
  ``quantized::`` ops; oneDNN/FBGEMM on x86), for inference; the same groups as the ONNX QOperator form.
* :class:`SharedConv2d` / :class:`SharedLinear` (``shared_conv``, ``shared_linear``): uint8 ``indices``
  (a buffer) into a float ``codebook`` (a parameter); the weight is ``codebook[indices]``, rebuilt at
  every forward, so training the codebook fine-tunes the shared centroids (Deep Compression).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..ir.types import INT_RANGES
from .torch_tensors import torch_dtype


def fake_quant(x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """``clamp(round(x / scale), lo, hi) * scale`` with a straight-through gradient (identity inside the range)."""
    q = torch.clamp(torch.round(x / scale), lo, hi) * scale
    return x + (q - x).detach()


class _IntegerParams:
    """Float parameters that stand for integer ones: ``_ints`` maps a name to ``(dtype, scales, axis, lo, hi)``
    (weights stay in the symmetric range the quantiser used, ``graph.meta["quantize"]["weight_max"]``)."""

    _ints: dict

    def _scale(self, name: str, like: torch.Tensor) -> torch.Tensor:
        dtype, scales, axis, _, _ = self._ints[name]
        s = torch.tensor(scales, dtype=torch.float32, device=like.device)
        if axis is None:
            return s.reshape(())
        shape = [1] * like.dim()
        shape[axis] = -1
        return s.view(shape)

    def _quantised(self, name: str) -> torch.Tensor:
        p = getattr(self, name)
        if not self.training:
            return p
        _, _, _, lo, hi = self._ints[name]
        return fake_quant(p, self._scale(name, p), lo, hi)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for name, (dtype, _, _, lo, hi) in self._ints.items():
            p = getattr(self, name).detach()
            q = torch.clamp(torch.round(p.double() / self._scale(name, p).double()), lo, hi)
            destination[prefix + name] = q.to(torch_dtype(dtype))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        assign = local_metadata.get("assign_to_params_buffers", False)
        for name in self._ints:
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
                continue
            q = state_dict[key]
            param = self._parameters[name]
            if tuple(q.shape) != tuple(param.shape):
                error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(q.shape)}, the "
                                  f"shape in the current model is {tuple(param.shape)}.")
                continue
            value = q.float() * self._scale(name, q)         # DequantizeLinear: float32(q - 0) * scale
            if assign:
                self._parameters[name] = nn.Parameter(value, requires_grad=param.requires_grad)
            else:
                with torch.no_grad():
                    param.copy_(value)
        if strict:
            for key in state_dict:
                if key.startswith(prefix) and "." not in key[len(prefix):] and key[len(prefix):] not in self._ints:
                    unexpected_keys.append(key)


def _ints_of(graph, nid: int) -> dict:
    d = graph.data(nid)
    top = int(graph.meta.get("quantize", {}).get("weight_max", 127))
    out = {}
    for local in ("weight", "bias"):
        p = graph.params[d["params"][local]]
        lo, hi = (-top, top) if local == "weight" else INT_RANGES[p.dtype]
        out[local] = (p.dtype, tuple(p.quant.scale), p.quant.axis, lo, hi)
    return out


class QuantConv2d(_IntegerParams, nn.Conv2d):
    """``qconv``: a Conv2d whose weight and bias are dequantised integers (see the module docstring)."""

    def __init__(self, *args, ints: dict, **kwargs):
        super().__init__(*args, bias=True, **kwargs)
        self._ints = ints

    def forward(self, x):
        return self._conv_forward(x, self._quantised("weight"), self._quantised("bias"))

    @classmethod
    def from_graph(cls, graph, nid: int) -> "QuantConv2d":
        d, a = graph.data(nid), graph.data(nid)["attrs"]
        return cls(graph.data(d["inputs"][0])["shape"][1], a["out_channels"], a["kernel_size"], stride=a["stride"],
                   padding=a["padding"], dilation=a["dilation"], groups=a["groups"], ints=_ints_of(graph, nid))


class QuantLinear(_IntegerParams, nn.Linear):
    """``qlinear``: a Linear whose weight and bias are dequantised integers."""

    def __init__(self, *args, ints: dict, **kwargs):
        super().__init__(*args, bias=True, **kwargs)
        self._ints = ints

    def forward(self, x):
        return F.linear(x, self._quantised("weight"), self._quantised("bias"))

    @classmethod
    def from_graph(cls, graph, nid: int) -> "QuantLinear":
        d = graph.data(nid)
        return cls(graph.data(d["inputs"][0])["shape"][-1], d["attrs"]["out_features"], ints=_ints_of(graph, nid))


class _Codebook:
    """``indices`` (uint8 buffer) into ``codebook`` (parameter): weight = codebook[indices]."""

    def _shared(self, bits: int) -> None:
        shape = self.weight.shape
        del self.weight
        self.register_buffer("indices", torch.zeros(shape, dtype=torch.uint8))
        self.codebook = nn.Parameter(torch.zeros(2 ** bits))

    def shared_weight(self) -> torch.Tensor:
        """``codebook[indices]``; in eval mode kept until the codebook or the indices change."""
        if self.training or torch.is_grad_enabled():
            return self.codebook[self.indices.long()]
        key = (id(self.codebook), self.codebook._version, id(self.indices), self.indices._version)
        cache = self.__dict__.get("_weight_cache")
        if cache is None or cache[0] != key:
            cache = (key, self.codebook[self.indices.long()])
            self.__dict__["_weight_cache"] = cache
        return cache[1]


class SharedConv2d(_Codebook, nn.Conv2d):
    """``shared_conv``: a Conv2d whose weight is ``codebook[indices]``."""

    def __init__(self, *args, bits: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._shared(bits)

    def forward(self, x):
        return self._conv_forward(x, self.shared_weight(), self.bias)

    @classmethod
    def from_graph(cls, graph, nid: int) -> "SharedConv2d":
        d, a = graph.data(nid), graph.data(nid)["attrs"]
        return cls(graph.data(d["inputs"][0])["shape"][1], a["out_channels"], a["kernel_size"], stride=a["stride"],
                   padding=a["padding"], dilation=a["dilation"], groups=a["groups"], bias=a["bias"], bits=a["bits"])


class SharedLinear(_Codebook, nn.Linear):
    """``shared_linear``: a Linear whose weight is ``codebook[indices]``."""

    def __init__(self, *args, bits: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._shared(bits)

    def forward(self, x):
        return F.linear(x, self.shared_weight(), self.bias)

    @classmethod
    def from_graph(cls, graph, nid: int) -> "SharedLinear":
        d, a = graph.data(nid), graph.data(nid)["attrs"]
        return cls(graph.data(d["inputs"][0])["shape"][-1], a["out_features"], bias=a["bias"], bits=a["bits"])


# ---- a float twin for quantisation-aware training --------------------------------------------------------

def _fq_activation(quant, dtype: str, rank: int):
    """``quantize`` followed by ``dequantize`` as one float function: ``(clamp(round(x / s) + z) - z) s``,
    the same values as the integer pair, with a straight-through gradient inside the range."""
    lo, hi = INT_RANGES[dtype]
    shape = None
    if quant.axis is not None:
        shape = [1] * rank
        shape[quant.axis % rank] = -1

    def fq(x):
        x = x.float()
        s = x.new_tensor(quant.scale if shape else quant.scale[0])
        z = x.new_tensor(quant.zero_point if shape else quant.zero_point[0])
        if shape:
            s, z = s.view(shape), z.view(shape)
        q = torch.clamp(torch.round(x / s) + z, lo, hi)
        out = (q - z) * s
        inside = ((q > lo) & (q < hi)).to(x.dtype)
        return out.detach() + (x - x.detach()) * inside
    return fq


def fake_quant_module(graph) -> nn.Module:
    """``archdsl.to_torch(graph)`` with every ``quantize``/``dequantize`` pair run as one float fake-quant
    (straight-through gradients) and ``qclamp`` as a float clamp to the same grid points: in eval mode it
    computes exactly the integer module's values, and it trains (quantisation-aware fine-tuning). Its
    ``state_dict`` is the IR's, so ``archdsl.from_torch(graph, module)`` takes the tuned weights back."""
    from .torch_module import ArchModule
    module = ArchModule(graph)
    program = []
    for nid, fn, ins, free in module._program:
        d = graph.data(nid)
        if d["op"] == "quantize":
            fn = _fq_activation(d["quant"], d["dtype"], len(d["shape"]))
        elif d["op"] == "dequantize":
            fn = _identity
        elif d["op"] == "qclamp":
            q = d["quant"]
            s, z = q.scale[0], q.zero_point[0]
            low = tuple(s * (v - z) for v in d["attrs"]["low"])
            high = tuple(s * (v - z) for v in d["attrs"]["high"])
            fn = _float_clamp(low, high, len(d["shape"]))
        program.append((nid, fn, ins, free))
    module._program = program
    return module


def _identity(x):
    return x


def _float_clamp(low, high, rank: int):
    view = (1, -1) + (1,) * (rank - 2)

    def clamp(x):
        return torch.minimum(torch.maximum(x, x.new_tensor(low).view(view)), x.new_tensor(high).view(view))
    return clamp


# ---- a real int8 module: PyTorch's quantized kernels (x86: oneDNN / FBGEMM) ----------------------------------

def int8_module(graph, engine: str | None = None, channels_last: bool = True) -> nn.Module:
    """The quantised graph on PyTorch's integer kernels: every group of the QOperator form
    (:func:`archdsl.backends.onnx_qoperator.groups`) is one quantized operator
    (``torch.ao.nn.quantized.Conv2d``/``ConvReLU2d``, ``Linear``, ``quantized::add``/``add_relu``,
    ``quantized::cat``, pooling on quantized tensors), ``qclamp`` bounds the integers, the rest runs as
    in ``to_torch``. Activations must be uint8 (``quint8``); ``engine`` (default: ``x86`` where PyTorch
    has it) is set as ``torch.backends.quantized.engine``. Inference only; integer model outputs come back
    as uint8 tensors, as in the IR. PyTorch 2.14 deprecates its quantized tensors (``quint8`` and the
    ``torch.ao.nn.quantized`` modules), which this module is built on; they still run."""
    from ..diagnostics import ArchError
    from .onnx_qoperator import groups
    from .torch_module import ArchModule
    engines = torch.backends.quantized.supported_engines
    engine = engine or ("x86" if "x86" in engines else "fbgemm" if "fbgemm" in engines else None)
    if engine not in engines:
        raise ArchError(f"PyTorch has no quantized engine '{engine}' here (it has {', '.join(engines)}).")
    acts = {graph.data(n)["dtype"] for n in graph.node_ids() if graph.data(n)["op"] == "quantize"}
    if acts - {"uint8"}:
        raise ArchError("The int8 PyTorch path runs uint8 activations (quint8); quantize with activations=u8.")
    torch.backends.quantized.engine = engine
    found, skip = groups(graph)
    base = ArchModule(graph).eval()
    import warnings
    with warnings.catch_warnings():            # PyTorch 2.14 deprecates quantized tensors (still supported)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        module = _Int8Module(base, graph, found, skip, channels_last)
    return module.eval()


def _qweight(p) -> torch.Tensor:
    w = torch.from_numpy(p.value.copy())
    q = p.quant
    if q.axis is None:
        return torch._make_per_tensor_quantized_tensor(w, q.scale[0], 0)
    return torch._make_per_channel_quantized_tensor(w, torch.tensor(q.scale, dtype=torch.float64),
                                                    torch.zeros(len(q.scale), dtype=torch.int64), q.axis)


def _float_bias(p) -> torch.Tensor:
    """The int32 bias as the float the quantized kernels take (they requantise it at s_x s_w)."""
    return torch.from_numpy((p.value.astype(np.float64) * np.asarray(p.quant.scale, np.float64)).astype(np.float32))


class _Int8Module(nn.Module):
    def __init__(self, base, graph, found, skip, channels_last):
        super().__init__()
        import torch.ao.nn.intrinsic.quantized as nniq
        import torch.ao.nn.quantized as nnq
        self.base, self.channels_last = base, channels_last
        self.layers = nn.ModuleDict()
        self._inputs, self._outputs = list(graph.inputs), list(graph.outputs)
        self._int_outputs = {o for o in graph.outputs if graph.data(o)["dtype"] in ("uint8", "int8")}
        steps = dict((nid, (fn, ins)) for nid, fn, ins, _ in base._program)
        program = []
        for nid in graph.node_ids():
            d = graph.data(nid)
            if d["op"] == "input" or nid in skip:
                continue
            grp = found.get(nid)
            if grp is not None:
                program.append((nid, self._group(graph, grp, nnq, nniq, steps), grp.ins))
                continue
            fn, ins = steps[nid]
            if d["op"] == "quantize":
                q = d["quant"]
                fn = _quantizer(q.scale[0], q.zero_point[0], channels_last and len(d["shape"]) == 4)
            elif d["op"] == "dequantize":
                fn = _dequantize
            elif d["op"] == "qclamp":
                fn = _int_clamp(d["attrs"]["low"], d["attrs"]["high"], len(d["shape"]))
            program.append((nid, fn, ins))
        last = {}
        for k, (nid, _, ins) in enumerate(program):
            for i in ins:
                last[i] = k
        self._program = [(nid, fn, ins, tuple(i for i in set(ins) if last[i] == k and i not in self._outputs))
                         for k, (nid, fn, ins) in enumerate(program)]

    def _group(self, graph, grp, nnq, nniq, steps):
        g = graph
        q = g.data(grp.q)["quant"] if grp.q is not None else None
        main = g.data(grp.main)
        a = main["attrs"]
        key = main["scope"].replace(".", "__")
        if grp.kind == "conv":
            cin = g.data(main["inputs"][0])["shape"][1]
            cls = nniq.ConvReLU2d if grp.relu is not None else nnq.Conv2d
            m = cls(cin, a["out_channels"], a["kernel_size"], a["stride"], a["padding"], a["dilation"], a["groups"])
            m.set_weight_bias(_qweight(g.params[main["params"]["weight"]]),
                              _float_bias(g.params[main["params"]["bias"]]))
            m.scale, m.zero_point = float(q.scale[0]), int(q.zero_point[0])
            self.layers[key] = m
            return m
        if grp.kind == "gemm":
            if q is None:                      # the classifier: float logits from the dequantised input
                fn, _ = steps[grp.main]
                return lambda x: fn(x.dequantize())
            cls = nniq.LinearReLU if grp.relu is not None else nnq.Linear
            m = cls(g.data(main["inputs"][0])["shape"][-1], a["out_features"])
            m.set_weight_bias(_qweight(g.params[main["params"]["weight"]]),
                              _float_bias(g.params[main["params"]["bias"]]))
            m.scale, m.zero_point = float(q.scale[0]), int(q.zero_point[0])
            self.layers[key] = m
            return m
        s, z = float(q.scale[0]), int(q.zero_point[0])
        if grp.kind == "add":
            op = torch.ops.quantized.add_relu if grp.relu is not None else torch.ops.quantized.add
            return lambda x, y: op(x, y, s, z)
        if grp.kind == "concat":
            dim = a["dim"]
            return lambda *xs: torch.ops.quantized.cat(list(xs), dim, s, z)
        if grp.kind in ("avgpool", "global_avgpool"):
            fn, _ = steps[grp.main]                # pooling keeps the input's grid; then to the output's
            requant = _quantizer(s, z)
            return lambda x: requant(fn(x).dequantize())
        fn, _ = steps[grp.main]                    # max pooling, flatten, reshape: on the integers
        return fn

    def forward(self, *inputs):
        env = dict(zip(self._inputs, inputs))
        for nid, fn, ins, free in self._program:
            env[nid] = fn(*[env[i] for i in ins])
            for i in free:
                del env[i]
        outs = [env[o].int_repr() if o in self._int_outputs else env[o] for o in self._outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _quantizer(scale: float, zero: int, channels_last: bool = False):
    """Float to quint8; 4-D results channels-last (NHWC), the layout the x86 kernels compute in, which
    every quantized op after it keeps."""
    def quantize(x):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.quantize_per_tensor(x.float(), scale, zero, torch.quint8)
    return quantize


def _dequantize(x):
    return x.dequantize()


def _int_clamp(low, high, rank: int):
    """``qclamp`` on the integers of a quint8 tensor (quantized tensors have no per-channel clamp): a copy of
    the integers bounded in place, only on the sides where some channel is bounded."""
    view = (1, -1) + (1,) * (rank - 2)
    lo = torch.tensor(low, dtype=torch.uint8).view(view) if any(v > 0 for v in low) else None
    hi = torch.tensor(high, dtype=torch.uint8).view(view) if any(v < 255 for v in high) else None

    def clamp(x):
        if lo is None and hi is None:
            return x
        r = x.int_repr()
        if lo is not None:
            torch.maximum(r, lo, out=r)
        if hi is not None:
            torch.minimum(r, hi, out=r)
        return torch._make_per_tensor_quantized_tensor(r, x.q_scale(), x.q_zero_point())
    return clamp
