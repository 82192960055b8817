"""Arithmetic over constructor arguments, inferred from the values an IR holds.

The IR keeps every layer's attributes as numbers: a block instantiated three
times gives three bottlenecks whose convolutions have 64, 128 and 256 output
channels. To write one class per block, the source generator looks for an
expression over the class's arguments (``planes``, ``in_channels``, ...) that
gives the value seen in *every* instance, and searches a small grammar from the
simplest form up:

    a,   a * k,   a // k,   a * b,   int(a * f),   t + c

where ``a``, ``b`` are int arguments, ``f`` a float argument, ``k`` a small
constant and ``t`` any term before. A value that is the same in every instance
becomes a literal unless the spec's own text for the layer names the argument
(so ``linear(num_classes)`` stays ``num_classes``). Expressions are integer
linear combinations of terms (:class:`Lin`), so channel counts add up through
concatenations (``in_channels + growth * 2``).
"""
from __future__ import annotations

from dataclasses import dataclass

SMALL = range(2, 9)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def literal(v) -> str:
    """Python source for a constant (ints, floats, strings, tuples, lists, None)."""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(literal(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(literal(x) for x in v) + "]"
    if isinstance(v, str):
        return string_literal(v)
    return repr(v)


def string_literal(text: str) -> str:
    """``text`` as a double-quoted Python string of printable ASCII: quotes, backslashes and every
    other character are escapes, so no text can end the string or put a non-ASCII character in
    the source."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                       else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def eval_term(term: tuple, env: dict):
    kind = term[0]
    if kind == "atom":
        return env[term[1]]
    if kind == "mul":
        return env[term[1]] * env[term[2]]
    if kind == "div":
        return env[term[1]] // term[2]
    if kind == "imul":
        return int(env[term[1]] * env[term[2]])
    raise AssertionError(term)


def render_term(term: tuple) -> str:
    kind = term[0]
    if kind == "atom":
        return term[1]
    if kind == "mul":
        return f"{term[1]} * {term[2]}"
    if kind == "div":
        return f"{term[1]} // {term[2]}"
    return f"int({term[1]} * {term[2]})"


def term_atoms(term: tuple) -> set:
    return {term[1]} | ({term[2]} if term[0] in ("mul", "imul") else set())


@dataclass(frozen=True)
class Lin:
    """sum(coef * term) + const over integer terms; a bare constant has no terms."""
    terms: tuple = ()        # ((term, coef), ...)
    const: object = 0

    @staticmethod
    def of(term, coef: int = 1, const=0) -> "Lin":
        return Lin(((term, coef),), const)

    @property
    def is_const(self) -> bool:
        return not self.terms

    def atoms(self) -> set:
        out = set()
        for t, _ in self.terms:
            out |= term_atoms(t)
        return out

    def renamed(self, names: dict) -> "Lin":
        """The same expression with each argument ``a`` written as ``names[a]`` (``self.a``)."""
        def term(t):
            return (t[0], names.get(t[1], t[1])) + tuple(names.get(x, x) if t[0] != "div" else x for x in t[2:])
        return Lin(tuple((term(t), c) for t, c in self.terms), self.const)

    def eval(self, env: dict):
        if not self.terms:
            return self.const
        return sum(c * eval_term(t, env) for t, c in self.terms) + self.const

    def __add__(self, other: "Lin") -> "Lin":
        if not (is_int(self.const) and is_int(other.const)):
            raise TypeError("only integer expressions add")
        coefs: dict = {}
        for t, c in self.terms + other.terms:
            coefs[t] = coefs.get(t, 0) + c
        order = {t: i for i, (t, _) in enumerate(self.terms + other.terms)}
        terms = tuple(sorted(((t, c) for t, c in coefs.items() if c), key=lambda tc: order[tc[0]]))
        return Lin(terms, self.const + other.const)

    def render(self) -> str:
        if not self.terms:
            return literal(self.const)
        parts = []
        for i, (t, c) in enumerate(self.terms):
            text = render_term(t) if abs(c) == 1 else f"{render_term(t)} * {abs(c)}"
            parts.append(text if i == 0 and c > 0 else (f"-{text}" if i == 0 else
                                                        (f"- {text}" if c < 0 else f"+ {text}")))
        if self.const:
            parts.append(f"+ {self.const}" if self.const > 0 else f"- {-self.const}")
        return " ".join(parts)


def _matches(expr: Lin, values: list, envs: list) -> bool:
    try:
        return all(expr.eval(env) == v and type(expr.eval(env)) is type(v) for env, v in zip(envs, values))
    except (KeyError, ZeroDivisionError, TypeError, ValueError, OverflowError):
        return False


def _int_candidates(ints: list, floats: list):
    """Terms and single-term expressions from the simplest up (see the module docstring)."""
    for a in ints:
        yield Lin.of(("atom", a))
    for a in ints:
        for k in SMALL:
            yield Lin.of(("atom", a), k)
        for k in SMALL:
            yield Lin.of(("div", a, k))
    for i, a in enumerate(ints):
        for b in ints[i + 1:]:
            yield Lin.of(("mul", a, b))
    for a in ints:
        for f in floats:
            yield Lin.of(("imul", a, f))


def infer(values: list, envs: list, atoms: list, hints=(), words: set | None = None,
          channel_atoms: frozenset = frozenset()) -> Lin | None:
    """The simplest expression giving ``values[i]`` under ``envs[i]`` for every instance.

    ``atoms`` are the argument names in preference order, ``hints`` candidate
    expressions known from the dataflow (tried first), ``words`` the identifiers
    of the spec text for this layer (or None when the text is unknown) and
    ``channel_atoms`` the arguments that stand for input channel counts.
    Returns None when the values differ and no expression fits (the caller
    then makes the value an argument of its own).
    """
    for h in hints:
        if h is not None and _matches(h, values, envs):
            return h
    first = values[0]
    varying = any(v != first or type(v) is not type(first) for v in values[1:])
    if not all(is_int(v) for v in values):
        if isinstance(first, float) and all(isinstance(v, float) for v in values):
            fl = [a for a in atoms if all(isinstance(env[a], float) for env in envs)]
            named = [a for a in fl if words is None or a in words]
            for a in (named if not varying else named + fl):
                if _matches(Lin.of(("atom", a)), values, envs):
                    return Lin.of(("atom", a))
        return None if varying else Lin((), first)
    ints = [a for a in atoms if all(is_int(env[a]) for env in envs)]
    floats = [a for a in atoms if all(isinstance(env[a], float) for env in envs)]

    def named(expr: Lin) -> bool:
        return words is not None and all(a in words or (a in channel_atoms and "channels" in words)
                                         for a in expr.atoms())

    best, found = None, None
    for cand in _int_candidates(ints, floats):
        if _matches(cand, values, envs):
            if named(cand):
                score = len(cand.atoms())
                if best is None or score > len(best.atoms()):
                    best = cand
            if found is None and varying:
                found = cand
    if best is not None:
        return best
    if found is not None:
        return found
    if not varying:
        return Lin((), first)
    for cand in _int_candidates(ints, floats):      # t + c
        if len(cand.terms) == 1 and cand.terms[0][1] == 1:
            offset = first - cand.eval(envs[0])
            shifted = Lin(cand.terms, offset)
            if offset and _matches(shifted, values, envs):
                return shifted
    return None
