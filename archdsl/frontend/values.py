"""Values a spec computes with, and the built-in functions it may call.

Besides numbers, strings, booleans, ``none``, lists and tuples, a spec handles
tensors (:class:`TensorRef`, a node of the graph under construction), layers
(:class:`LayerRef`, a block or op passed around by name; :class:`SeqValue`, a
``[a -> b]`` sequence; a list of layers, applied in order) and functions
(:class:`FunctionRef`, a ``def``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_SEQUENCE = 1_000_000
MAX_INT_BITS = 256


@dataclass(frozen=True, slots=True)
class TensorRef:
    node: int
    shape: tuple


@dataclass(frozen=True, slots=True)
class LayerRef:
    """A block, model or op used as a value (for example a block passed as an argument)."""
    name: str
    target: Any        # ast.Definition or ir.ops.OpDef
    module: Any        # the ModuleNS a definition belongs to (None for ops)
    bound_pos: tuple = ()   # arguments given when the layer was configured: `act = leaky_relu(0.2)`
    bound_kw: tuple = ()


@dataclass(frozen=True, slots=True, eq=False)
class SeqValue:
    """``[conv(8, 3) -> relu]`` as a value: the sequence's syntax and the variables it saw when built."""
    seq: Any           # ast.Seq
    env: Any           # the Env its arguments and labels are evaluated in (a snapshot)
    spec_text = "[...]"


@dataclass(frozen=True, slots=True, eq=False)
class FunctionRef:
    """A ``def`` used as a value: called in expressions, never applied with ``->``."""
    name: str
    defn: Any          # ast.Function
    module: Any        # the ModuleNS it belongs to
    type_word = "a function"

    @property
    def spec_text(self) -> str:
        return self.name


class OpsNamespace:
    """The reserved name ``ops``: ``ops.NAME`` is the built-in op NAME whatever else is called NAME."""
    type_word = "the namespace of the built-in ops"
    spec_text = "ops"


OPS = OpsNamespace()


def is_layer(v) -> bool:
    """Whether ``v`` can follow ``->``: a layer, a sequence, or a list or tuple of layers (applied in order)."""
    if isinstance(v, (LayerRef, SeqValue)):
        return True
    if isinstance(v, (list, tuple)):
        pending = list(v)
        while pending:                 # without recursion: a list may nest deeply
            x = pending.pop()
            if isinstance(x, (list, tuple)):
                pending.extend(x)
            elif not isinstance(x, (LayerRef, SeqValue)):
                return False
        return True
    return False


class BuiltinError(Exception):
    """A built-in function was misused; the message is a full sentence."""


def type_name(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "a bool"
    if isinstance(v, int):
        return "an int"
    if isinstance(v, float):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, tuple):
        return "a tuple"
    if isinstance(v, TensorRef):
        return "a tensor"
    if isinstance(v, (LayerRef, SeqValue)):
        return "a layer"
    # built-in functions and imported namespaces describe themselves
    return getattr(v, "type_word", None) or type(v).__name__


def show(v, limit: int | None = None) -> str:
    """A value as the spec would write it; with ``limit``, at most that many characters then "..."."""
    if limit is None:
        return "".join(_pieces(v))
    out, n = [], 0
    for piece in _pieces(v):           # stops early, so a huge (or self-repeating) list costs little
        out.append(piece)
        n += len(piece)
        if n > limit:
            return "".join(out)[:limit] + "..."
    return "".join(out)


def _pieces(v):
    if v is None:
        yield "none"
    elif isinstance(v, bool):
        yield "true" if v else "false"
    elif isinstance(v, int) and v.bit_length() > MAX_INT_BITS:      # str() refuses past 4300 digits
        yield f"<an int of {int(v.bit_length() * 0.30103) + 1} digits>"
    elif isinstance(v, str):
        yield '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif isinstance(v, (list, tuple)):
        yield "[" if isinstance(v, list) else "("
        for i, x in enumerate(v):
            if i:
                yield ", "
            yield from _pieces(x)
        yield "]" if isinstance(v, list) else ("," if len(v) == 1 else "") + ")"
    elif isinstance(v, TensorRef):
        yield "tensor" + "(" + ", ".join(str(d) for d in v.shape) + ")"
    elif isinstance(v, LayerRef):
        yield v.name
    else:
        yield getattr(v, "spec_text", None) or repr(v)


def _int(name, v):
    if isinstance(v, bool) or not isinstance(v, int):
        raise BuiltinError(f"'{name}' needs an int, but got {type_name(v)}.")
    return v


def _seq(name, v):
    if not isinstance(v, (list, tuple, str)):
        raise BuiltinError(f"'{name}' needs a list, tuple or string, but got {type_name(v)}.")
    return v


def _tensor(name, v):
    if not isinstance(v, TensorRef):
        raise BuiltinError(f"'{name}' needs a tensor, but got {type_name(v)}.")
    return v


def _dim(name, index):
    def shape_of(t):
        shape = _tensor(name, t).shape
        if len(shape) <= index:
            raise BuiltinError(f"'{name}' needs a tensor with at least {index + 1} dimensions, "
                               f"but got one of shape ({', '.join(map(str, shape))}).")
        return shape[index]
    return shape_of


def _range(*args):
    if not 1 <= len(args) <= 3:
        raise BuiltinError("'range' takes one to three ints.")
    args = [_int("range", a) for a in args]
    if len(args) == 3 and args[2] == 0:
        raise BuiltinError("The step of 'range' must not be zero.")
    r = range(*args)
    count = (r.stop - r.start + r.step - (1 if r.step > 0 else -1)) // r.step   # len(r) overflows past 2**63
    if count > MAX_SEQUENCE:
        raise BuiltinError(f"'range' would make {count} items; the limit is {MAX_SEQUENCE}.")
    return list(r)


def _number(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BuiltinError(f"'{name}' needs a number, but got {type_name(v)}.")
    return v


def _to_int(v):
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            raise BuiltinError(f"'int' cannot read {show(v, 40)} as a whole number.") from None
    v = _number("int", v)
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        raise BuiltinError(f"'int' cannot convert {v} to a whole number.")
    return int(v)


def _round(v, ndigits=None):
    """Python's round: half to even; an int without ``ndigits``, else a number with that many decimals."""
    v = _number("round", v)
    if isinstance(v, float) and not math.isfinite(v):
        raise BuiltinError(f"'round' cannot round {v} to a whole number.")
    if ndigits is None:
        return round(v)
    if abs(_int("round", ndigits)) > 400:
        raise BuiltinError(f"'round' takes at most 400 digits, but got {ndigits}.")
    return round(v, ndigits)


def _whole(name, fn):
    """ceil / floor: the nearest int above / below a number."""
    def run(v):
        v = _number(name, v)
        if isinstance(v, float) and not math.isfinite(v):
            raise BuiltinError(f"'{name}' cannot round {v} to a whole number.")
        return fn(v)
    return run


def _log(v, base=None):
    """log(x) = ln x; log(x, b) = ln x / ln b."""
    v = _number("log", v)
    if v <= 0:
        raise BuiltinError(f"'log' needs a positive number, but got {show(v)}.")
    if base is None:
        return math.log(v)
    base = _number("log", base)
    if base <= 0 or base == 1:
        raise BuiltinError(f"The base of 'log' must be positive and not 1, but got {show(base)}.")
    return math.log(v, base)


def _log2(v):
    v = _number("log2", v)
    if v <= 0:
        raise BuiltinError(f"'log2' needs a positive number, but got {show(v)}.")
    return math.log2(v)


def _sqrt(v):
    v = _number("sqrt", v)
    if v < 0:
        raise BuiltinError(f"'sqrt' needs a number of at least 0, but got {show(v)}.")
    return math.sqrt(v)


def _exp(v):
    v = _number("exp", v)
    if v > 709:
        raise BuiltinError(f"'exp' of {show(v)} is too large for a float.")
    return math.exp(v)


def _to_str(v):
    if isinstance(v, str):
        return v
    text = show(v, MAX_SEQUENCE)
    if len(text) > MAX_SEQUENCE:
        raise BuiltinError(f"'str' would make a string of more than {MAX_SEQUENCE} characters.")
    return text


def _minmax(name, fn):
    def run(*args):
        items = args[0] if len(args) == 1 else args
        items = list(_seq(name, items))
        if not items:
            raise BuiltinError(f"'{name}' of an empty list has no value.")
        for x in items:
            _number(name, x)
        return fn(items)
    return run


BUILTINS = {
    "range": _range,
    "len": lambda v: len(_seq("len", v)),
    "enumerate": lambda v, start=0: [(i + _int("enumerate", start), x) for i, x in enumerate(_seq("enumerate", v))],
    "zip": lambda *vs: [tuple(t) for t in zip(*(_seq("zip", v) for v in vs))],
    "min": _minmax("min", min),
    "max": _minmax("max", max),
    "sum": lambda v: sum(_number("sum", x) for x in _seq("sum", v)),
    "abs": lambda v: abs(_number("abs", v)),
    "int": _to_int,
    "float": lambda v: float(_number("float", v)),
    "round": _round,
    "ceil": _whole("ceil", math.ceil),
    "floor": _whole("floor", math.floor),
    "log": _log,
    "log2": _log2,
    "sqrt": _sqrt,
    "exp": _exp,
    "str": _to_str,
    "list": lambda v: list(_seq("list", v)),
    "channels": _dim("channels", 1),
    "height": _dim("height", 2),
    "width": _dim("width", 3),
    "shape": lambda t: tuple(_tensor("shape", t).shape[1:]),
}

BUILTIN_DOCS = {
    "range": "range(stop) / range(start, stop[, step]): a list of ints",
    "len": "number of items", "enumerate": "pairs (index, item)", "zip": "tuples of items side by side",
    "min": "smallest number", "max": "largest number", "sum": "sum of numbers", "abs": "absolute value",
    "int": "truncate to int", "float": "convert to float",
    "round": "round half to even: to an int, or to ndigits decimals",
    "ceil": "smallest int at or above", "floor": "largest int at or below", "log": "natural log, or to a base",
    "log2": "log base 2", "sqrt": "square root", "exp": "e to the power",
    "str": "text of a value", "list": "a list of the items",
    "channels": "channels of a tensor (dim 1)", "height": "height (dim 2)", "width": "width (dim 3)",
    "shape": "a tensor's shape without the batch",
}

from ..ir import inits as _inits  # noqa: E402  (initialiser calls: normal(0.01), trunc_normal(0.02), ...)
BUILTINS.update(_inits.builtins(BuiltinError))
BUILTIN_DOCS.update(_inits.DOCS)
