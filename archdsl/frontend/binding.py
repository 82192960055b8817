"""Binding call arguments to parameters, with type checks and exact error messages.

Ops declare :class:`archdsl.ir.ops.Arg` kinds; blocks declare spec types
(``int``, ``float``, ``bool``, ``string``, ``list``, ``tuple``, ``layer``,
``any``). Both go through :func:`bind`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..diagnostics import ArchError, Note, Span, did_you_mean
from ..ir.inits import Initialiser
from ..ir.params import INITS
from .values import TensorRef, is_layer, show, type_name

SPEC_TYPES = {"int": "int", "float": "float", "bool": "bool", "string": "str", "str": "str",
              "list": "list", "tuple": "tuple", "layer": "layer", "any": "any"}


@dataclass(frozen=True, slots=True)
class Value:
    value: object
    span: Span


@dataclass(frozen=True, slots=True)
class Slot:
    name: str
    kind: str
    default: object = ...        # ... = required; an ast expression for blocks, a value for ops
    span: Span | None = None


_KIND_WORDS = {"int": "an int", "float": "a number", "bool": "a bool (true or false)", "str": "a string",
               "pair": "an int or a pair of ints", "ints": "a list of ints", "list": "a list",
               "tuple": "a tuple", "layer": "a layer (a block, op or sequence)",
               "init": "an initialiser name or a list of numbers"}


def kind_word(kind: str) -> str:
    if kind.endswith("?"):
        return kind_word(kind[:-1]) + " or none"
    if kind.startswith("choice:"):
        return "one of " + ", ".join(f'"{c}"' for c in kind[7:].split("|"))
    return _KIND_WORDS.get(kind, kind)


def _fits_float(v) -> bool:
    """Whether float(v) exists (an int past 2**1024 has no float)."""
    return not isinstance(v, int) or v.bit_length() <= 1024


def convert(kind: str, v):
    """Check ``v`` against ``kind`` and normalise it; return ``(ok, value)``."""
    if kind == "any":
        return True, v
    if kind.endswith("?"):                      # optional: none or the kind
        return (True, None) if v is None else convert(kind[:-1], v)
    if kind == "int":
        return (isinstance(v, int) and not isinstance(v, bool)), v
    if kind == "float":
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and _fits_float(v)
        return ok, float(v) if ok else v
    if kind == "bool":
        return isinstance(v, bool), v
    if kind == "str":
        return isinstance(v, str), v
    if kind == "pair":
        if isinstance(v, int) and not isinstance(v, bool):
            return True, (v, v)
        ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) for x in v)
        return ok, tuple(v) if ok else v
    if kind == "ints":
        ok = isinstance(v, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        return ok, tuple(v) if ok else v
    if kind == "list":
        return isinstance(v, (list, tuple)), list(v) if isinstance(v, (list, tuple)) else v
    if kind == "tuple":
        return isinstance(v, (list, tuple)), tuple(v) if isinstance(v, (list, tuple)) else v
    if kind == "layer":
        return is_layer(v), v
    if kind == "init":
        if isinstance(v, str):
            return v in INITS, v
        if isinstance(v, Initialiser) or (isinstance(v, (int, float)) and not isinstance(v, bool) and _fits_float(v)):
            return True, float(v) if isinstance(v, (int, float)) else v
        ok = isinstance(v, (list, tuple)) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and _fits_float(x) for x in v)
        return ok, [float(x) for x in v] if ok else v
    if kind.startswith("choice:"):
        return isinstance(v, str) and v in kind[7:].split("|"), v
    raise AssertionError(kind)


def bind(what: str, slots: list[Slot], positional: list[Value], keywords: dict[str, Value],
         call_span: Span, defined_at: Span | None = None, default_eval=None) -> dict:
    """Match arguments to ``slots``; returns ``{name: value}`` with defaults filled in.

    ``default_eval(slot)`` turns a block's default expression into a value.
    """
    notes = (Note(f"{what} is defined here", defined_at),) if defined_at else ()
    What = what[:1].upper() + what[1:]          # `what` may start a sentence: "block 'b'" -> "Block 'b'"
    if len(positional) > len(slots):
        extra = positional[len(slots)]
        n, m = len(slots), len(positional)
        takes = "no arguments" if n == 0 else f"{n} argument{'s' if n != 1 else ''}"
        raise ArchError(f"{What} takes {takes}, but {m} {'was' if m == 1 else 'were'} given.", extra.span, notes)
    out: dict = {}
    spans: dict = {}
    for slot, arg in zip(slots, positional):
        out[slot.name], spans[slot.name] = arg.value, arg.span
    names = [s.name for s in slots]
    for name, arg in keywords.items():
        if name not in names:
            hint = did_you_mean(name, names) or (f"; its arguments are {', '.join(names)}." if names else
                                                 "; it takes no arguments.")
            raise ArchError(f"{What} has no argument '{name}'{hint}", arg.span, notes)
        if name in out:
            raise ArchError(f"{What} got two values for argument '{name}': one by position and one by name.",
                            arg.span, notes)
        out[name], spans[name] = arg.value, arg.span
    for slot in slots:
        if slot.name not in out:
            if slot.default is ...:
                raise ArchError(f"{What} is missing its required argument '{slot.name}'.", call_span, notes)
            out[slot.name] = default_eval(slot) if default_eval else slot.default
        ok, value = convert(slot.kind, out[slot.name])
        if not ok:
            v = out[slot.name]
            short = show(v, 40)
            got = "a tensor" if isinstance(v, TensorRef) else "none" if v is None else f"{type_name(v)} {short}" \
                if not isinstance(v, (list, tuple)) or len(short) < 40 else type_name(v)
            if slot.kind == "init" and isinstance(v, str):
                got += f" (known initialisers: {', '.join(INITS)})"
            raise ArchError(f"Argument '{slot.name}' of {what} must be {kind_word(slot.kind)}, but got {got}.",
                            spans.get(slot.name, call_span), notes)
        out[slot.name] = value
    return out
