"""Text to AST: the Lark LALR parser for ``grammars/arch.lark``, its syntax-error diagnostics
(what was found, what would have fitted, which bracket is still open) and the AST constructors
that :mod:`archdsl.syntax.lalr` calls as the parser reduces each rule."""
from __future__ import annotations

import difflib
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..diagnostics import ArchError, Note, Span
from . import ast, lalr, tables
from .lexer import Count, Lexer, TooManyTokens
from .postlex import Postlex

MAX_SOURCE_BYTES = 1_000_000
MAX_TOKENS = 75_000        # the most any parse reads: a compile's, over the spec and its imports, or fmt's
MAX_INT_DIGITS = 40
MAX_NESTING = 100          # levels of the parse tree; real specs use under 20
RESERVED = "ops"           # `ops.NAME` always means the built-in op NAME
_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_LABEL_TEXT = re.compile(r"[A-Za-z0-9_-]*")


def grammar_text() -> str:
    """The grammar shipped in the wheel, or ``grammars/arch.lark`` of a source checkout."""
    packaged = resources.files("archdsl").joinpath("grammars/arch.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammars" / "arch.lark").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _lark() -> Lark:
    """The parser (no cache file: :mod:`archdsl.syntax.tables`)."""
    return tables.load(grammar_text(), Postlex())


@lru_cache(maxsize=1)
def _lexer() -> Lexer:
    return Lexer(_lark().parser.lexer.lexer)


def tokens(text: str, count: Count | None = None, keep_ignored: bool = False):
    """The tokens the parser reads: whitespace and comments dropped (unless ``keep_ignored``), labels joined,
    statement ``if``: Lark's ``lex`` (``dont_ignore``) with the postlexer, faster."""
    return Postlex().process(_lexer().tokens(text, keep_ignored=keep_ignored, count=count))


# ---- syntax errors: what was found, what would have fitted, which bracket is open

_OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}
# Tokens that read better as one word in "expected ...": (word, tokens that must all be acceptable,
# further tokens the word covers).
_GROUPS = [
    ("a layer", {"NAME", "LSQB", "PARALLEL", "DENSE", "RESIDUAL", "STN"}, set()),
    ("a statement", {"INPUT", "OUTPUT", "FOR", "ASSERT"}, {"NAME", "STMT_IF", "RETURN"}),
    ("a definition", {"IMPORT", "BLOCK", "MODEL"}, {"NAME", "DEF"}),
    ("an expression", {"NAME", "NUMBER", "STRING"},
     {"LPAR", "LSQB", "MINUS", "PLUS", "TRUE", "FALSE", "NONE", "NOT"}),
]
_OPERATORS = {"+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=", "and", "or", "not", "in",
              "if", ".", "(", "["}


@lru_cache(maxsize=1)
def _literals() -> dict:
    """Terminal name -> its fixed text ('->', 'model'); names, numbers and strings have none."""
    out = {t.name: t.pattern.value for t in _lark().terminals if t.pattern.type == "str"}
    out["STMT_IF"] = "if"
    return out


def _expected(names) -> str:
    """The tokens the parser would have accepted, in words: "',' or ')'", "a statement or '}'"."""
    lits = _literals()
    names = set(names)
    groups = []
    if {"PLUS", "STAR"} <= names:                       # after a complete value: any binary operator fits
        names = {n for n in names if lits.get(n) not in _OPERATORS}
        groups.append("an operator")
    for word, members, covered in _GROUPS:
        if members <= names:
            names -= members | covered
            groups.insert(0, word)
    words = sorted(f"'{lits[n]}'" for n in names if n in lits)
    words += [{"NAME": "a name", "NUMBER": "a number", "STRING": "a string", "$END": "the end of the file"}
              .get(n, n.lower()) for n in sorted(names) if n not in lits]
    words += groups
    if not words:
        return "something else"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _found(tok: Token) -> str:
    text = str(tok) if len(tok) <= 30 else str(tok)[:30] + "..."
    if tok.type in _literals():
        return f"'{text}'"
    return {"NAME": f"name '{text}'", "NUMBER": f"number {text}", "STRING": f"string {text}"}.get(tok.type, text)


def _tokens_before(lark: Lark, text: str, pos: int | None) -> list:
    """The tokens that start before ``pos`` (all of them when ``pos`` is None)."""
    out = []
    try:
        for tok in tokens(text):
            if pos is not None and tok.start_pos >= pos:
                break
            out.append(tok)
    except UnexpectedInput:          # a bad character past the parse error
        pass
    return out


def _open_bracket(tokens) -> Token | None:
    """The innermost bracket still open at the end of ``tokens``."""
    stack = []
    for tok in tokens:
        if tok.type in _OPENERS:
            stack.append(tok)
        elif tok.type in _CLOSERS and stack and stack[-1].type == _CLOSERS[tok.type]:
            stack.pop()
    return stack[-1] if stack else None


def _tok_span(file: str, tok: Token) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column + 1)


def _syntax_error(lark: Lark, err: UnexpectedInput, file: str, text: str, start: str) -> ArchError:
    line, col = max(err.line, 1), max(err.column, 1)
    if isinstance(err, UnexpectedCharacters):
        char = text[err.pos_in_stream] if 0 <= err.pos_in_stream < len(text) else "?"
        span = Span(file, line, col, line, col + 1)
        if char == '"':
            return ArchError("This string is not closed: add a '\"' before the end of the line (a string cannot "
                             "span lines).", span)
        hint = {"'": " Strings are written in double quotes: \"text\".",
                "!": " Write 'not' for negation and '!=' for 'not equal'."}.get(char, "")
        return ArchError(f"The character {char!r} is not part of the .arch language.{hint}", span)
    accepted = err.expected
    if isinstance(err, UnexpectedToken) and err.interactive_parser is not None:
        accepted = err.interactive_parser.accepts() or accepted     # exact, after the pending reductions
    if set(accepted) == {"COMMA", "EQUAL", "LSQB"}:    # after a statement's first name: `xs[i] = v` is rarer
        accepted = {"COMMA", "EQUAL"}
    at_end = isinstance(err, UnexpectedEOF) or err.token.type == "$END"
    tokens = _tokens_before(lark, text, None if at_end else err.token.start_pos)
    opener = _open_bracket(tokens)
    notes = ()
    if opener is not None and _OPENERS[opener.type] in accepted and (
            at_end or err.token.type in _CLOSERS
            or (opener.type != "LBRACE" and err.token.line > opener.line)):    # forgot to close it?
        notes = (Note(f"the '{opener}' opened here is not closed yet", _tok_span(file, opener)),)
    if at_end:
        end = len(text.rstrip())                        # just after the last non-blank character
        line = text.count("\n", 0, end) + 1
        col = end - (text.rfind("\n", 0, end) + 1) + 1
        span = Span(file, line, col, line, col + 1)
        what = "file" if start == "start" else "expression"
        if notes:
            return ArchError(f"The {what} ends before the '{opener}' on line {opener.line} is closed; is a "
                             f"'{_literals()[_OPENERS[opener.type]]}' missing?", span, notes)
        return ArchError(f"The {what} ends too early; expected {_expected(accepted)}.", span)
    tok = err.token
    span = _tok_span(file, tok)
    hint = ""
    prev = str(tokens[-1]) if tokens and tokens[-1].type == "NAME" and tok.type == "NAME" \
        and set(accepted) <= {"COMMA", "EQUAL"} else ""
    keyword = difflib.get_close_matches(prev, sorted(w for w in _literals().values() if w.isalpha()), 1, 0.75)
    if keyword:                                        # `modle m() {...}`, `ouput x`
        hint = f" Did you mean the keyword '{keyword[0]}' instead of '{prev}'?"
    elif tok.type == "IF":
        hint = " A conditional statement must start its own line."
    elif tok.type == "EQUAL" and any(_literals().get(n) == "==" for n in accepted):
        hint = " Use '==' to compare; '=' only names a value at the start of a statement."
    elif set(accepted) == {"COMMA", "EQUAL"} and tokens and tokens[-1].type == "NAME":
        prev = tokens[-1]
        hint = f" A statement that starts with a name assigns to it (`{prev} = ...`)"
        hint += f"; is a '->' missing before '{prev}'?" if len(tokens) > 1 and tokens[-2].type == "NAME" else "."
    return ArchError(f"Unexpected {_found(tok)} here; expected {_expected(accepted)}.{hint}", span, notes)


def _depth_error(tree, file: str) -> ArchError | None:
    """An error at the first place the parse tree is deeper than MAX_NESTING (checked without recursion)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, Tree):
            continue
        if depth > MAX_NESTING:
            while isinstance(node, Tree) and getattr(node.meta, "empty", True) and node.children:
                node = node.children[0]
            meta = node if isinstance(node, Token) else node.meta
            line, col = getattr(meta, "line", 1), getattr(meta, "column", 1)
            return ArchError(f"The spec nests too deeply here for the compiler (more than {MAX_NESTING} levels "
                             "in its syntax tree); flatten it, for example with intermediate names.",
                             Span(file, line, col, line, col + 1))
        stack.extend((child, depth + 1) for child in reversed(node.children))
    return None


def parse(text: str, file: str = "<string>") -> ast.Module:
    """Parse a whole spec file of at most :data:`MAX_TOKENS` tokens. Raises :class:`ArchError` for any bad
    input."""
    return _parse(text, file, "start", Count(MAX_TOKENS))


def parse_counted(text: str, file: str, max_tokens: int, total: int) -> tuple[ast.Module, int]:
    """``(module, tokens read)``; a located error at the first token beyond ``max_tokens``, what is left of
    the ``total`` tokens a compile may read."""
    count = Count(max_tokens, total)
    return _parse(text, file, "start", count), count.n


def parse_expression(text: str, file: str = "<command line>") -> ast.Node:
    """Parse a single expression (the value of ``-D name=value``)."""
    return _parse(text, file, "expression", Count(MAX_TOKENS))


def _parse(text: str, file: str, start: str, count: Count):
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise ArchError(f"The spec is larger than {MAX_SOURCE_BYTES} bytes; split it into imported files.",
                        Span(file, 1, 1, 1, 2))
    lark = _lark()
    try:
        return _parse_tree(lark, text, file, start, count)
    except ArchError as err:
        err.sources.setdefault(file, text)
        raise


def _parse_tree(lark: Lark, text: str, file: str, start: str, count: Count):
    """Syntax errors first, then the nesting limit, then the first error an AST constructor raised."""
    build = lalr.Build(file, _ToAst(file))
    try:
        root = lalr.parse(lark, tokens(text, count), start, build)
    except UnexpectedInput as err:
        raise _syntax_error(lark, err, file, text, start) from None
    except TooManyTokens as err:
        raise ArchError(f"The spec is too large to compile: it and its imports hold more than {count.total} tokens "
                        "(names, numbers and symbols), all that one compile may read; the largest network of the "
                        "zoo needs under 5000.", _tok_span(file, err.token)) from None
    if root.height > MAX_NESTING:          # rare: parse again into a tree to find where
        too_deep = _depth_error(lark.parse(text, start=start), file)
        if too_deep is not None:
            raise too_deep
    if build.error is not None:
        raise build.error
    return root.value


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


class _ToAst:
    """The AST constructors, one per rule alias of the grammar. Each takes the span of the text its rule
    covers (named ``meta``, as Lark's positions) and the rule's children."""

    def __init__(self, file: str):
        self.file = file

    @staticmethod
    def _span(meta: Span) -> Span:
        return meta

    def _tok(self, tok: Token) -> Span:
        return Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    def _bound(self, tok: Token, what: str = "a name") -> str:
        """The text of a name that is being bound (a variable, parameter, definition, namespace)."""
        name = str(tok)
        if name == RESERVED:
            raise ArchError(f"The name '{RESERVED}' is reserved for the built-in ops (`ops.conv(...)`); "
                            f"choose another name for {what}.", self._tok(tok))
        if name in _literals().values():
            raise ArchError(f"'{name}' is a keyword and cannot be {what}; keywords can only be labels.",
                            self._tok(tok))
        if not _NAME.fullmatch(name):
            raise ArchError(f"'{name}' is not a valid name for {what}: a name is letters, digits and '_', "
                            "starting with a letter or '_' ('-' is allowed in labels only).", self._tok(tok))
        return name

    # ---- top level
    def start(self, meta, *items):
        return ast.Module(self._span(meta), items)

    def expression(self, meta, value):
        return value

    def import_(self, meta, target, alias):
        if isinstance(target, Token):
            return ast.Import(self._span(meta), _unescape(target[1:-1]), False,
                              alias and self._bound(alias, "a namespace"))
        return ast.Import(self._span(meta), ".".join(target), True, alias and self._bound(alias, "a namespace"))

    def dotted(self, meta, *names):
        return tuple(str(n) for n in names)

    def const(self, meta, name, value):
        return ast.Const(self._span(meta), self._bound(name, "a constant"), value)

    def _definition(self, kind, meta, name, params, body):
        return ast.Definition(self._span(meta), kind, self._bound(name, f"a {kind}"), self._tok(name),
                              params or (), body)

    def function(self, meta, name, params, body):
        return ast.Function(self._span(meta), self._bound(name, "a function"), self._tok(name), params or (),
                            body)

    def block(self, meta, name, params, body):
        return self._definition("block", meta, name, params, body)

    def model(self, meta, name, params, body):
        return self._definition("model", meta, name, params, body)

    def model_alias(self, meta, name, callee, args):
        names, span = callee
        return ast.ModelAlias(self._span(meta), self._bound(name, "a model"), self._tok(name), names, span,
                              args or ast.Args(span, (), ()))

    def params(self, meta, *params):
        return tuple(p for p in params if p is not None)

    def param(self, meta, name, type_, default):
        return ast.Param(self._tok(name), self._bound(name, "a parameter"), type_ and str(type_), default,
                         type_ and self._tok(type_))

    def body(self, meta, *stmts):
        return stmts

    # ---- statements
    def input(self, meta, name, shape):
        return ast.Input(self._span(meta), self._bound(name, "an input"), shape)

    def output(self, meta, *values):
        return ast.Output(self._span(meta), values)

    def assign(self, meta, first, *rest):
        *targets, value = rest
        head = ast.NameTarget(self._tok(first), self._bound(first, "a variable"))
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

    def return_(self, meta, value):
        return ast.Return(self._span(meta), value)

    def set_item(self, meta, name, *rest):
        *indices, value = rest
        return ast.SetItem(self._span(meta), self._bound(name, "a variable"), self._tok(name), tuple(indices),
                           value)

    def targets(self, meta, *items):
        return items[0] if len(items) == 1 else ast.TupleTarget(self._span(meta), items)

    def name_target(self, meta, name):
        return ast.NameTarget(self._tok(name), self._bound(name, "a variable"))

    # ---- layers
    def chain(self, meta, source, *layers):
        return ast.Chain(self._span(meta), source, layers)

    def layer(self, meta, label, atom):
        if label is None:
            return atom
        return _replace(atom, label=label, span=self._span(meta))

    def label(self, meta, *pieces):
        parts = []
        for piece in pieces:
            if piece is None:
                continue
            if isinstance(piece, Token):
                text = str(piece)
                if not _LABEL_TEXT.fullmatch(text):
                    raise ArchError(f"The label text '{text}' may hold only letters, digits, '_' and '-'.",
                                    self._tok(piece))
                if parts and isinstance(parts[-1], str):
                    parts[-1] += text
                    continue
                parts.append(text)
            else:
                parts.append(piece)
        return ast.Label(self._span(meta), tuple(parts))

    def label_value(self, meta, value):
        return value

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

    def comp(self, meta, targets, iter_, _if=None, cond=None, orelse=None):
        if orelse is not None:             # `for t in a if c else b`: a conditional expression, no filter
            iter_, cond = ast.Ternary(_join(iter_.span, orelse.span), iter_, cond, orelse), None
        return ast.Comp(self._span(meta), targets, iter_, cond)

    def seq_value(self, meta, first, *rest):
        *layers, comp = rest
        if isinstance(first, ast.Label):
            head, layers = _replace(layers[0], label=first, span=_join(first.span, layers[0].span)), layers[1:]
        else:
            head = _as_layer(first)
        return ast.Seq(self._span(meta), None, (head, *layers), comp)

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


_LAYERS = (ast.LayerCall, ast.Seq, ast.Parallel, ast.Dense, ast.Residual, ast.Stn)


def _dotted(e) -> tuple | None:
    if isinstance(e, ast.Var):
        return (e.name,)
    if isinstance(e, ast.Attr):
        head = _dotted(e.obj)
        return head and head + (e.name,)
    return None


def _as_layer(e):
    """The first item of a sequence value, parsed as an expression, as the layer it names."""
    if isinstance(e, _LAYERS):
        return e
    func, args = (e.func, e.args) if isinstance(e, ast.CallExpr) else (e, None)
    names = _dotted(func)
    if names is None:
        raise ArchError("A sequence `[a -> b]` must start with a layer (a block or op, possibly with arguments), "
                        "not with this expression.", e.span)
    return ast.LayerCall(e.span, None, names, args or ast.Args(func.span, (), ()), func.span)


def _join(a: Span, b: Span) -> Span:
    return Span(a.file, a.line, a.col, b.end_line, b.end_col)


def _replace(node, **changes):
    import dataclasses
    return dataclasses.replace(node, **changes)
