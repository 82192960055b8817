"""The two lexical rules the grammar file cannot state.

**Statement ``if``.** ``if`` is both a statement (``if cond { ... }``) and part of
the conditional expression ``a if c else b`` or of a comprehension filter
``[f(i) for i in xs if c]``. With newlines insignificant, they collide after a
statement that ends in an expression, so an ``if`` that starts a line or directly
follows ``{`` or ``}`` becomes the statement keyword STMT_IF (except right after
``shortcut``, whose condition may start the next line) -- but never inside a
``(``, a ``[`` or the body of a construct (``parallel``, ``dense``, ``residual``,
``stn``, ``shortcut``), where no statement can stand.

**Labels.** A label is written as adjacent pieces, without spaces between them:
words (keywords included), digits, ``-`` and ``{expr}`` interpolations, then a
``:`` (``block:``, ``block1-0:``, ``block{i}-{j}:``). Where such a run of tokens
is followed by ``:``, its words, numbers and dashes between interpolations are
joined into single NAME tokens (``block1-0`` is one NAME; ``for`` becomes a NAME),
so the grammar sees ``NAME ("{" test "}" NAME?)* ":"``. A ``:`` follows nothing
else but parameter and input names, so the run is a label exactly when it ends in
``:``. The look-ahead is bounded (``MAX_LABEL_TOKENS``), so lexing stays linear.
"""
from __future__ import annotations

from collections import deque

from lark import Token

MAX_LABEL_TOKENS = 64        # tokens a label may span, interpolations included
_STATEMENT_PRECEDERS = {"LBRACE", "RBRACE"}
_CONSTRUCTS = {"PARALLEL", "DENSE", "RESIDUAL", "STN", "SHORTCUT"}
_SKIPPED = {"WS", "COMMENT"}
_LITERAL_PIECES = {"NAME", "NUMBER", "MINUS"}


def _is_word(tok) -> bool:
    """A name or a keyword (keywords are the alphabetic fixed tokens)."""
    return tok.type == "NAME" or (tok.type not in ("NUMBER", "STRING") and str(tok).isalpha())


def _touch(a, b) -> bool:
    return a.end_pos == b.start_pos


class Postlex:
    always_accept = ()

    def process(self, stream):
        return _statement_if(_join_labels(stream))


class _Lookahead:
    def __init__(self, stream):
        self.it = iter(stream)
        self.buf = deque()

    def peek(self, k: int):
        while len(self.buf) <= k:
            tok = next(self.it, None)
            if tok is None:
                return None
            self.buf.append(tok)
        return self.buf[k]

    def pop(self):
        return self.buf.popleft() if self.buf else next(self.it, None)


def _label_run(la: _Lookahead, head) -> int:
    """The number of tokens after ``head`` that belong to its label, or -1 when ``head`` starts none.

    The tokens up to the ``:`` are the run's pieces; whitespace may stand only inside
    ``{ }`` and before the ``:``."""
    last, k, pieces = head, 0, 1
    while k < MAX_LABEL_TOKENS:
        tok = la.peek(k)
        if tok is None:
            return -1
        if tok.type == "COLON":              # `:` may also follow after a space
            return k if pieces > 1 or head.type != "NAME" else -1
        if tok.type in _SKIPPED:             # only `:` may follow after a space (lexing with dont_ignore)
            j = k
            while la.peek(j) is not None and la.peek(j).type in _SKIPPED:
                j += 1
            nxt = la.peek(j)
            return k if nxt is not None and nxt.type == "COLON" and (pieces > 1 or head.type != "NAME") else -1
        if not _touch(last, tok):
            return -1
        if tok.type in _LITERAL_PIECES or _is_word(tok):
            last, k, pieces = tok, k + 1, pieces + 1
            continue
        if tok.type != "LBRACE":
            return -1
        depth, j = 0, k
        while j < MAX_LABEL_TOKENS:
            t = la.peek(j)
            if t is None:
                return -1
            depth += (t.type == "LBRACE") - (t.type == "RBRACE")
            if depth == 0:
                break
            j += 1
        else:
            return -1
        last, k, pieces = la.peek(j), j + 1, pieces + 1
    return -1


def _joined(pieces) -> Token:
    first, last = pieces[0], pieces[-1]
    return Token("NAME", "".join(str(p) for p in pieces), first.start_pos, first.line, first.column,
                 last.end_line, last.end_column, last.end_pos)


def _join_labels(stream):
    la = _Lookahead(stream)
    while True:
        tok = la.pop()
        if tok is None:
            return
        if not _is_word(tok):
            yield tok
            continue
        n = _label_run(la, tok)
        if n < 0:
            yield tok
            continue
        literal, depth = [tok], 0
        for _ in range(n):
            t = la.pop()
            if depth == 0 and (t.type in _LITERAL_PIECES or _is_word(t)):
                literal.append(t)
                continue
            if literal:
                yield _joined(literal)
                literal = []
            depth += (t.type == "LBRACE") - (t.type == "RBRACE")
            yield t
        if literal:
            yield _joined(literal)


def _statement_if(stream):
    prev = None
    stack = []                # "(", "[", "{" (a body of statements) or "c" (a construct's body)
    construct_depth = None    # the depth at which a construct keyword waits for its `{`
    for tok in stream:
        typ = tok.type
        if typ in _SKIPPED:
            yield tok
            continue
        if typ == "IF" and (prev is None or prev.type in _STATEMENT_PRECEDERS
                            or (prev.end_line < tok.line and prev.type != "SHORTCUT")) \
                and all(entry == "{" for entry in stack):
            tok.type = "STMT_IF"
        if typ in _CONSTRUCTS:
            construct_depth = len(stack)
        elif typ in ("LPAR", "LSQB"):
            stack.append("(")
        elif typ == "LBRACE":
            stack.append("c" if construct_depth == len(stack) else "{")
            if construct_depth == len(stack) - 1:
                construct_depth = None
        elif typ in ("RPAR", "RSQB", "RBRACE") and stack:
            stack.pop()
        prev = tok
        yield tok
