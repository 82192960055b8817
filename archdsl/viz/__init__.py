"""Hierarchical pictures of a graph: blocks as nested clusters, collapsed to boxes below a depth.

``to_dot(graph, depth)`` gives DOT text (no Graphviz needed); ``write(graph,
path, depth)`` writes ``.dot``, ``.svg``/``.png``/``.pdf`` (through Graphviz's
``dot`` program) or a self-contained interactive ``.html`` page, by suffix.
"""
from __future__ import annotations

from pathlib import Path

from ..diagnostics import ArchError
from ..ir.graph import Graph
from .dot import emit, expanded_at, to_dot
from .model import build_view

__all__ = ["build_view", "emit", "expanded_at", "to_dot", "write"]


def write(graph: Graph, path, depth: int | None = None) -> str:
    """Draw ``graph`` into ``path`` (format by suffix) with blocks deeper than ``depth`` collapsed; the format."""
    from . import render
    path = Path(path)
    fmt = render.output_format(path)
    if depth is not None and depth < 0:
        raise ArchError(f"--depth must be 0 or more, but got {depth}.")
    view = build_view(graph)
    expanded = expanded_at(view, depth)
    if fmt == "html":
        from .html import page
        try:
            path.write_text(page(view, expanded), encoding="utf-8")
        except OSError as err:
            raise ArchError(f"Cannot write '{path}': {err.strerror}.") from None
    else:
        render.write(path, fmt, emit(view, expanded))
    return fmt
