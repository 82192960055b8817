"""The one lexical rule the grammar file cannot state.

``if`` is both a statement (``if cond { ... }``) and the conditional
expression ``a if c else b``. With newlines insignificant, the two collide
after a statement that ends in an expression, so an ``if`` that starts a line
or directly follows ``{`` or ``}`` becomes the statement keyword STMT_IF
(except right after ``shortcut``, whose condition may start the next line).
"""
from __future__ import annotations

_STATEMENT_PRECEDERS = {"LBRACE", "RBRACE"}


class StatementIf:
    always_accept = ()

    def process(self, stream):
        prev = None
        for tok in stream:
            if tok.type == "IF" and (prev is None or prev.type in _STATEMENT_PRECEDERS
                                     or (prev.end_line < tok.line and prev.type != "SHORTCUT")):
                tok.type = "STMT_IF"
            prev = tok
            yield tok
