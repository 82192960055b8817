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

__all__ = ["HTML_DEPTH", "build_view", "emit", "expanded_at", "to_dot", "write"]

HTML_DEPTH = 0      # the page opens with every top-level block collapsed to one box unless a depth is given


def write(graph: Graph, path, depth: int | None | str = "default") -> str:
    """Draw ``graph`` into ``path`` (format by suffix) with blocks deeper than ``depth`` collapsed; the format.

    ``depth=None`` expands every block; the default does so too for pictures, while the HTML page opens at
    :data:`HTML_DEPTH` (every top-level block a box), to be expanded by clicking or searching.
    """
    from . import render
    path = Path(path)
    fmt = render.output_format(path)
    if depth == "default":
        depth = HTML_DEPTH if fmt == "html" else None
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
