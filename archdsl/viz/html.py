"""One self-contained HTML page where clicking a block expands or collapses it.

The page holds the view as JSON, the expanded set to start from, Graphviz
compiled to WebAssembly (Viz.js, vendored in ``vendor/`` with its licence) and
``viewer.js``, which turns the view into DOT exactly as :mod:`archdsl.viz.dot`
does, lays it out in the browser, fits it to the window, pans and zooms, and
searches the view's ``index`` by scope path. Nothing is fetched, so the file
opens offline; the same graph and depth give byte-identical pages.

Names from the spec reach the page in two places only: the title and heading,
HTML-escaped, and the JSON blocks, where ``<``, ``>`` and ``&`` are written as
``\\u003c``-style escapes so that no ``</script>`` or ``<!--`` can occur; the
viewer puts text into the page with ``textContent`` only.
"""
from __future__ import annotations

import json
from importlib import resources

from .labels import esc

_CSS = """
html, body { height: 100%; }
body { margin: 0; font: 13px Helvetica, Arial, sans-serif; color: #222; display: flex; flex-direction: column; }
header { background: #fafafa; border-bottom: 1px solid #ddd; padding: 6px 10px; display: flex; gap: 14px;
         align-items: center; flex-wrap: wrap; flex: none; z-index: 2; }
header .hint { color: #666; }
button { font: inherit; padding: 1px 8px; margin: 0 1px; cursor: pointer; }
#status { color: #444; }
#find { position: relative; }
#search { font: inherit; width: 22em; padding: 2px 6px; }
#matches { position: absolute; top: 100%; left: 0; margin: 2px 0 0; padding: 2px 0; list-style: none;
           background: #fff; border: 1px solid #bbb; box-shadow: 0 3px 8px rgba(0, 0, 0, .15); min-width: 100%;
           max-height: 60vh; overflow-y: auto; z-index: 3; white-space: nowrap; }
#matches[hidden] { display: none; }
#matches li { padding: 2px 8px; cursor: pointer; }
#matches li .what { color: #777; margin-left: 1em; }
#matches li.active { background: #dbe9fb; }
#matches li.more { color: #777; cursor: default; }
#graph { flex: 1; min-height: 0; overflow: hidden; position: relative; cursor: grab; touch-action: none; }
#graph.panning { cursor: grabbing; }
#graph svg { display: block; width: 100%; height: 100%; }
#graph svg text { font-family: Arial, "Liberation Sans", Helvetica, sans-serif; }  /* the metrics Graphviz assumed */
#graph g.node[id^="b:"], #graph g.node[id^="t:"], #graph g.cluster { cursor: pointer; }
#graph g.node[id^="b:"]:hover polygon { stroke-width: 2.5; }
#graph g.cluster:hover > path, #graph g.cluster:hover > polygon { stroke-width: 2.5; }
#graph g.hit polygon, #graph g.hit path, #graph g.hit ellipse { stroke: #e6007e; stroke-width: 4px; }
#graph g.hit { animation: archviz-hit 0.6s ease-in-out 3 alternate; }
@keyframes archviz-hit { to { opacity: 0.45; } }
"""


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _script_safe(text: str, what: str) -> str:
    if "</script" in text.lower():
        raise ValueError(f"{what} contains '</script' and cannot be inlined")
    return text


def as_json(obj) -> str:
    """JSON that is inert inside a ``<script>`` element: no ``<``, ``>`` or ``&`` in it, so no ``</script>``."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(view: dict, expanded: list[str]) -> str:
    """The HTML text of the interactive picture of ``view``, starting with ``expanded`` as clusters."""
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
        '<span id="find"><input id="search" type="search" placeholder="find a layer or block by scope, e.g. '
        'layer2.0.conv1" autocomplete="off" spellcheck="false" aria-label="find a layer or block by scope">'
        '<ul id="matches" role="listbox" hidden></ul></span>',
        '<span>depth <span id="depths"></span></span>',
        '<span>zoom <button id="zoom-out" title="smaller">−</button><button id="zoom-reset" '
        'title="actual size">100%</button><button id="zoom-in" title="larger">+</button>'
        '<button id="zoom-fit" title="fit the picture to the window">fit</button></span>',
        '<span id="status">laying out…</span>',
        '<span class="hint">Click a 3-D box to expand the block; click an open block\'s frame or title to '
        'collapse it. Drag to pan, scroll to zoom; hover for details.</span>',
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
