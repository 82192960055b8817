"""Evaluating expressions and statements of a spec (the interpreter's plain-value half).

Arithmetic follows Python, with guards: integers stay below 2**256, lists
below a million items, and every evaluation step counts against a budget so
a runaway loop ends in a diagnostic, never a hang.
"""
from __future__ import annotations

import inspect
import math
import operator

from ..diagnostics import ArchError, Span, did_you_mean
from ..ir import ops as op_registry
from ..syntax import ast
from ..syntax.parser import MAX_TOKENS
from .aliases import suggest
from .bounds import ValueBounds, ValueTooLarge
from .values import (BUILTINS, MAX_INT_BITS, MAX_SEQUENCE, OPS, BuiltinError, FunctionRef, LayerRef, SeqValue,
                     TensorRef, show, type_name)

# The work one load may do, in steps of about 0.5 us here: any input ends in under 1 s
# (docs/benchmarks.md). The largest zoo model, EfficientNet-V2-L, takes 160,000.
MAX_STEPS = 1_500_000
ITEMS_PER_STEP = 2         # building a list, tuple or string costs a step per this many items
STEPS_PER_TOKEN = 20       # reading a token of a spec file (lexing, parsing, building its syntax tree)
STEPS_PER_NODE = 100       # building a layer of the graph (a conv: shapes, parameters, scope)


_MISSING = object()


class Env:
    """Variables of one block or function body, or of one comprehension item over its enclosing
    environment (``parent``), over the globals of its module.

    A comprehension item's environment holds only the loop's own variables, so an item
    costs the same however many variables the body has.
    """

    __slots__ = ("vars", "module", "parent")

    def __init__(self, module, vars=None, parent=None):
        self.module = module
        self.vars = vars if vars is not None else {}
        self.parent = parent

    def child(self) -> "Env":
        return Env(self.module, {}, self)

    def get(self, name: str, default=None):
        env = self
        while env is not None:
            value = env.vars.get(name, _MISSING)
            if value is not _MISSING:
                return value
            env = env.parent
        return default

    def __contains__(self, name: str) -> bool:
        return self.get(name, _MISSING) is not _MISSING

    def flat(self) -> dict:
        """All visible variables in one dict (inner ones win)."""
        chain, env = [], self
        while env is not None:
            chain.append(env.vars)
            env = env.parent
        out = {}
        for vars in reversed(chain):
            out.update(vars)
        return out


class Builtin:
    __slots__ = ("name", "fn")
    type_word = "a built-in function"

    def __init__(self, name, fn):
        self.name, self.fn = name, fn

    @property
    def spec_text(self) -> str:
        return self.name


_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
          "//": operator.floordiv, "%": operator.mod, "**": operator.pow}
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class ExpressionMixin:
    """Expression evaluation; mixed into :class:`archdsl.frontend.elaborate.Elaborator`."""

    steps = 0
    max_steps = MAX_STEPS
    tokens_read = 0

    def tick(self, span: Span) -> None:
        self.steps += 1
        self.last_span = span          # where elaboration was, should Python's stack run out
        if self.steps > self.max_steps:
            reading = self.tokens_read * STEPS_PER_TOKEN
            if 4 * reading > self.max_steps:       # the spec's length, rather than a loop, spent the budget
                raise ArchError(f"Elaboration took more than {self.max_steps} steps, {reading} of them to read the "
                                f"spec's {self.tokens_read} tokens; write repeated layers as a loop or a block "
                                "instead of line by line.", span)
            raise ArchError(f"Elaboration took more than {self.max_steps} steps; is a loop running away?", span)

    def charge(self, steps: int, span: Span) -> None:
        """Spend ``steps`` of the budget at once (a layer built, the tokens of a file read)."""
        self.steps += steps - 1
        self.tick(span)

    def tokens_left(self) -> int:
        """How many more tokens of spec text may be read: what is left of :data:`MAX_TOKENS`, and at most what
        the step budget can pay for."""
        return max(0, min(MAX_TOKENS - self.tokens_read, (self.max_steps - self.steps) // STEPS_PER_TOKEN))

    def charge_tokens(self, n: int, span: Span) -> None:
        self.tokens_read += n
        self.charge(n * STEPS_PER_TOKEN, span)

    bounds = None

    def bounded(self, value, span: Span):
        """``value``, if it is within the bounds on size and nesting (:mod:`archdsl.frontend.bounds`);
        a located error at the expression that built it otherwise."""
        if isinstance(value, (list, tuple)):
            if self.bounds is None:
                self.bounds = ValueBounds()
            try:
                self.bounds.measure(value)
            except ValueTooLarge as err:
                raise ArchError(str(err), span) from None
        return value

    def spend(self, value, span: Span):
        """``value``, with the steps for building it charged when it is a sequence: the step budget
        then bounds memory as well as time (`[range(999999) for i in range(1000)]` ends early)."""
        if isinstance(value, (list, tuple, str)) and len(value) >= ITEMS_PER_STEP:
            self.steps += len(value) // ITEMS_PER_STEP - 1
            self.tick(span)
        return value

    # ---- names
    def lookup(self, name: str, env: Env, span: Span):
        if name == "ops":
            return OPS
        value = env.get(name, _MISSING)
        if value is not _MISSING:
            return value
        hit = env.module.lookup(name) if env.module is not None else None
        if hit is not None:
            return _module_value(name, *hit)
        if name in BUILTINS:
            return Builtin(name, BUILTINS[name])
        opdef = op_registry.get(name)
        if opdef is not None and opdef.in_specs:
            return LayerRef(name, opdef, None)
        candidates = set(env.flat()) | set(BUILTINS) | {n for n, op in op_registry.OPS.items() if op.in_specs}
        if env.module is not None:
            candidates |= env.module.visible_names()
        hint = suggest(name, candidates) or did_you_mean(name, candidates) or \
            "; no variable, parameter, block or built-in has this name."
        raise ArchError(f"Unknown name '{name}'{hint}", span)

    # ---- expressions
    def eval(self, e, env: Env):
        self.tick(e.span)
        method = self._eval_dispatch.get(type(e))
        return method(self, e, env)

    def _literal(self, e, env):
        if isinstance(e.value, float) and math.isinf(e.value):     # `1e999` parses (and formats) as written
            raise ArchError("This number is too large for a float (the largest is about 1.8e308).", e.span)
        return e.value

    def _var(self, e, env):
        return self.lookup(e.name, env, e.span)

    def _tuple(self, e, env):
        return self.bounded(tuple(self.eval(i, env) for i in e.items), e.span)

    def _list(self, e, env):
        return self.bounded([self.eval(i, env) for i in e.items], e.span)

    def _list_comp(self, e, env):
        out = []
        for inner in self.expand(e.comp, env):
            out.append(self.eval(e.elt, inner))
        return self.bounded(out, e.span)

    def _seq_value(self, e, env):
        """``[a -> b]`` as a value: applied later, with the variables of this moment."""
        return SeqValue(e, Env(env.module, env.flat()))

    def expand(self, comp: ast.Comp | None, env: Env):
        """The environments of a comprehension's iterations (just ``env`` without one); with a
        filter ``if cond``, only those where ``cond`` holds."""
        if comp is None:
            yield env
            return
        items = self.eval(comp.iter, env)
        if not isinstance(items, (list, tuple, str)):
            raise ArchError(f"A 'for' needs a list, tuple or string to loop over, but got {type_name(items)}.",
                            comp.iter.span)
        for item in items:
            self.tick(comp.span)       # a loop with an empty body still spends steps
            inner = env.child()
            self.bind_target(comp.targets, item, inner)
            if comp.cond is None or self.truth(self.eval(comp.cond, inner), comp.cond.span):
                yield inner

    def _binop(self, e, env):
        # `a + b + c + ...` is left-nested; walk the left spine without recursing, so a long
        # sum cannot exhaust Python's stack
        spine = [e]
        while isinstance(spine[-1].left, ast.BinOp):
            spine.append(spine[-1].left)
            self.tick(spine[-1].span)
        value = self.eval(spine[-1].left, env)
        for node in reversed(spine):
            value = self._arith(node, value, self.eval(node.right, env))
        return value

    def _arith(self, e, a, b):
        op = e.op
        if isinstance(a, TensorRef) or isinstance(b, TensorRef):
            hint = {"+": "add", "*": "mul"}.get(op)
            raise ArchError(f"Tensors cannot be combined with '{op}'"
                            + (f"; pipe them into a layer instead: (a, b) -> {hint}." if hint else "."), e.span)
        ok = (_is_num(a) and _is_num(b)) or (op == "+" and type(a) is type(b) and isinstance(a, (str, list, tuple))) \
            or (op == "*" and isinstance(a, (str, list, tuple)) and isinstance(b, int) and not isinstance(b, bool))
        if not ok:
            raise ArchError(f"The operator '{op}' cannot combine {type_name(a)} and {type_name(b)}.", e.span)
        if op in ("/", "//", "%") and b == 0:
            raise ArchError(f"Division by zero in '{op}'.", e.span)
        if op == "**" and isinstance(a, int) and isinstance(b, int) and b > 0 and \
                (abs(a).bit_length() - 1) * b > MAX_INT_BITS:     # surely too large; checked() sees the rest
            raise ArchError(f"The result of '**' is too large (over {MAX_INT_BITS} bits).", e.span)
        if op == "**" and _is_num(b) and abs(b) > 1024:
            raise ArchError("The exponent of '**' is too large.", e.span)
        if op == "*" and isinstance(a, (str, list, tuple)) and len(a) * max(b, 0) > MAX_SEQUENCE:
            raise ArchError(f"Repeating a sequence {b} times makes more than {MAX_SEQUENCE} items.", e.span)
        if op == "+" and isinstance(a, (str, list, tuple)) and len(a) + len(b) > MAX_SEQUENCE:
            raise ArchError(f"Joining these sequences makes more than {MAX_SEQUENCE} items.", e.span)
        if op == "**" and a == 0 and _is_num(b) and b < 0:
            raise ArchError("Zero cannot be raised to a negative power.", e.span)
        try:
            result = _ARITH[op](a, b)
        except OverflowError:
            raise ArchError(f"The result of '{op}' is too large.", e.span) from None
        if isinstance(result, complex):
            raise ArchError("The result of '**' is not a real number.", e.span)
        return self.bounded(self.spend(self.checked(result, f"'{op}'", e.span), e.span), e.span)

    @staticmethod
    def checked(result, what: str, span: Span):
        """``result`` if it is a number the language can hold: ints below 2**256, finite floats."""
        if isinstance(result, int) and result.bit_length() > MAX_INT_BITS:
            raise ArchError(f"The result of {what} is too large (over {MAX_INT_BITS} bits).", span)
        if isinstance(result, float) and math.isnan(result):
            raise ArchError(f"The result of {what} is not a number (NaN).", span)
        if isinstance(result, float) and math.isinf(result):
            raise ArchError(f"The result of {what} is too large for a float.", span)
        return result

    def _compare(self, e, env):
        left = self.eval(e.left, env)
        for op, right_e in zip(e.ops, e.rights):
            right = self.eval(right_e, env)
            if op in ("==", "!="):
                if isinstance(left, TensorRef) or isinstance(right, TensorRef):
                    raise ArchError("Tensors cannot be compared; compare their shapes, e.g. channels(x).", e.span)
                ok = self.equal(left, right, e.span) == (op == "==")
            elif op in ("in", "not in"):
                if not isinstance(right, (list, tuple, str)) or (isinstance(right, str) and not isinstance(left, str)):
                    raise ArchError(f"'{op}' needs a list, tuple or string on its right, but got {type_name(right)}.",
                                    right_e.span)
                found = left in right if isinstance(right, str) else \
                    any(self.equal(left, item, e.span) for item in right)
                ok = found == (op == "in")
            else:
                comparable = (_is_num(left) and _is_num(right)) or (type(left) is type(right) and
                                                                     isinstance(left, str))
                if not comparable:
                    raise ArchError(f"'{op}' cannot compare {type_name(left)} with {type_name(right)}.", e.span)
                ok = _ORDER[op](left, right)
            if not ok:
                return False
            left = right
        return True

    def equal(self, a, b, span: Span) -> bool:
        """``a == b`` for spec values, one step per item compared: lists may share sublists, so
        Python's own ``==`` could take time exponential in the steps that built them."""
        pending = [(a, b)]
        while pending:
            x, y = pending.pop()
            self.tick(span)
            if x is y:
                continue
            seq = isinstance(x, (list, tuple)), isinstance(y, (list, tuple))
            if seq == (True, True):
                if type(x) is not type(y) or len(x) != len(y):
                    return False
                pending.extend(zip(x, y))
            elif any(seq) or x != y:
                return False
        return True

    def _boolop(self, e, env):
        value = None
        for v in e.values:
            value = self.truth(self.eval(v, env), v.span)
            if value == (e.op == "or"):
                return value
        return value

    def truth(self, v, span: Span) -> bool:
        if isinstance(v, (TensorRef, LayerRef)):
            raise ArchError(f"{type_name(v).capitalize()} has no truth value; compare a number instead.", span)
        return bool(v)

    def _unary(self, e, env):
        v = self.eval(e.operand, env)
        if e.op == "not":
            return not self.truth(v, e.operand.span)
        if not _is_num(v):
            raise ArchError(f"The unary '{e.op}' needs a number, but got {type_name(v)}.", e.span)
        return -v if e.op == "-" else +v

    def _ternary(self, e, env):
        return self.eval(e.then if self.truth(self.eval(e.cond, env), e.cond.span) else e.orelse, env)

    def eval_args(self, args: ast.Args, env: Env):
        from .binding import Value
        pos = [Value(self.eval(a, env), a.span) for a in args.positional]
        kw = {k.name: Value(self.eval(k.value, env), k.span) for k in args.keywords}
        return pos, kw

    def _call(self, e, env):
        func = self.eval(e.func, env)
        pos, kw = self.eval_args(e.args, env)
        if isinstance(func, FunctionRef):
            return self.call_function(func, pos, kw, e.span)
        if isinstance(func, Builtin):
            self.check_builtin_args(func, pos, kw, e.span)
            try:
                result = func.fn(*(p.value for p in pos), **{k: v.value for k, v in kw.items()})
                return self.bounded(self.spend(self.checked(result, f"'{func.name}'", e.span), e.span), e.span)
            except BuiltinError as err:
                raise ArchError(str(err), e.span) from None
            except (OverflowError, ValueError) as err:     # float() or int() of a value beyond a float's range
                raise ArchError(f"The built-in '{func.name}' cannot convert this value: {_reason(err)}.",
                                e.span) from None
            except TypeError:
                raise ArchError(f"The built-in '{func.name}' cannot take these arguments.", e.span) from None
        if isinstance(func, LayerRef):
            tensor = next((a for a in [*pos, *kw.values()] if isinstance(a.value, TensorRef)), None)
            if tensor is not None:
                what = "block" if isinstance(func.target, (ast.Definition, ast.ModelAlias)) else "op"
                raise ArchError(f"'{func.name}' is a {what}, not a function: apply it to a tensor with "
                                f"`x -> {func.name}(...)`; calling it in an expression only configures it, and "
                                "its arguments cannot be tensors.", tensor.span)
            # Configure a layer without applying it: `act = leaky_relu(0.2)`.
            return LayerRef(func.name, func.target, func.module, func.bound_pos + tuple(pos),
                            func.bound_kw + tuple(kw.items()))
        if isinstance(func, SeqValue):
            raise ArchError("A sequence value takes no arguments; apply it with `x -> name`.", e.func.span)
        raise ArchError(f"{type_name(func).capitalize()} cannot be called.", e.func.span)

    def check_builtin_args(self, func: Builtin, pos, kw, span: Span) -> None:
        """A located error for arguments that do not fit a built-in's signature."""
        sig = _signature(func.fn)
        if sig is None:
            return
        params = list(sig.parameters.values())
        named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            for name, arg in kw.items():
                if name not in named:
                    hint = did_you_mean(name, named) or (f"; its arguments are {', '.join(named)}." if named
                                                         else "; it takes no keyword arguments.")
                    raise ArchError(f"The built-in '{func.name}' has no argument '{name}'{hint}", arg.span)
        try:
            sig.bind(*pos, **kw)
        except TypeError:
            positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            low = sum(p.default is p.empty for p in positional)
            high = None if any(p.kind == p.VAR_POSITIONAL for p in params) else len(positional)
            takes = (f"{low} argument{'s' if low != 1 else ''}" if low == high else
                     f"at least {low} argument{'s' if low != 1 else ''}" if high is None else
                     f"{low} to {high} arguments")
            n = len(pos) + len(kw)
            raise ArchError(f"The built-in '{func.name}' takes {takes}, but {n} {'was' if n == 1 else 'were'} "
                            "given.", span) from None

    def _index(self, e, env):
        obj, idx = self.eval(e.obj, env), self.eval(e.index, env)
        if not isinstance(obj, (list, tuple, str)):
            raise ArchError(f"Only lists, tuples and strings can be indexed, not {type_name(obj)}.", e.obj.span)
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise ArchError(f"An index must be an int, but got {type_name(idx)}.", e.index.span)
        if not -len(obj) <= idx < len(obj):
            raise ArchError(f"Index {idx} is out of range for {type_name(obj)} of length {len(obj)}.", e.index.span)
        return obj[idx]

    def _attr(self, e, env):
        from .modules import ModuleNS
        obj = self.eval(e.obj, env)
        if isinstance(obj, ModuleNS):
            hit = obj.lookup(e.name)
            if hit is None or (hit[1] is not obj):
                names = sorted(list(obj.defs) + list(obj.consts))
                hint = did_you_mean(e.name, names) or (
                    f"; it defines {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}." if names else
                    "; it defines nothing.")
                raise ArchError(f"The imported file '{obj.file}' defines no '{e.name}'{hint}", e.span)
            return _module_value(e.name, *hit)
        if obj is OPS:
            opdef = op_registry.get(e.name)
            if opdef is None or not opdef.in_specs:
                names = sorted(n for n, op in op_registry.OPS.items() if op.in_specs)
                raise ArchError(f"There is no built-in op '{e.name}'"
                                + (suggest(e.name, names) or did_you_mean(e.name, names)
                                   or "; the ops are listed in docs/language.md."), e.span)
            return LayerRef(e.name, opdef, None)
        if isinstance(obj, TensorRef):
            raise ArchError(f"Tensors have no attribute '{e.name}'; use channels(x), height(x), width(x) "
                            "or shape(x).", e.span)
        raise ArchError(f"{type_name(obj).capitalize()} has no attribute '{e.name}'.", e.span)

    def _chain(self, e, env):
        if self.in_function():
            raise ArchError("A function cannot apply layers: it computes values at compile time. Apply the "
                            "layers in a block, passing the function's results as arguments.", e.span)
        source = self.eval(e.source, env)
        tensors = self.as_tensors(source, e.source.span)
        out = self.apply_chain(e.layers, tensors, env)
        return out[0] if len(out) == 1 else tuple(out)

    def as_tensors(self, value, span: Span) -> list:
        if isinstance(value, TensorRef):
            return [value]
        if isinstance(value, (tuple, list)) and value and all(isinstance(v, TensorRef) for v in value):
            return list(value)
        raise ArchError(f"A chain must start from a tensor or a tuple of tensors, but this is "
                        f"{type_name(value)} {show(value, 40)}.", span)

    # ---- assignment targets
    def bind_target(self, target, value, env: Env) -> None:
        if isinstance(target, ast.NameTarget):
            env.vars[target.name] = value
            return
        if not isinstance(value, (list, tuple)):
            raise ArchError(f"Cannot unpack {type_name(value)} into {len(target.items)} names.", target.span)
        if len(value) != len(target.items):
            raise ArchError(f"Cannot unpack {len(value)} values into {len(target.items)} names.", target.span)
        for t, v in zip(target.items, value):
            self.bind_target(t, v, env)


def _reason(err: Exception) -> str:
    text = str(err).rstrip(".")
    return (text[:1].lower() + text[1:]) if text else type(err).__name__


_SIGNATURES: dict = {}


def _signature(fn):
    """The signature of a built-in's Python function (cached), or None where Python cannot tell."""
    if fn not in _SIGNATURES:
        try:
            _SIGNATURES[fn] = inspect.signature(fn)
        except (TypeError, ValueError):
            _SIGNATURES[fn] = None
    return _SIGNATURES[fn]


def _module_value(name: str, value, module):
    """What a file's name means as a value: a layer for a block or model, a function for a def."""
    if isinstance(value, (ast.Definition, ast.ModelAlias)):
        return LayerRef(name, value, module)
    if isinstance(value, ast.Function):
        return FunctionRef(name, value, module)
    return value


ExpressionMixin._eval_dispatch = {
    ast.Literal: ExpressionMixin._literal, ast.Var: ExpressionMixin._var, ast.TupleExpr: ExpressionMixin._tuple,
    ast.ListExpr: ExpressionMixin._list, ast.ListComp: ExpressionMixin._list_comp,
    ast.BinOp: ExpressionMixin._binop, ast.Compare: ExpressionMixin._compare,
    ast.BoolOp: ExpressionMixin._boolop, ast.Unary: ExpressionMixin._unary,
    ast.Ternary: ExpressionMixin._ternary, ast.CallExpr: ExpressionMixin._call,
    ast.Index: ExpressionMixin._index, ast.Attr: ExpressionMixin._attr, ast.Chain: ExpressionMixin._chain,
    ast.Seq: ExpressionMixin._seq_value,
}
