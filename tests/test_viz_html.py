"""The interactive page of `archc viz -o FILE.html`, checked as a document (no browser; test_viz.py drives a
real one): it opens with the top-level blocks collapsed unless --depth says otherwise, carries a search index
of every block and layer by scope, holds nothing fetched, and escapes every name from the spec."""
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

import archdsl
from archdsl.cli import main
from archdsl.viz import build_view, expanded_at, to_dot, write

from zoo import ZOO

GOOGLENET = ZOO / "googlenet.arch"
PAYLOAD = "</script><script>alert(1)</script><!--"

XSS = """
block named(tag: string) {
    input x
    output x -> relu
}
model net() {
    input x: [3, 8, 8]
    output x -> blk: named("%s")
}
""" % PAYLOAD.replace('"', '\\"')


class Page(HTMLParser):
    """The elements of a page as the browser's parser sees them: start tags in order, and the text of each
    ``<script>`` and ``<title>``."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.scripts, self.titles, self._in = [], [], [], None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "title"):
            self._in = (tag, dict(attrs), [])

    def handle_endtag(self, tag):
        if self._in and tag == self._in[0]:
            kind, attrs, parts = self._in
            (self.scripts if kind == "script" else self.titles).append((attrs, "".join(parts)))
            self._in = None

    def handle_data(self, data):
        if self._in:
            self._in[2].append(data)


def _page(tmp_path, argv):
    out = tmp_path / "page.html"
    assert main(["viz", *map(str, argv), "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    return text, Page(text)


def _json(page, ident):
    return json.loads(next(body for attrs, body in page.scripts if attrs.get("id") == ident))


@pytest.mark.parametrize("depth,want", [(None, 0), ("0", 0), ("1", 1), ("full", None)])
def test_the_page_opens_at_depth_0_unless_told(tmp_path, depth, want):
    text, page = _page(tmp_path, [GOOGLENET] + (["--depth", depth] if depth else []))
    view = build_view(archdsl.load(GOOGLENET))
    state = _json(page, "archviz-state")
    assert state == sorted(expanded_at(view, want))
    if depth is None:                                 # every top-level block one box, as issue 15 asks
        assert state == [] and len(view["scopes"]) - 1 == 93
    # pictures keep their default: everything expanded
    write(archdsl.load(GOOGLENET), tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text() == to_dot(archdsl.load(GOOGLENET), None)


def test_the_page_is_self_contained(tmp_path):
    text, page = _page(tmp_path, [GOOGLENET])
    assert [t for t, _ in page.tags].count("script") == 4 and len(page.scripts) == 4
    assert not [a for t, a in page.tags if {"src", "href"} & set(a)]          # nothing loaded from anywhere
    assert not [t for t, _ in page.tags if t in ("link", "iframe", "img", "object", "embed")]
    vendored = Path(archdsl.viz.__file__).parent
    assert page.scripts[2][1] == (vendored / "vendor" / "viz-global.js").read_text(encoding="utf-8")
    assert page.scripts[3][1] == (vendored / "viewer.js").read_text(encoding="utf-8")
    tags = [t for t, _ in page.tags]
    assert tags.index("input") < tags.index("main")                          # the search box, in the header
    search = next(a for t, a in page.tags if t == "input")
    assert search["id"] == "search" and search["type"] == "search"


def test_the_search_index_lists_every_block_and_layer_by_scope(tmp_path):
    _, page = _page(tmp_path, [GOOGLENET])
    graph = archdsl.load(GOOGLENET)
    view = _json(page, "archviz-view")
    index = view["index"]
    by_target = {target: (path, what, opened) for path, what, target, opened in index}
    assert len(by_target) == len(index)                                      # each thing once
    scopes = {p for p in view["scopes"] if p}
    assert {t[2:] for t in by_target if t.startswith("s:")} == scopes
    assert {t for t in by_target if not t.startswith("s:")} == {f"n{i}" for i in graph.node_ids()}

    def around(scope):
        out = []
        while scope:
            out.insert(0, scope)
            scope = view["scopes"][scope]["parent"]
        return out
    for path, what, target, opened in index:
        if target.startswith("s:"):
            assert path == target[2:] and opened == around(view["scopes"][path]["parent"])
        else:
            node = graph.data(int(target[1:]))
            assert path == (node["scope"] or node["attrs"]["name"]) and opened == around(view["owner"][target])
    # what the issue types: the branch is a seq inside its module; its layers open both
    assert by_target["s:inception4a.branch2"] == ("inception4a.branch2", "seq", ["inception4a"])
    conv = next(n.id for n in graph.nodes() if n.scope == "inception4a.branch2.1.conv")
    assert by_target[f"n{conv}"] == ("inception4a.branch2.1.conv", "conv 3×3, 208",
                                     ["inception4a", "inception4a.branch2", "inception4a.branch2.1"])
    # graph order, a scope just before its first layer
    order = [t for _, _, t, _ in index]
    assert order.index("s:inception4a") < order.index("s:inception4a.branch1") < order.index(f"n{conv}")
    assert order.index(f"n{conv}") < order.index("s:inception4b")


def test_names_from_the_spec_cannot_break_out(tmp_path):
    graph = archdsl.load(XSS)
    graph.name = PAYLOAD                                                        # a model name, through the API
    out = tmp_path / "x.html"
    write(graph, out)
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    # the parser sees our four scripts and nothing else: no element was injected
    assert [t for t, _ in page.tags].count("script") == 4 and len(page.scripts) == 4
    assert text.count("<script") == 4 and text.lower().count("</script") == 4
    head = text.split("<script", 1)[0]                                          # title and header: escaped
    assert head.count("&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;!--") == 2
    assert page.titles == [({}, f"{PAYLOAD} · archc viz")]                       # shown as text
    # the JSON carries the exact strings back to the viewer
    view = _json(page, "archviz-view")
    assert view["name"] == PAYLOAD
    title = view["scopes"]["blk"]["title"]["label"]
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in title and "<script" not in title   # Graphviz markup
    assert re.search(r"[<>&]", page.scripts[0][1]) is None and re.search(r"[<>&]", page.scripts[1][1]) is None
    # and the viewer writes text only as text
    viewer = page.scripts[3][1]
    assert "innerHTML" not in viewer and "insertAdjacentHTML" not in viewer and "document.write" not in viewer


def test_names_in_dot_are_quoted(tmp_path):
    graph = archdsl.load(XSS)
    graph.name = 'a"b\\c'
    first = to_dot(graph, None).splitlines()[0]
    assert first == 'digraph "a\\"b\\\\c" {'
    box = next(l for l in to_dot(graph, 0).splitlines() if l.strip().startswith('"b:blk"'))
    assert 'tag="&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;!--"' not in box   # cut to 32
    assert "tag=&quot;&lt;/script&gt;&lt;script&gt;alert(1)&lt;/scrip…" in box and "<script" not in box
