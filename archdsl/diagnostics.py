"""Source spans, diagnostics and the one exception type users see.

Every user error is an :class:`ArchError` carrying a :class:`Diagnostic`:
a message, the :class:`Span` it points at, and notes ("block defined here").
Rendering follows the compiler convention ``file:line:col: error: message``
followed by the source line and a caret under the span.
"""
from __future__ import annotations

from dataclasses import dataclass
import difflib
from typing import Iterable, Mapping


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file. Lines and columns are 1-based; ``end_col`` is exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return self.file if self.line == 0 else f"{self.file}:{self.line}:{self.col}"

    @classmethod
    def of_file(cls, file) -> "Span":
        """The span of a file-level problem: rendered ``FILE: error: ...``, without a caret."""
        return cls(str(file), 0, 0, 0, 0)

    def to_json(self) -> list:
        return [self.file, self.line, self.col, self.end_line, self.end_col]

    @classmethod
    def from_json(cls, data) -> "Span | None":
        return None if data is None else cls(*data)


@dataclass(frozen=True, slots=True)
class Note:
    message: str
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class Diagnostic:
    message: str
    span: Span | None
    notes: tuple[Note, ...] = ()
    severity: str = "error"

    def render(self, sources: Mapping[str, str] | None = None) -> str:
        sources = sources or {}
        out = [_render_one(self.severity, self.message, self.span, sources)]
        out += [_render_one("note", n.message, n.span, sources) for n in self.notes]
        return "\n".join(out)


MAX_ECHO = 160          # characters of a source line a diagnostic shows


def _render_one(kind: str, message: str, span: Span | None, sources: Mapping[str, str]) -> str:
    if span is None:
        return f"{kind}: {message}"
    head = f"{span}: {kind}: {message}"
    text = sources.get(span.file) if span.line else None
    if text is None:
        return head
    lines = text.split("\n")          # as the lexer counts lines (splitlines also breaks at \f, \x1c, ...)
    if not 1 <= span.line <= len(lines):
        return head
    src = lines[span.line - 1].rstrip("\r").expandtabs(1)
    col = span.col
    end = span.end_col if span.end_line == span.line else len(src) + 1
    if len(src) > MAX_ECHO:             # a window of the line around the caret, never a whole megabyte
        start = max(0, min(col - 1 - MAX_ECHO // 4, len(src) - MAX_ECHO))
        cut = src[start:start + MAX_ECHO]
        lead = "..." if start > 0 else ""
        src = lead + cut + ("..." if start + MAX_ECHO < len(src) else "")
        col, end = col - start + len(lead), min(end - start, MAX_ECHO + 1) + len(lead)
    src = "".join(c if c.isprintable() else "?" for c in src)     # no control characters to the terminal
    width = max(1, min(end, len(src) + 1) - col)
    gutter = str(span.line)
    pad = " " * len(gutter)
    return (f"{head}\n {gutter} | {src}\n {pad} | "
            + " " * (col - 1) + "^" * width)


class ArchError(Exception):
    """The typed error for every problem in a spec (or in what a user asked of one).

    ``diagnostic`` holds the message, the location and notes; ``str(err)``
    renders it with source lines when the sources are known.
    """

    def __init__(self, message: str, span: Span | None = None, notes: Iterable[Note] = (),
                 sources: Mapping[str, str] | None = None):
        self.diagnostic = Diagnostic(message, span, tuple(notes))
        self.sources: dict[str, str] = dict(sources or {})
        super().__init__(message)

    @property
    def message(self) -> str:
        return self.diagnostic.message

    @property
    def span(self) -> Span | None:
        return self.diagnostic.span

    @property
    def notes(self) -> tuple[Note, ...]:
        return self.diagnostic.notes

    def with_note(self, message: str, span: Span | None) -> "ArchError":
        """Return a copy with one more note (used to add "instantiated from" context)."""
        err = ArchError(self.message, self.span, self.notes + (Note(message, span),), self.sources)
        return err

    def __str__(self) -> str:
        return self.diagnostic.render(self.sources)


class IRError(ArchError):
    """The IR breaks one of its invariants (docs/ir.md): a pass, a saved file or an API call is at fault.

    It is an :class:`ArchError`, located at the span of the node concerned when
    there is one, so the command line reports it like any other error.
    """


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ``"; did you mean 'x'?"`` suffix for the closest candidate, or ``""``."""
    match = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def describe(value) -> str:
    """A short English description of a spec value, for error messages."""
    from .frontend.values import type_name  # local: values imports nothing heavy
    return type_name(value)
