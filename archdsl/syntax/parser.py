"""Text to AST: the Lark LALR parser for ``grammars/arch.lark`` and the tree-to-AST transformer."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from ..diagnostics import ArchError, Span
from . import ast
from .postlex import StatementIf

MAX_SOURCE_BYTES = 1_000_000
MAX_INT_DIGITS = 40


def grammar_text() -> str:
    """The grammar shipped in the wheel, or ``grammars/arch.lark`` of a source checkout."""
    packaged = resources.files("archdsl").joinpath("grammars/arch.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammars" / "arch.lark").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(grammar_text(), parser="lalr", lexer="basic", postlex=StatementIf(),
                propagate_positions=True, start=["start", "expression"], cache=True)


_TOKEN_WORDS = {"NAME": "a name", "NUMBER": "a number", "STRING": "a string", "IF": "'if'",
                "STMT_IF": "'if'", "$END": "the end of the file"}


def _token_word(lark: Lark, name: str) -> str:
    if name in _TOKEN_WORDS:
        return _TOKEN_WORDS[name]
    for term in lark.terminals:
        if term.name == name and term.pattern.type == "str":
            return f"'{term.pattern.value}'"
    return name.lower()


_EXPRESSION_STARTS = {"NAME", "NUMBER", "STRING", "LPAR", "LSQB", "MINUS", "PLUS", "TRUE", "FALSE",
                      "NONE", "NOT"}


def _expected(lark: Lark, names) -> str:
    names = set(names)
    words = []
    if {"NUMBER", "STRING"} <= names:
        names -= _EXPRESSION_STARTS
        words.append("an expression")
    words += sorted({_token_word(lark, t) for t in names})
    if len(words) > 8:
        words = words[:8] + ["..."]
    return words[0] if len(words) == 1 else "one of " + ", ".join(words)


def _syntax_error(lark: Lark, err: UnexpectedInput, file: str, text: str) -> ArchError:
    line, col = max(err.line, 1), max(err.column, 1)
    if isinstance(err, UnexpectedCharacters):
        char = text[err.pos_in_stream] if 0 <= err.pos_in_stream < len(text) else "?"
        span = Span(file, line, col, line, col + 1)
        return ArchError(f"The character {char!r} is not part of the .arch language.", span)
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        lines = text.splitlines() or [""]
        span = Span(file, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 2)
        return ArchError("The file ends in the middle of a construct; expected "
                         + _expected(lark, err.expected) + ".", span)
    tok = err.token
    span = Span(file, tok.line, tok.column, tok.end_line or tok.line,
                tok.end_column or tok.column + max(len(tok), 1))
    word = _token_word(lark, tok.type)
    what = word if word.startswith("'") else f"{word} '{tok}'"
    hint = ""
    if tok.type == "IF":
        hint = " A conditional statement must start its own line."
    elif tok.type == "EQUAL":
        hint = " Use '==' to compare; '=' only names a value at the start of a statement."
    return ArchError(f"Unexpected {what} here; expected {_expected(lark, err.expected)}.{hint}", span)


def parse(text: str, file: str = "<string>") -> ast.Module:
    """Parse a whole spec file. Raises :class:`ArchError` for any bad input."""
    return _parse(text, file, "start")


def parse_expression(text: str, file: str = "<command line>") -> ast.Node:
    """Parse a single expression (the value of ``-D name=value``)."""
    return _parse(text, file, "expression")


def _parse(text: str, file: str, start: str):
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise ArchError(f"The spec is larger than {MAX_SOURCE_BYTES} bytes; split it into imported files.",
                        Span(file, 1, 1, 1, 2))
    lark = _lark()
    try:
        return _parse_tree(lark, text, file, start)
    except ArchError as err:
        err.sources.setdefault(file, text)
        raise


def _parse_tree(lark: Lark, text: str, file: str, start: str):
    try:
        tree = lark.parse(text, start=start)
        return _ToAst(file).transform(tree)
    except UnexpectedInput as err:
        raise _syntax_error(lark, err, file, text) from None
    except VisitError as err:
        if isinstance(err.orig_exc, ArchError):
            raise err.orig_exc from None
        if isinstance(err.orig_exc, RecursionError):
            raise ArchError("The spec nests expressions too deeply to parse.", Span(file, 1, 1, 1, 2)) from None
        raise
    except RecursionError:
        raise ArchError("The spec nests expressions too deeply to parse.", Span(file, 1, 1, 1, 2)) from None


def _unescape(body: str) -> str:
    out, i = [], 0
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(escapes.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


@v_args(meta=True, inline=True)
class _ToAst(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.file, 1, 1, 1, 1)
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok(self, tok: Token) -> Span:
        return Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    # ---- top level
    def start(self, meta, *items):
        return ast.Module(self._span(meta), items)

    def expression(self, meta, value):
        return value

    def import_(self, meta, target, alias):
        if isinstance(target, Token):
            return ast.Import(self._span(meta), _unescape(target[1:-1]), False, alias and str(alias))
        return ast.Import(self._span(meta), ".".join(target), True, alias and str(alias))

    def dotted(self, meta, *names):
        return tuple(str(n) for n in names)

    def const(self, meta, name, value):
        return ast.Const(self._span(meta), str(name), value)

    def _definition(self, kind, meta, name, params, body):
        return ast.Definition(self._span(meta), kind, str(name), self._tok(name), params or (), body)

    def block(self, meta, name, params, body):
        return self._definition("block", meta, name, params, body)

    def model(self, meta, name, params, body):
        return self._definition("model", meta, name, params, body)

    def model_alias(self, meta, name, callee, args):
        names, span = callee
        return ast.ModelAlias(self._span(meta), str(name), self._tok(name), names, span,
                              args or ast.Args(span, (), ()))

    def params(self, meta, *params):
        return tuple(p for p in params if p is not None)

    def param(self, meta, name, type_, default):
        return ast.Param(self._tok(name), str(name), type_ and str(type_), default)

    def body(self, meta, *stmts):
        return stmts

    # ---- statements
    def input(self, meta, name, shape):
        return ast.Input(self._span(meta), str(name), shape)

    def output(self, meta, *values):
        return ast.Output(self._span(meta), values)

    def assign(self, meta, first, *rest):
        *targets, value = rest
        head = ast.NameTarget(self._tok(first), str(first))
        target = head if not targets else ast.TupleTarget(self._span(meta), (head, *targets))
        return ast.Assign(self._span(meta), target, value)

    def if_(self, meta, _kw, cond, body, *rest):
        *elifs, orelse = rest
        return ast.If(self._span(meta), ((cond, body), *elifs), orelse)

    def elif_clause(self, meta, cond, body):
        return (cond, body)

    def for_(self, meta, target, iter_, body):
        return ast.For(self._span(meta), target, iter_, body)

    def assert_(self, meta, cond, message):
        return ast.Assert(self._span(meta), cond, message)

    def targets(self, meta, *items):
        return items[0] if len(items) == 1 else ast.TupleTarget(self._span(meta), items)

    def name_target(self, meta, name):
        return ast.NameTarget(self._tok(name), str(name))

    # ---- layers
    def chain(self, meta, source, *layers):
        return ast.Chain(self._span(meta), source, layers)

    def layer(self, meta, label, atom):
        if label is None:
            return atom
        return _replace(atom, label=label, span=self._span(meta))

    def label(self, meta, name, index):
        return ast.Label(self._span(meta), str(name), index)

    def callee(self, meta, *names):
        return (tuple(str(n) for n in names), self._span(meta))

    def call(self, meta, callee, args=None):
        names, span = callee
        return ast.LayerCall(self._span(meta), None, names, args or ast.Args(span, (), ()), span)

    def call_args(self, meta, args=None):
        return args or ast.Args(self._span(meta), (), ())

    def seq(self, meta, body, comp):
        return ast.Seq(self._span(meta), None, body, comp)

    def parallel(self, meta, args, branches):
        return ast.Parallel(self._span(meta), None, args or ast.Args(self._span(meta), (), ()), branches)

    def dense(self, meta, args, branches):
        return ast.Dense(self._span(meta), None, args or ast.Args(self._span(meta), (), ()), branches)

    def residual(self, meta, body, shortcut):
        return ast.Residual(self._span(meta), None, body, shortcut)

    def stn(self, meta, args, body):
        return ast.Stn(self._span(meta), None, args or ast.Args(self._span(meta), (), ()), body)

    def shortcut(self, meta, _if, cond, body):
        return ast.Shortcut(self._span(meta), cond, body)

    def chain_body(self, meta, *layers):
        return layers

    def items(self, meta, *branches):
        return branches

    def branch(self, meta, body, comp):
        return ast.Branch(self._span(meta), body, comp)

    def comp(self, meta, targets, iter_):
        return ast.Comp(self._span(meta), targets, iter_)

    # ---- expressions
    def ternary(self, meta, then, _if, cond, orelse):
        return ast.Ternary(self._span(meta), then, cond, orelse)

    def or_(self, meta, *values):
        return ast.BoolOp(self._span(meta), "or", values)

    def and_(self, meta, *values):
        return ast.BoolOp(self._span(meta), "and", values)

    def not_(self, meta, operand):
        return ast.Unary(self._span(meta), "not", operand)

    def compare(self, meta, left, *rest):
        return ast.Compare(self._span(meta), left, tuple(rest[0::2]), tuple(rest[1::2]))

    def comp_op(self, meta, *toks):
        return " ".join(str(t) for t in toks)

    add_op = mul_op = unary_op = lambda self, meta, tok: str(tok)

    def binop(self, meta, first, *rest):
        left = first
        for op, right in zip(rest[0::2], rest[1::2]):
            left = ast.BinOp(_join(left.span, right.span), op, left, right)
        return left

    def unary(self, meta, op, operand):
        return ast.Unary(self._span(meta), op, operand)

    def power(self, meta, base, exp):
        return ast.BinOp(self._span(meta), "**", base, exp)

    def call_expr(self, meta, func, args=None):
        return ast.CallExpr(self._span(meta), func, args or ast.Args(self._span(meta), (), ()))

    def index(self, meta, obj, index):
        return ast.Index(self._span(meta), obj, index)

    def attr(self, meta, obj, name):
        return ast.Attr(self._span(meta), obj, str(name))

    def var(self, meta, name):
        return ast.Var(self._tok(name), str(name))

    def number(self, meta, tok):
        text = str(tok)
        span = self._tok(tok)
        if any(c in text for c in ".eE"):
            return ast.Literal(span, float(text))
        if len(text) > MAX_INT_DIGITS:
            raise ArchError(f"The integer literal has more than {MAX_INT_DIGITS} digits.", span)
        return ast.Literal(span, int(text))

    def string(self, meta, tok):
        return ast.Literal(self._tok(tok), _unescape(str(tok)[1:-1]))

    def true(self, meta):
        return ast.Literal(self._span(meta), True)

    def false(self, meta):
        return ast.Literal(self._span(meta), False)

    def none(self, meta):
        return ast.Literal(self._span(meta), None)

    def tuple(self, meta, *items):
        return ast.TupleExpr(self._span(meta), tuple(i for i in items if i is not None))

    def list(self, meta, *items):
        return ast.ListExpr(self._span(meta), tuple(i for i in items if i is not None))

    def list_comp(self, meta, elt, comp):
        return ast.ListComp(self._span(meta), elt, comp)

    def args(self, meta, *args):
        positional, keywords, seen = [], [], set()
        for a in args:
            if isinstance(a, ast.KwArg):
                if a.name in seen:
                    raise ArchError(f"The keyword argument '{a.name}' is given twice.", a.span)
                seen.add(a.name)
                keywords.append(a)
            elif keywords:
                raise ArchError("A positional argument cannot follow keyword arguments; "
                                "move it before them or name it.", a.span)
            else:
                positional.append(a)
        return ast.Args(self._span(meta), tuple(positional), tuple(keywords))

    def kwarg(self, meta, name, value):
        return ast.KwArg(self._span(meta), str(name), value)


def _join(a: Span, b: Span) -> Span:
    return Span(a.file, a.line, a.col, b.end_line, b.end_col)


def _replace(node, **changes):
    import dataclasses
    return dataclasses.replace(node, **changes)
