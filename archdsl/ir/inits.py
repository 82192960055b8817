"""Initialiser values: ``normal(0.01)``, ``trunc_normal(0.02)``, ``kaiming_normal("fan_in")``...

A spec writes ``weight_init=normal(0.01)`` (conv, linear) or ``init=1e-6`` (scale);
the call is a built-in function of the expression language returning an
:class:`Initialiser`, which the IR keeps as an attribute and as the ``init`` of the
parameter. The distributions are those of ``torch.nn.init``:

* ``normal(std, mean=0)``: N(mean, std^2);
* ``trunc_normal(std, mean=0, a=-2, b=2)``: N(mean, std^2) conditioned on a <= x <= b
  (a and b absolute, as ``trunc_normal_``);
* ``uniform(a, b)``: U(a, b); ``constant(value)``: every element ``value``;
* ``kaiming_normal(mode="fan_out", nonlinearity="relu", a=0)``: N(0, (gain / sqrt(fan))^2);
* ``kaiming_uniform(mode="fan_in", nonlinearity="relu", a=0)``: U(-bound, bound) with
  bound = gain * sqrt(3 / fan);

with ``fan`` the parameter's fan-in or fan-out (``mode``) as PyTorch computes it: for a
weight of shape (out, in, *k), fan_in = in * prod(k) and fan_out = out * prod(k) (the
registry's ParamSpec holds them), and ``gain`` as ``torch.nn.init.calculate_gain``:
linear and sigmoid 1, tanh 5/3, relu sqrt(2), leaky_relu sqrt(2 / (1 + a^2)).

Each value has a spec text (``spec_text``, what the spec writer and the IR printer
write), a JSON form for IR files, and draws its samples from the parameter's own
generator (so the same spec gives the same weights).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

REQUIRED = object()
NONLINEARITIES = ("relu", "leaky_relu", "linear", "sigmoid", "tanh")
MODES = ("fan_in", "fan_out")

# name -> ((argument, default or REQUIRED, kind), ...) in call order
SIGNATURES = {
    "normal": (("std", REQUIRED, "float"), ("mean", 0.0, "float")),
    "trunc_normal": (("std", REQUIRED, "float"), ("mean", 0.0, "float"), ("a", -2.0, "float"), ("b", 2.0, "float")),
    "uniform": (("a", REQUIRED, "float"), ("b", REQUIRED, "float")),
    "constant": (("value", REQUIRED, "float"),),
    "kaiming_normal": (("mode", "fan_out", "str"), ("nonlinearity", "relu", "str"), ("a", 0.0, "float")),
    "kaiming_uniform": (("mode", "fan_in", "str"), ("nonlinearity", "relu", "str"), ("a", 0.0, "float")),
}

DOCS = {
    "normal": "normal(std, mean=0.0): weights drawn from N(mean, std^2)",
    "trunc_normal": "trunc_normal(std, mean=0.0, a=-2.0, b=2.0): N(mean, std^2) cut to [a, b] (absolute bounds)",
    "uniform": "uniform(a, b): weights drawn from U(a, b)",
    "constant": "constant(value): every weight equal to value",
    "kaiming_normal": 'kaiming_normal(mode="fan_out", nonlinearity="relu"): N(0, gain^2 / fan)',
    "kaiming_uniform": 'kaiming_uniform(mode="fan_in", nonlinearity="relu"): U(-b, b), b = gain * sqrt(3 / fan)',
}


class InitError(ValueError):
    """An initialiser was given bad arguments; the message is a full sentence."""


def _word(v) -> str:
    if isinstance(v, bool):
        return "a bool"
    if isinstance(v, str):
        return f'the string "{v}"'
    if isinstance(v, (int, float)):
        return repr(v)
    return type(v).__name__ if not hasattr(v, "type_word") else v.type_word


def _float_text(v: float) -> str:
    from ..syntax.formatter import float_text
    return float_text(float(v))


def gain(nonlinearity: str, a: float = 0.0) -> float:
    """``torch.nn.init.calculate_gain`` for the nonlinearities the language names."""
    if nonlinearity in ("linear", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + a ** 2))
    raise InitError(f"There is no gain for the nonlinearity \"{nonlinearity}\".")


def torch_fans(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` as ``torch.nn.init._calculate_fan_in_and_fan_out`` gives them for a tensor of
    ``shape`` (dimension 1 and 0 times the receptive field); a tensor of fewer than 2 dimensions (which
    PyTorch refuses) uses its element count for both."""
    shape = tuple(shape)
    if len(shape) < 2:
        n = math.prod(shape)
        return n, n
    rf = math.prod(shape[2:])
    return shape[1] * rf, shape[0] * rf


@dataclass(frozen=True)
class Initialiser:
    """One initialiser call with every argument filled in: ``name`` and ``args`` ((argument, value), ...)."""
    name: str
    args: tuple

    type_word = "an initialiser"

    def __getitem__(self, key: str):
        return dict(self.args)[key]

    # ---- texts
    @property
    def spec_text(self) -> str:
        """The call as a spec writes it: required arguments by position, the others by name where not
        at their default."""
        parts = []
        for (arg, default, kind), (_, v) in zip(SIGNATURES[self.name], self.args):
            text = f'"{v}"' if kind == "str" else _float_text(v)
            if default is REQUIRED:
                parts.append(text)
            elif v != default:
                parts.append(f"{arg}={text}")
        return f"{self.name}({', '.join(parts)})"

    def __str__(self) -> str:
        return self.spec_text

    def to_json(self) -> dict:
        return {"initialiser": self.name, "args": dict(self.args)}

    @staticmethod
    def from_json(data: dict) -> "Initialiser":
        return make(data["initialiser"], (), data["args"])

    # ---- values
    def spread(self, fan_in: int, fan_out: int) -> float:
        """The std (kaiming_normal) or the bound (kaiming_uniform) for these fans."""
        fan = max(fan_in if self["mode"] == "fan_in" else fan_out, 1)
        g = gain(self["nonlinearity"], self["a"])
        return g / math.sqrt(fan) if self.name == "kaiming_normal" else g * math.sqrt(3.0 / fan)

    def sample(self, rng: np.random.Generator, shape: tuple, fan_in: int, fan_out: int) -> np.ndarray:
        """float32 values of ``shape`` drawn from ``rng``."""
        n = self.name
        if n == "constant":
            return np.full(shape, self["value"], np.float32)
        if n == "uniform":
            return _uniform(rng, shape, self["a"], self["b"])
        if n == "normal":
            return _normal(rng, shape, self["mean"], self["std"])
        if n == "trunc_normal":
            return _trunc_normal(rng, shape, self["mean"], self["std"], self["a"], self["b"])
        spread = self.spread(fan_in, fan_out)
        if n == "kaiming_normal":
            return _normal(rng, shape, 0.0, spread)
        return _uniform(rng, shape, -spread, spread)

    def torch_source(self, target: str, shape: tuple, fan_in: int, fan_out: int) -> str:
        """The ``nn.init`` statement giving ``target`` this distribution."""
        n = self.name
        if n == "constant":
            return f"nn.init.constant_({target}, {self['value']!r})"
        if n == "uniform":
            return f"nn.init.uniform_({target}, {self['a']!r}, {self['b']!r})"
        if n == "normal":
            mean = f"{self['mean']!r}, " if self["mean"] else ""
            return f"nn.init.normal_({target}, {mean}std={self['std']!r})" if mean else \
                f"nn.init.normal_({target}, std={self['std']!r})"
        if n == "trunc_normal":
            return (f"nn.init.trunc_normal_({target}, mean={self['mean']!r}, std={self['std']!r}, "
                    f"a={self['a']!r}, b={self['b']!r})")
        if len(shape) >= 2 and torch_fans(shape) == (fan_in, fan_out):
            a = f"a={self['a']!r}, " if self["a"] else ""
            return (f'nn.init.{n}_({target}, {a}mode="{self["mode"]}", '
                    f'nonlinearity="{self["nonlinearity"]}")')
        spread = self.spread(fan_in, fan_out)
        if n == "kaiming_normal":
            return f"nn.init.normal_({target}, std={spread!r})"
        return f"nn.init.uniform_({target}, {-spread!r}, {spread!r})"


def _uniform(rng, shape, lo: float, hi: float) -> np.ndarray:
    out = rng.random(shape, dtype=np.float32)
    out *= np.float32(hi - lo)
    out += np.float32(lo)
    return out


def _normal(rng, shape, mean: float, std: float) -> np.ndarray:
    out = rng.standard_normal(shape, dtype=np.float32)
    out *= np.float32(std)
    out += np.float32(mean)
    return out


def _trunc_normal(rng, shape, mean, std, a, b) -> np.ndarray:
    """N(mean, std^2) conditioned on [a, b], by the inverse CDF of U(Phi(alpha), Phi(beta))
    (``torch.nn.init.trunc_normal_``'s method), computed in float64 and clamped to [a, b]."""
    from scipy.special import ndtr, ndtri
    lo, hi = ndtr((a - mean) / std), ndtr((b - mean) / std)
    u = rng.random(shape)
    out = ndtri(lo + (hi - lo) * u) * std + mean
    return np.clip(out, a, b).astype(np.float32)


def _number(name: str, arg: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InitError(f"'{name}' needs a number for {arg}, but got {_word(v)}.")
    v = float(v)
    if not math.isfinite(v):
        raise InitError(f"'{name}' needs a finite number for {arg}, but got {v}.")
    return v


def make(name: str, positional=(), keywords=None) -> Initialiser:
    """The initialiser ``name(*positional, **keywords)``; InitError for bad arguments."""
    keywords = dict(keywords or {})
    sig = SIGNATURES[name]
    names = [s[0] for s in sig]
    if len(positional) > len(sig):
        raise InitError(f"'{name}' takes at most {len(sig)} argument{'s' if len(sig) != 1 else ''}, but "
                        f"{len(positional)} were given.")
    values = dict(zip(names, positional))
    for k, v in keywords.items():
        if k not in names:
            raise InitError(f"'{name}' has no argument '{k}'; its arguments are {', '.join(names)}.")
        if k in values:
            raise InitError(f"'{name}' got two values for argument '{k}'.")
        values[k] = v
    out = []
    for arg, default, kind in sig:
        if arg not in values:
            if default is REQUIRED:
                raise InitError(f"'{name}' needs the argument '{arg}', as in {DOCS[name].split(':')[0]}.")
            values[arg] = default
        v = values[arg]
        if kind == "float":
            v = _number(name, arg, v)
        elif not isinstance(v, str):
            raise InitError(f"'{name}' needs a string for {arg}, but got {_word(v)}.")
        out.append((arg, v))
    init = Initialiser(name, tuple(out))
    _check(init)
    return init


def _check(init: Initialiser) -> None:
    n, a = init.name, dict(init.args)
    if n in ("normal", "trunc_normal") and a["std"] < 0:
        raise InitError(f"'{n}' needs a standard deviation of at least 0, but std is {a['std']!r}.")
    if n == "trunc_normal":
        if a["std"] == 0:
            raise InitError("'trunc_normal' needs a positive standard deviation, but std is 0.0.")
        if a["a"] >= a["b"]:
            raise InitError(f"'trunc_normal' needs a < b (absolute bounds), but a is {a['a']!r} and b is {a['b']!r}.")
        from scipy.special import ndtr
        if ndtr((a["b"] - a["mean"]) / a["std"]) - ndtr((a["a"] - a["mean"]) / a["std"]) <= 0:
            raise InitError(f"'trunc_normal' bounds [{a['a']!r}, {a['b']!r}] lie so far from the mean "
                            f"{a['mean']!r} (std {a['std']!r}) that they hold no probability.")
    if n == "uniform" and a["a"] >= a["b"]:
        raise InitError(f"'uniform' needs a < b, but a is {a['a']!r} and b is {a['b']!r}.")
    if n.startswith("kaiming_"):
        if a["mode"] not in MODES:
            raise InitError(f"'{n}' mode must be \"fan_in\" or \"fan_out\", but got \"{a['mode']}\".")
        if a["nonlinearity"] not in NONLINEARITIES:
            raise InitError(f"'{n}' nonlinearity must be one of {', '.join(NONLINEARITIES)}, but got "
                            f"\"{a['nonlinearity']}\".")


def as_param_init(init):
    """The ``init`` a Param keeps for a spec value: a number ``c`` is ``constant(c)``."""
    if isinstance(init, (int, float)) and not isinstance(init, bool):
        return make("constant", (float(init),))
    return init


def builtins(error) -> dict:
    """The expression language's initialiser functions, raising ``error`` (a class) on bad arguments."""
    def function(name):
        def call(*args, **kw):
            try:
                return make(name, args, kw)
            except InitError as err:
                raise error(str(err)) from None
        return call
    return {name: function(name) for name in SIGNATURES}
