"""The tokenizer: grammars/arch.lark's terminals, matched by one regular expression.

Lark's basic lexer calls a matcher, a token constructor and a line counter for every
token, about 2 us a token here. This one matches the same terminals with one compiled
alternation, in the order Lark tries them (priority, then the longest possible match),
so it finds exactly the same tokens; it counts lines only in whitespace, comments and
strings (the terminals that can hold a newline) and builds each :class:`lark.Token`
directly. Keywords are names whose text is a keyword (Lark's "unless" rule). A character
no terminal matches raises Lark's ``UnexpectedCharacters``, as Lark's lexer does, so the
syntax-error messages are the same.
"""
from __future__ import annotations

import re

from lark import Token
from lark.exceptions import UnexpectedCharacters
from lark.lexer import PatternStr

_new = str.__new__


class TooManyTokens(Exception):
    """The text holds more tokens than the caller allowed; ``token`` is the first one beyond."""

    def __init__(self, token):
        super().__init__(token)
        self.token = token


class Count:
    """The tokens a :meth:`Lexer.tokens` call has produced so far, how many it may produce (``limit``), and
    the whole allowance that limit is what is left of (``total``, for messages)."""

    __slots__ = ("n", "limit", "total")

    def __init__(self, limit: int | None = None, total: int | None = None):
        self.n, self.limit, self.total = 0, limit, limit if total is None else total


class Lexer:
    """The tokens of a text, for the parser (whitespace and comments dropped) or for tools
    that keep them (``keep_ignored``)."""

    def __init__(self, basic_lexer):
        terminals = list(basic_lexer.terminals)
        regex = {t.name: t.pattern.to_regexp() for t in terminals}
        words = [t for t in terminals if t.pattern.type != "str"]
        self.keywords = {}
        for t in terminals:
            if isinstance(t.pattern, PatternStr):
                for w in words:
                    if re.fullmatch(regex[w.name], t.pattern.value) and t.priority == w.priority:
                        self.keywords.setdefault(w.name, {})[t.pattern.value] = t.name
                        break
        keyword_names = {name for kws in self.keywords.values() for name in kws.values()}
        scanned = [t for t in terminals if t.name not in keyword_names]
        self.pattern = re.compile("|".join(f"(?P<{t.name}>{regex[t.name]})" for t in scanned))
        self.ignore = frozenset(basic_lexer.ignore_types)
        self.newlines = frozenset(basic_lexer.newline_types)
        self.allowed = {t.name for t in terminals} - self.ignore

    def tokens(self, text: str, keep_ignored: bool = False, count: Count | None = None):
        """Yield the tokens of ``text`` with Lark's positions (1-based line and column, ``end_*``
        one past the token). With ``count``, count them, and raise :class:`TooManyTokens` at the
        first one beyond its limit."""
        n, limit = 0, None if count is None or count.limit is None else count.limit
        match = self.pattern.match
        ignore, newlines = self.ignore, self.newlines
        names = self.keywords.get("NAME", {})
        others = {k: v for k, v in self.keywords.items() if k != "NAME"}
        pos, line, line_start, end = 0, 1, 0, len(text)
        while pos < end:
            m = match(text, pos)
            if m is None:
                raise UnexpectedCharacters(text, pos, line, pos - line_start + 1, allowed=self.allowed)
            typ = m.lastgroup
            stop = m.end()
            if typ in ignore and not keep_ignored:
                if typ in newlines:
                    k = text.count("\n", pos, stop)
                    if k:
                        line += k
                        line_start = text.rindex("\n", pos, stop) + 1
                pos = stop
                continue
            value = m.group()
            if typ == "NAME":
                typ = names.get(value, "NAME")
            elif typ in others:
                typ = others[typ].get(value, typ)
            tok = _new(Token, value)
            tok.type, tok.value, tok.start_pos, tok.line, tok.column = typ, value, pos, line, pos - line_start + 1
            if typ in newlines:
                k = text.count("\n", pos, stop)
                if k:
                    line += k
                    line_start = text.rindex("\n", pos, stop) + 1
            tok.end_line, tok.end_column, tok.end_pos = line, stop - line_start + 1, stop
            if count is not None:
                count.n = n = n + 1
                if limit is not None and n > limit:
                    raise TooManyTokens(tok)
            yield tok
            pos = stop
