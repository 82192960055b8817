"""The words of a written spec: keywords, names, labels, and the text of values."""
from __future__ import annotations

import math
import re

from ...diagnostics import ArchError
from ...frontend.values import BUILTINS
from ...ir import ops as registry
from ...ir.inits import Initialiser
from ...syntax.formatter import float_text, string_text

KEYWORDS = frozenset("import as block model def input output if elif else for in assert return parallel dense "
                     "residual shortcut stn true false none not and or".split())
NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*\Z")
LABEL = re.compile(r"[A-Za-z_][A-Za-z_0-9-]*\Z")


def language_names() -> set:
    """The names a spec's own names must not take: the keywords, the ops and the builtins."""
    return set(KEYWORDS) | set(registry.OPS) | set(BUILTINS)


def _float_text(v: float) -> str:
    if not math.isfinite(v):
        raise ArchError(f"The value {v} cannot be written in a spec: the language has no infinite or NaN numbers.")
    return float_text(float(v))


def value_text(v) -> str:
    """A value as the spec writes it."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _float_text(v)
    if isinstance(v, str):
        return string_text(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    if isinstance(v, Initialiser):            # normal(0.01): a call of the built-in of that name
        return v.spec_text
    raise ArchError(f"The value {v!r} cannot be written in a spec.")


def is_position(name: str) -> bool:
    return name.isdigit() and name.isascii() and str(int(name)) == name


def label_text(name: str) -> str | None:
    """The label (without ``:``) that makes a layer named ``name``, or None where none can.

    Any name of ASCII letters, digits, ``_`` and ``-`` that starts with a letter or ``_``
    is a label as it is, keywords included (``for:``, ``block1-0:``); no other name is.
    """
    return name if LABEL.match(name) else None


def identifier(text: str, fallback: str = "v") -> str:
    """``text`` made a valid name: other characters become ``_``, a leading digit gets a prefix."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", text)
    if not out:
        out = fallback
    if out[0].isdigit():
        out = fallback + out
    return out


def unique(want: str, taken, avoid=()) -> str:
    name, k = want, 1
    while name in taken or name in avoid or name in KEYWORDS:
        k += 1
        name = f"{want}_{k}"
    return name
