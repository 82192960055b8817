"""Pure functions (``def``): their checks when a file is loaded, and calling them.

A function computes a compile-time value from its arguments: its body holds
assignments, ``if``/``elif``/``else``, ``for``, ``assert`` and ``return``, and every
path through it ends in ``return`` (or ``assert false, "why"``). It applies no layers (no ``->``), declares no
inputs or outputs, and returns no tensor; a tensor may be passed in to read its
shape (``channels(x)``). Calls may recurse up to :data:`MAX_CALL_DEPTH` deep, and
every step counts against the elaboration budget like any other.
"""
from __future__ import annotations

from ..diagnostics import ArchError, Note, Span
from ..syntax import ast
from .binding import Slot, bind
from .values import TensorRef

MAX_CALL_DEPTH = 48        # nested calls; each costs about 20 Python frames of the interpreter


class _Return(Exception):
    """Unwinds a function body at ``return``."""

    def __init__(self, value, span: Span):
        self.value, self.span = value, span


# ---- checks when a file is loaded --------------------------------------------------------

def _statements(stmts):
    """Every statement of a body, nested ones included (no recursion)."""
    pending = list(reversed(stmts))
    while pending:
        s = pending.pop()
        yield s
        if isinstance(s, ast.If):
            for _, body in reversed(s.branches):
                pending.extend(reversed(body))
            if s.orelse:
                pending.extend(reversed(s.orelse))
        elif isinstance(s, ast.For):
            pending.extend(reversed(s.body))


def _always_returns(stmts) -> bool:
    """Whether every path through ``stmts`` ends in ``return`` or ``assert false`` (a loop may run
    zero times)."""
    for s in stmts:
        if isinstance(s, ast.Return) or (isinstance(s, ast.Assert) and isinstance(s.cond, ast.Literal)
                                         and s.cond.value is False):
            return True
        if isinstance(s, ast.If) and s.orelse is not None and all(_always_returns(b) for _, b in s.branches) \
                and _always_returns(s.orelse):
            return True
    return False


def check_params(defn) -> None:
    """Each parameter of a block, model or function has its own name."""
    seen = {}
    for p in defn.params:
        if p.name in seen:
            raise ArchError(f"The parameter '{p.name}' is declared twice; give each parameter its own name.",
                            p.span, (Note(f"'{p.name}' is first declared here", seen[p.name]),))
        seen[p.name] = p.span


def check_function(fn: ast.Function) -> None:
    """Located errors for what a function body may not hold."""
    check_params(fn)
    for s in _statements(fn.body):
        if isinstance(s, (ast.Input, ast.Output)):
            word = "input" if isinstance(s, ast.Input) else "output"
            raise ArchError(f"A function cannot declare an {word}: it computes a value from its arguments. Use a "
                            "block for layers, or pass the tensor in to read its shape.", s.span,
                            (Note(f"in function '{fn.name}'", fn.name_span),))
    if not _always_returns(fn.body):
        where = fn.body[-1].span if fn.body else fn.name_span
        raise ArchError(f"Function '{fn.name}' can reach the end of its body without a `return`; end every "
                        "path with `return value` or `assert false, \"why\"` (an `if` needs an `else` that returns "
                        "too).", where,
                        (Note(f"'{fn.name}' is defined here", fn.name_span),))


def check_definition(defn: ast.Definition) -> None:
    """A block or model has distinct parameter names, and its body holds no ``return``."""
    check_params(defn)
    for s in _statements(defn.body):
        if isinstance(s, ast.Return):
            raise ArchError(f"`return` ends a function, and '{defn.name}' is a {defn.kind}: a {defn.kind} ends "
                            "with `output x`.", s.span)


def _holds_tensor(value) -> bool:
    pending = [value]
    while pending:
        v = pending.pop()
        if isinstance(v, TensorRef):
            return True
        if isinstance(v, (list, tuple)):
            pending.extend(v)
    return False


# ---- calls ----------------------------------------------------------------------------------

class FunctionMixin:
    """Calling functions; mixed into :class:`archdsl.frontend.elaborate.Elaborator`."""

    call_depth = 0

    def in_function(self) -> bool:
        return self.call_depth > 0 and self.frame is None

    def call_function(self, ref, pos, kw, span: Span):
        from .expressions import Env
        fn = ref.defn
        if self.call_depth >= MAX_CALL_DEPTH:
            raise ArchError(f"Function calls are nested more than {MAX_CALL_DEPTH} deep; is a recursion missing "
                            "its base case?", span, (Note(f"'{fn.name}' is defined here", fn.name_span),))
        what = f"function '{fn.name}'"
        slots = [Slot(p.name, self.param_kind(p), ... if p.default is None else p.default, p.span)
                 for p in fn.params]
        module_env = Env(ref.module)
        values = bind(what, slots, pos, kw, span, fn.name_span,
                      default_eval=lambda s: self.eval(s.default, module_env))
        saved = self.frame
        self.frame = None            # no block frame: inputs, outputs and layers are refused
        self.call_depth += 1
        try:
            try:
                self.run(fn.body, Env(ref.module, values))
            except _Return as ret:
                if _holds_tensor(ret.value):
                    raise ArchError(f"Function '{fn.name}' returns a tensor; functions compute values (they may "
                                    "read a tensor's shape), and layers are applied in blocks.", ret.span) from None
                return ret.value
        except ArchError as err:
            if len(err.notes) < 8:
                err = err.with_note(f"in {what}, called here", span)
            raise err from None
        finally:
            self.call_depth -= 1
            self.frame = saved
        raise AssertionError("check_function guarantees a return")   # pragma: no cover

    def _return(self, s: ast.Return, env):
        raise _Return(self.eval(s.value, env), s.span)
