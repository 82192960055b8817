"""One self-contained HTML page where clicking a block expands or collapses it.

The page holds the view as JSON, the expanded set to start from, Graphviz
compiled to WebAssembly (Viz.js, vendored in ``vendor/`` with its licence) and
``viewer.js``, which turns the view into DOT exactly as :mod:`archdsl.viz.dot`
does and lays it out in the browser. Nothing is fetched, so the file opens
offline; the same graph and depth give byte-identical pages.
"""
from __future__ import annotations

import json
from importlib import resources

from .labels import esc

_CSS = """
body { margin: 0; font: 13px Helvetica, Arial, sans-serif; color: #222; }
header { position: sticky; top: 0; z-index: 1; background: #fafafa; border-bottom: 1px solid #ddd;
         padding: 6px 10px; display: flex; gap: 14px; align-items: center; flex-wrap: wrap; }
header .hint { color: #666; }
button { font: inherit; padding: 1px 8px; margin: 0 1px; cursor: pointer; }
#status { color: #444; }
#graph { padding: 10px; }
#graph svg text { font-family: Arial, "Liberation Sans", Helvetica, sans-serif; }  /* the metrics Graphviz assumed */
#graph g.node[id^="b:"], #graph g.cluster { cursor: pointer; }
#graph g.node[id^="b:"]:hover polygon { stroke-width: 2.5; }
#graph g.cluster:hover > path, #graph g.cluster:hover > polygon { stroke-width: 2.5; }
"""


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _script_safe(text: str, what: str) -> str:
    if "</script" in text.lower():
        raise ValueError(f"{what} contains '</script' and cannot be inlined")
    return text


def page(view: dict, expanded: list[str]) -> str:
    """The HTML text of the interactive picture of ``view``, starting with ``expanded`` as clusters."""
    as_json = lambda obj: json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    name = esc(view["name"])
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{name} · archc viz</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<b>{name}</b>",
        '<span>depth <span id="depths"></span></span>',
        '<span>zoom <button id="zoom-out" title="smaller">−</button><button id="zoom-reset" '
        'title="actual size">100%</button><button id="zoom-in" title="larger">+</button></span>',
        '<span id="status">laying out…</span>',
        '<span class="hint">Click a 3-D box to expand the block; click an open block\'s frame or title to '
        'collapse it. Hover for details.</span>',
        "</header>",
        '<main id="graph"></main>',
        f'<script type="application/json" id="archviz-view">{as_json(view)}</script>',
        f'<script type="application/json" id="archviz-state">{as_json(sorted(expanded))}</script>',
        f"<script>{_script_safe(_asset('vendor/viz-global.js'), 'viz-global.js')}</script>",
        f"<script>{_script_safe(_asset('viewer.js'), 'viewer.js')}</script>",
        "</body>",
        "</html>",
        "",
    ])
