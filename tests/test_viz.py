"""`archc viz`: hierarchical pictures. Structure is checked, not bytes: the clusters are the block
instances down to the chosen depth, the boxes the ones just below, and the edges are the IR's
(mapped onto what is drawn). The interactive page is clicked in a real headless Chromium."""
import base64
import fcntl
import io
import json
import os
import re
import select
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import archdsl
from archdsl import ArchError
from archdsl.cli import main
from archdsl.ir.stats import human, layer_stats
from archdsl.viz import build_view, emit, expanded_at, to_dot, write

from zoo import ZOO, zoo_models  # noqa: E402
RESNET = str(ZOO / "resnet.arch")
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")

INCEPTION = """
block unit(c: int) {
    input x
    output x -> conv(c, 1) -> relu
}
block inception(a: int, b: int) {
    input x
    output x -> parallel {
        b1: unit(a)
        b2: [unit(b) -> conv(b, 3, padding=1)]
        b3: [maxpool(3, stride=1, padding=1) -> unit(a)]
    }
}
model net() {
    input x: [8, 16, 16]
    output x -> stem: conv(16, 3, padding=1) -> mix: inception(4, 6) -> pool: adaptive_avgpool(1)
             -> flatten -> fc: linear(10)
}
"""

DENSE = """
block layer(k: int) {
    input x
    output x -> bn -> relu -> conv(k, 3, padding=1, bias=false)
}
model net() {
    input x: [3, 8, 8]
    h = x -> conv0: conv(8, 3, padding=1)
    output h -> block1: dense(growth=4) { unit{j}: layer(4) for j in range(4) } -> relu
}
"""

RESIDUAL = """
model net() {
    input x: [4, 8, 8]
    h = x -> conv0: conv(8, 3, padding=1)
    h = h -> residual { conv(8, 3, padding=1) -> relu } -> relu
    output h -> residual { c1: conv(16, 3, stride=2, padding=1) } shortcut { proj: conv(16, 1, stride=2) }
}
"""


# ---- the expected structure, computed from graph.scopes alone ----------------------------------

def expected(graph, depth):
    """(clusters {path: parent cluster}, boxes {path: parent cluster}, nodes, edges) at ``depth``."""
    registered = {p for p in graph.scopes if p}

    def owner(path, include_self):
        parts = path.split(".") if path else []
        for n in range(len(parts) - (0 if include_self else 1), 0, -1):
            if ".".join(parts[:n]) in registered:
                return ".".join(parts[:n])
        return ""

    def level(p):
        return 0 if not p else 1 + level(owner(p, False))

    def chain(nid):                        # the scopes holding a node, outermost first
        out, s = [], owner(graph.data(nid)["scope"], True)
        while s:
            out.insert(0, s)
            s = owner(s, False)
        return out

    def rep(nid):
        for s in chain(nid):
            if depth is not None and level(s) > depth:
                return f"b:{s}"
        return f"n{nid}"

    live = {s for nid in graph.node_ids() for s in chain(nid)}
    clusters = {p: owner(p, False) for p in live if depth is None or level(p) <= depth}
    boxes = {p: owner(p, False) for p in live if depth is not None and level(p) == depth + 1}
    nodes = {rep(n) for n in graph.node_ids()} - {f"b:{p}" for p in boxes}
    edges = {(rep(u), rep(v)) for u, v in graph.nx.edges} - {(a, a) for a in nodes | {f"b:{p}" for p in boxes}}
    return clusters, boxes, nodes, {e for e in edges if e[0] != e[1]}


def parse_dot(text, ranks=None):
    """The clusters (with their parent cluster), nodes (with theirs) and edges (with attributes) of our DOT;
    ``rank=same`` groups go to ``ranks`` (a list) when given."""
    clusters, nodes, edges, stack = {}, {}, [], [""]
    for line in text.splitlines()[1:-1]:
        if m := re.fullmatch(r'\s*subgraph "cluster_(.*)" \{', line):
            clusters[m[1]] = stack[-1]
            stack.append(m[1])
        elif re.fullmatch(r"\s*\}", line):
            stack.pop()
        elif m := re.fullmatch(r'\s*"([^"]+)" -> "([^"]+)" \[(.*)\];', line):
            edges.append((m[1], m[2], m[3]))
        elif m := re.fullmatch(r'\s*"([^"]+)" \[.*\];', line):
            nodes[m[1]] = stack[-1]
        elif m := re.fullmatch(r'\s*\{rank=same; ((?:"[^"]+"; )*"[^"]+");\}', line):
            if ranks is not None:
                ranks.append((stack[-1], re.findall(r'"([^"]+)"', m[1])))
        else:
            assert re.fullmatch(r"\s*(graph|node|edge) \[.*\];", line), line
    assert stack == [""]
    return clusters, nodes, edges


def visible(edges):
    return [e for e in edges if 'style="invis"' not in e[2]]


def through_rails(nodes, edges):
    """Edges between real nodes and boxes, with each path through dense-rail points ``r<id>`` and cluster
    entry points ``e:C/T`` as one edge."""
    succ = {}
    for t, h, _ in visible(edges):
        succ.setdefault(t, []).append(h)
    passing = lambda k: k.startswith(("r", "e:"))
    out = set()
    for t in nodes:
        if passing(t) or t.startswith("t:"):
            continue
        todo, seen = list(succ.get(t, [])), set()
        while todo:
            h = todo.pop()
            if h in seen:
                continue
            seen.add(h)
            if passing(h):
                todo += succ.get(h, [])
            else:
                out.add((t, h))
    return out


def check_titles(clusters, nodes, edges, ranks):
    """Every cluster has its title node; an edge enters a cluster only at one of its entry points, which
    share the title's rank and lie to its right; so no edge crosses a title."""
    around = lambda k: [] if not nodes[k] else [nodes[k]] + around_c(nodes[k])
    around_c = lambda c: [] if not clusters[c] else [clusters[c]] + around_c(clusters[c])
    assert {k[2:] for k in nodes if k.startswith("t:")} == set(clusters)
    assert all(nodes["t:" + c] == c for c in clusters)
    groups = {c: names for c, names in ranks}
    flat = {(t, h) for t, h, a in edges if 'style="invis"' in a}
    for t, h, _ in visible(edges):
        entered = [c for c in around(h) if c not in around(t)]
        if entered:
            assert entered == [nodes[h]] and h.startswith(f"e:{nodes[h]}/"), (t, h)
            assert h in groups[nodes[h]] and groups[nodes[h]][0] == f"t:{nodes[h]}"
            assert (f"t:{nodes[h]}", h) in flat
    for c, names in ranks:
        assert names[0] == f"t:{c}" and all(nodes[x] == c and x.startswith(f"e:{c}/") for x in names[1:])


def check_structure(graph, depth, text=None):
    text = text if text is not None else to_dot(graph, depth)
    ranks = []
    clusters, nodes, edges = parse_dot(text, ranks)
    want_clusters, want_boxes, want_nodes, want_edges = expected(graph, depth)
    assert clusters == want_clusters
    assert {k[2:]: v for k, v in nodes.items() if k.startswith("b:")} == want_boxes
    assert {k for k in nodes if k.startswith("n")} == want_nodes
    # a node sits in the cluster of its innermost scope
    for k, parent in nodes.items():
        if k.startswith("n"):
            scope = graph.data(int(k[1:]))["scope"]
            assert parent == "" or scope == parent or scope.startswith(parent + "."), (k, parent)
    assert len({(t, h) for t, h, _ in edges}) == len(edges)           # merged: one drawn edge per pair
    assert through_rails(nodes, edges) == want_edges
    check_titles(clusters, nodes, edges, ranks)
    return clusters, nodes, edges


# ---- structure -----------------------------------------------------------------------------------

@pytest.mark.parametrize("file,name", zoo_models(), ids=lambda x: x)
def test_every_zoo_model_at_every_depth(file, name):
    graph = archdsl.load(ZOO / file, name)
    view = build_view(graph)
    for depth in list(range(view["max_depth"] + 1)) + [None]:
        check_structure(graph, depth, emit(view, expanded_at(view, depth)))
    clusters, nodes, edges = parse_dot(emit(view, expanded_at(view, None)))
    assert {k for k in nodes if not k.startswith(("r", "t:", "e:"))} == {f"n{i}" for i in graph.node_ids()}
    assert through_rails(nodes, edges) == {(f"n{u}", f"n{v}") for u, v in graph.nx.edges}


def test_resnet50_depths():
    graph = archdsl.load(RESNET, "resnet50")
    clusters, nodes, _ = check_structure(graph, 1)
    assert clusters == {f"layer{i}": "" for i in range(1, 5)}
    assert sorted(k for k in nodes if k.startswith("b:")) == sorted(
        f"b:layer{i}.{j}" for i, n in enumerate([3, 4, 6, 3], 1) for j in range(n))
    clusters, nodes, _ = check_structure(graph, 2)
    assert clusters["layer1.0"] == "layer1" and "b:layer1.0.downsample" in nodes and "n5" in nodes
    assert check_structure(graph, 0)[0] == {}


def test_residual_shortcuts_are_dashed_red_and_labelled_once():
    graph = archdsl.load(RESIDUAL)
    _, _, edges = check_structure(graph, None)
    shortcut = [(t, h) for t, h, a in edges if 'style="dashed"' in a]
    adds = [n.id for n in graph.nodes() if n.op == "add"]
    identity_src, projection_add = graph.data(adds[0])["inputs"][1], adds[1]
    proj = next(n.id for n in graph.nodes() if n.scope == "proj")
    assert set(shortcut) == {(f"n{identity_src}", f"n{adds[0]}"), (f"n{proj}", f"n{projection_add}"),
                             (f"n{graph.data(proj)['inputs'][0]}", f"n{proj}")}
    attrs = {(t, h): a for t, h, a in edges}
    assert "label" not in attrs[(f"n{identity_src}", f"n{adds[0]}")]        # the same tensor as the main path's
    assert 'label=<16×4×4>' in attrs[(f"n{proj}", f"n{projection_add}")]


def test_inception_branches_are_clusters_side_by_side_in_order():
    graph = archdsl.load(INCEPTION)
    clusters, nodes, edges = check_structure(graph, None)
    assert clusters == {"mix": "", "mix.b1": "mix", "mix.b2": "mix", "mix.b2.0": "mix.b2", "mix.b3": "mix",
                        "mix.b3.1": "mix.b3"}
    concat = next(n for n in graph.nodes() if n.op == "concat")
    assert 'ordering="in"' in next(l for l in to_dot(graph).splitlines() if l.strip().startswith(f'"n{concat.id}"'))
    # the tensor entering the module is labelled once, on its way to the module's entry point (beside the
    # title), where it fans out to the three branches
    stem = next(n.id for n in graph.nodes() if n.scope == "stem")
    assert [(h, "label=" in a) for t, h, a in edges if t == f"n{stem}"] == [(f"e:mix/n{stem}", True)]
    fan = [(h, a) for t, h, a in edges if t == f"e:mix/n{stem}"]
    assert [h for h, _ in fan] == [f"e:mix.b1/n{stem}", f"e:mix.b2/n{stem}", f"e:mix.b3/n{stem}"]
    assert not any("label=" in a for _, a in fan)
    clusters, nodes, _ = check_structure(graph, 1)
    assert clusters == {"mix": ""} and {k for k in nodes if k.startswith("b:")} == {"b:mix.b1", "b:mix.b2",
                                                                                     "b:mix.b3"}


def test_dense_block_draws_a_rail_that_stands_for_every_dense_edge():
    graph = archdsl.load(DENSE)
    concats = [n for n in graph.nodes() if n.op == "concat"]
    assert [len(n.inputs) for n in concats] == [2, 3, 4, 5]
    _, nodes, edges = check_structure(graph, None)
    rails = sorted(k for k in nodes if k.startswith("r"))
    assert rails == sorted(f"r{n.id}" for n in concats)
    # the IR's 1 + 2 + 3 + 4 dense edges become 4 taps, 3 rail segments and 4 drops (O(n), not O(n^2))
    assert sum(len(n.inputs) - 1 for n in concats) == 10
    assert sum(1 for t, h, _ in edges if t.startswith("r") or h.startswith("r")) == 4 + 3 + 4
    assert all('color="#31a354"' in a for t, h, a in edges if t.startswith("r") or h.startswith("r"))
    check_structure(graph, 0)               # the block collapsed: rail and concats inside its box


def test_boxes_and_clusters_carry_params_and_macs():
    graph = archdsl.load(RESNET, "resnet18")
    text = to_dot(graph, 1)
    box = next(l for l in text.splitlines() if l.strip().startswith('"b:layer2.0"'))
    rows = {r.scope: r for r in layer_stats(graph)}
    params = sum(r.params for s, r in rows.items() if s.startswith("layer2.0."))
    macs = sum(r.macs for s, r in rows.items() if s.startswith("layer2.0."))
    assert f"{human(params)} params · {human(macs)} MACs" in box and "planes=128, stride=2" in box
    assert "11,689,512 params (11.69M)" in text.splitlines()[1]                # the legend's totals


def test_dot_is_deterministic_and_html_too(tmp_path):
    a, b = archdsl.load(RESNET, "resnet18"), archdsl.load(RESNET, "resnet18")
    assert to_dot(a, 2) == to_dot(b, 2)
    write(a, tmp_path / "a.html", 1)
    write(b, tmp_path / "b.html", 1)
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()


# ---- the command ---------------------------------------------------------------------------------

def test_cli_dot_without_graphviz(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))               # no dot program on the path
    out = tmp_path / "r.dot"
    assert main(["viz", RESNET, "--model", "resnet18", "--depth", "1", "-o", str(out)]) == 0
    assert out.read_text() == to_dot(archdsl.load(RESNET, "resnet18"), 1)
    assert main(["viz", RESNET, "--model", "resnet18", "-o", str(tmp_path / "r.svg")]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: Drawing SVG, PNG or PDF needs Graphviz's 'dot' program, which is not installed (on Debian: "
        "apt-get install graphviz); .dot and .html output work without it.")


@pytest.mark.parametrize("argv,message", [
    (["-o", "r.jpeg"], "error: Cannot tell the picture format from 'r.jpeg'; name the output file .svg, .png, "
                       ".pdf, .dot or .html."),
    (["-o", "r.dot", "--depth", "two"], "error: --depth takes a number of block levels to expand (0 or more) "
                                        "or 'full', not 'two'."),
])
def test_cli_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["viz", RESNET, "--model", "resnet18", *argv]) == 1
    assert capsys.readouterr().err.strip() == message


def test_cli_passes_draw_the_optimised_graph(tmp_path):
    pytest.importorskip("archdsl.passes.pipeline")
    out = tmp_path / "r.dot"
    assert main(["viz", RESNET, "--model", "resnet18", "--passes", "fold-bn", "-o", str(out)]) == 0
    from archdsl.passes.pipeline import run_pipeline
    optimised = run_pipeline(archdsl.load(RESNET, "resnet18"), "fold-bn").graph
    assert not any(n.op == "bn" for n in optimised.nodes())
    check_structure(optimised, None, out.read_text())
    assert "bn" not in {n.op for n in optimised.nodes()} and len(optimised) < len(archdsl.load(RESNET, "resnet18"))


def test_cli_passes_without_the_pipeline(tmp_path, monkeypatch):
    from archdsl.cli import build_parser
    args = build_parser().parse_args(["viz", RESNET, "--model", "resnet18", "--passes", "fold-bn",
                                      "-o", str(tmp_path / "r.dot")])
    monkeypatch.setitem(__import__("sys").modules, "archdsl.passes.pipeline", None)
    with pytest.raises(ArchError) as err:
        args.fn(args)
    assert str(err.value) == ("error: --passes needs archdsl's pass pipeline (archdsl.passes.pipeline), which this "
                              "installation does not have.")


@needs_dot
def test_graphviz_svg_has_the_same_structure(tmp_path):
    graph = archdsl.load(RESNET, "resnet18")
    for depth in (1, None):
        out = tmp_path / f"r{depth}.svg"
        assert main(["viz", RESNET, "--model", "resnet18", "--depth", str(depth or "full"), "-o", str(out)]) == 0
        clusters, nodes, edges = parse_dot(to_dot(graph, depth))
        svg = ET.parse(out).getroot()
        groups = [g for g in svg.iter("{http://www.w3.org/2000/svg}g")]
        kinds = lambda k: [g for g in groups if k in g.get("class", "").split()]
        assert {g.get("id")[2:] for g in kinds("cluster")} == set(clusters)
        assert {g.get("id") for g in kinds("node")} == set(nodes)
        assert {g.get("id") for g in kinds("title")} == {f"t:{c}" for c in clusters}
        titles = {g.find("{http://www.w3.org/2000/svg}title").text for g in kinds("edge")}
        assert titles == {f"{t}->{h}" for t, h, _ in visible(edges)}   # Graphviz leaves invisible ones out


def _boxes_and_curves(svg_text):
    """Graphviz's SVG: the bounding box of every title node, and points along every edge's curve."""
    ns = "{http://www.w3.org/2000/svg}"
    root = ET.fromstring(svg_text)
    titles, curves = {}, {}
    for g in root.iter(ns + "g"):
        cls = g.get("class", "").split()
        if "title" in cls:
            pts = [tuple(map(float, p.split(","))) for poly in g.iter(ns + "polygon")
                   for p in poly.get("points").split()]
            xs, ys = [x for x, _ in pts], [y for _, y in pts]
            titles[g.get("id")] = (min(xs), min(ys), max(xs), max(ys))
        elif "edge" in cls:
            for path in g.iter(ns + "path"):
                nums = [tuple(map(float, xy.split(","))) for xy in re.findall(r"-?[\d.]+,-?[\d.]+", path.get("d"))]
                points = [nums[0]]
                for i in range(1, len(nums) - 2, 3):          # cubic Bezier pieces
                    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = nums[i - 1], nums[i], nums[i + 1], nums[i + 2]
                    for k in range(1, 21):
                        t = k / 20
                        a, b, c, d = (1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t ** 3
                        points.append((a * x0 + b * x1 + c * x2 + d * x3, a * y0 + b * y1 + c * y2 + d * y3))
                curves[g.find(ns + "title").text] = points
    return titles, curves


@needs_dot
@pytest.mark.parametrize("spec,model,depth", [("googlenet.arch", None, 1), ("googlenet.arch", None, None),
                                              ("resnet.arch", "resnet18", None)])
def test_graphviz_draws_no_edge_across_a_title(spec, model, depth):
    from archdsl.viz.render import run_dot
    svg = run_dot(to_dot(archdsl.load(ZOO / spec, model), depth), "svg").decode()
    titles, curves = _boxes_and_curves(svg)
    clusters = [g for g in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}g")
                if "cluster" in g.get("class", "").split()]
    assert titles and curves and len(clusters) == len(titles)
    assert not [t for g in clusters for t in g.iter("{http://www.w3.org/2000/svg}text")]   # titles are nodes
    for edge, points in curves.items():
        for tid, (x0, y0, x1, y1) in titles.items():
            inside = [(x, y) for x, y in points if x0 + 1 < x < x1 - 1 and y0 + 1 < y < y1 - 1]
            assert not inside, (edge, tid, inside[:3])


@needs_dot
@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_png_and_pdf(tmp_path, suffix, magic):
    out = tmp_path / ("r" + suffix)
    assert main(["viz", str(ZOO / "resnet.arch"), "--model", "resnet18", "--depth", "0", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(magic) and out.stat().st_size > 5000


# ---- the interactive page in a real browser ------------------------------------------------------

def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``)."""

    def __init__(self, exe, timeout=60.0):
        self.timeout, self.events = timeout, []
        self.profile = tempfile.mkdtemp(prefix="archviz-chromium-")

        def high(fd):                                # out of the way of fds 3 and 4; closed on exec
            new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            return new
        to_r, self._w = map(high, os.pipe())
        self._r, from_w = map(high, os.pipe())
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "--window-size=1200,900",
                "about:blank"]
        actions = [(os.POSIX_SPAWN_DUP2, to_r, 3), (os.POSIX_SPAWN_DUP2, from_w, 4),
                   (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)]
        self.pid = os.posix_spawn(exe, args, os.environ, file_actions=actions)
        os.close(to_r)
        os.close(from_w)
        self._buf, self._id, self.session = b"", 0, None

    def send(self, method, params=None, session=True):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
                self.events.append(reply)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(method)
            if select.select([self._r], [], [], left)[0]:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buf += chunk

    def open(self, url):
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        self.session = self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1200, "height": 900, "deviceScaleFactor": 1,
                                                          "mobile": False})
        self.send("Network.enable")
        self.send("Page.enable")
        self.send("Page.navigate", {"url": url})

    def js(self, expr):
        res = self.send("Runtime.evaluate", {"expression": expr, "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def wait(self, expr, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not self.js(expr):
            assert time.monotonic() < deadline, f"timed out waiting for {expr}"
            time.sleep(0.1)

    def click(self, x, y):
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def close(self):
        try:
            self.send("Browser.close", session=False)
        except (RuntimeError, TimeoutError, OSError):
            pass
        for _ in range(100):
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                break
            time.sleep(0.1)
        else:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        os.close(self._w)
        os.close(self._r)
        shutil.rmtree(self.profile, ignore_errors=True)


# brings an element into view through the page's own panning, then its centre on screen
CENTRE = "(() => {{ window.archviz.focus({0!r}); const r = document.getElementById({0!r}).getBoundingClientRect(); " \
         "return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
RECT = "(() => {{ const r = document.getElementById({0!r}).getBoundingClientRect(); " \
       "return [r.left, r.top, r.right, r.bottom]; }})()"
PANE = RECT.format("graph")
DRAWING = "(() => { const r = document.querySelector('#graph svg g.graph').getBoundingClientRect(); " \
          "return [r.left, r.top, r.right, r.bottom]; })()"


@pytest.fixture(scope="module")
def browser():
    if _browser() is None:
        pytest.skip("no Chromium installed")
    b = Chromium(_browser())
    yield b
    b.close()


def _ids(browser, cls):
    return set(browser.js(f"[...document.querySelectorAll('#graph g.{cls}')].map(g => g.id)"))


def _screenshot(browser):
    from PIL import Image
    shot = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"})["data"])
    return shot, Image.open(io.BytesIO(shot)).convert("RGB")


def test_html_page_expands_and_collapses_on_click(tmp_path, browser):
    graph = archdsl.load(RESNET, "resnet18")
    page = tmp_path / "resnet18.html"
    assert main(["viz", RESNET, "--model", "resnet18", "--depth", "1", "-o", str(page)]) == 0
    view = build_view(graph)
    browser.events.clear()
    browser.open(page.as_uri())
    browser.wait("window.archviz && document.body.dataset.renders === '1'")
    ids = lambda cls: _ids(browser, cls)
    want_clusters, want_boxes, _, _ = expected(graph, 1)
    assert ids("cluster") == {f"c:{p}" for p in want_clusters}
    assert {i for i in ids("node") if i.startswith("b:")} == {f"b:{p}" for p in want_boxes}
    # the page's JavaScript writes the same DOT as the Python emitter
    for expanded in (expanded_at(view, 0), expanded_at(view, 1), expanded_at(view, None),
                     ["layer1", "layer3", "layer3.1"], ["layer2.0"]):
        assert browser.js(f"window.archviz.emit({json.dumps(expanded)})") == emit(view, expanded)

    browser.click(*browser.js(CENTRE.format("b:layer2.0")))                  # expand a residual block
    browser.wait("document.body.dataset.renders === '2'")
    assert "c:layer2.0" in ids("cluster") and "b:layer2.0" not in ids("node")
    assert "b:layer2.0.downsample" in ids("node")
    shortcut = browser.js("[...document.querySelectorAll('g.edge')].filter(g => "
                          "g.querySelector('path').getAttribute('stroke-dasharray')).length")
    assert shortcut >= 1
    left, top, right, bottom = browser.js(RECT.format("c:layer2.0"))      # the view follows the new block
    pane = browser.js(PANE)
    assert pane[0] <= left and right <= pane[2] and pane[1] <= top and bottom <= pane[3]
    browser.js("document.getElementById('zoom-reset').click()")             # 100%, around the block
    shot, img = _screenshot(browser)
    (tmp_path / "expanded.png").write_bytes(shot)
    if os.environ.get("ARCHVIZ_SCREENSHOT"):                                  # to look at it
        Path(os.environ["ARCHVIZ_SCREENSHOT"]).write_bytes(shot)

    browser.click(*browser.js(CENTRE.format("t:layer2")))                    # its title collapses a stage
    browser.wait("document.body.dataset.renders === '3'")
    assert "b:layer2" in ids("node") and not {"c:layer2", "c:layer2.0"} & ids("cluster")
    requests = [e["params"]["request"]["url"] for e in browser.events
                if e.get("method") == "Network.requestWillBeSent"]
    assert requests and all(u.startswith(("file:", "data:", "about:")) for u in requests), requests

    assert img.size == (1200, 900)
    colours = img.getcolors(1 << 20)
    assert len(colours) > 50                                                  # a picture, not a blank page
    red = sum(n for n, (r, g, b) in colours if r > 180 and g < 60 and b < 60)
    assert red > 50                                                           # the dashed shortcut is on screen


def _key(browser, key, code=None):
    for kind in ("keyDown", "keyUp"):
        browser.send("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": code or key,
                                                "windowsVirtualKeyCode": {"Enter": 13, "ArrowDown": 40}[key]})


def test_html_page_opens_collapsed_and_fitted_and_finds_a_layer(tmp_path, browser):
    googlenet = ZOO / "googlenet.arch"
    graph = archdsl.load(googlenet)
    page = tmp_path / "googlenet.html"
    assert main(["viz", str(googlenet), "-o", str(page)]) == 0                 # no --depth: the page's default
    browser.events.clear()
    browser.open(page.as_uri())
    browser.wait("window.archviz && document.body.dataset.renders === '1'")
    # every top-level block is one box, nothing is a cluster
    assert _ids(browser, "cluster") == set()
    top = {p for p, s in build_view(graph)["scopes"].items() if s["depth"] == 1}
    assert {i[2:] for i in _ids(browser, "node") if i.startswith("b:")} == top
    assert browser.js("document.getElementById('status').textContent") == "0 of 93 blocks expanded"
    # fitted: all of the drawing in the pane, centred, touching the pane's margin on one axis
    pane, drawing = browser.js(PANE), browser.js(DRAWING)
    gaps = [drawing[0] - pane[0], drawing[1] - pane[1], pane[2] - drawing[2], pane[3] - drawing[3]]
    assert min(gaps) >= 0 and abs(gaps[0] - gaps[2]) < 2 and abs(gaps[1] - gaps[3]) < 2, gaps
    assert min(gaps) < 20 and gaps[0] > 100, gaps                              # tall: the sides are empty

    # typing part of a scope lists the matches, best first
    browser.js("document.getElementById('search').focus()")
    browser.send("Input.insertText", {"text": "inception4a.branch2"})
    listed = browser.js("[...document.querySelectorAll('#matches li')].map(l => l.firstChild.textContent)")
    assert listed[0] == "inception4a.branch2" and all("inception4a.branch2" in x for x in listed)
    assert len(listed) == sum(1 for e in build_view(graph)["index"] if "inception4a.branch2" in e[0])
    _key(browser, "Enter")                                                   # choose the first
    browser.wait("document.body.dataset.renders === '2'")
    assert _ids(browser, "cluster") == {"c:inception4a"}                     # its ancestors expanded, no more
    assert browser.js("document.body.dataset.hit") == "b:inception4a.branch2"
    assert browser.js("document.getElementById('b:inception4a.branch2').classList.contains('hit')")
    box, pane = browser.js(RECT.format("b:inception4a.branch2")), browser.js(PANE)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    assert abs(centre[0] - (pane[0] + pane[2]) / 2) < 3 and abs(centre[1] - (pane[1] + pane[3]) / 2) < 3
    assert box[2] - box[0] > 200                                              # zoomed in: readable

    # a layer deep inside: its blocks open, and the search box matches anywhere in the scope
    browser.js("const s = document.getElementById('search'); s.value = ''; s.focus()")
    browser.send("Input.insertText", {"text": "4a.branch2.1.c"})
    _key(browser, "Enter")
    browser.wait("document.body.dataset.renders === '3'")
    conv = next(n.id for n in graph.nodes() if n.scope == "inception4a.branch2.1.conv")
    assert browser.js("document.body.dataset.hit") == f"n{conv}"
    assert _ids(browser, "cluster") == {"c:inception4a", "c:inception4a.branch2", "c:inception4a.branch2.1"}

    # dragging pans without expanding anything; the wheel zooms
    before = browser.js("document.querySelector('#graph svg').getAttribute('viewBox')")
    x, y = (pane[0] + 40, pane[3] - 40)
    browser.send("Input.dispatchMouseEvent", {"type": "mousePressed", "x": x, "y": y, "button": "left",
                                              "clickCount": 1})
    browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x + 120, "y": y - 60, "button": "left"})
    browser.send("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": x + 120, "y": y - 60,
                                              "button": "left", "clickCount": 1})
    after = browser.js("document.querySelector('#graph svg').getAttribute('viewBox')")
    assert before != after and browser.js("document.body.dataset.renders") == "3"
    zoom = float(browser.js("document.body.dataset.zoom"))
    browser.send("Input.dispatchMouseEvent", {"type": "mouseWheel", "x": 600, "y": 500, "deltaX": 0,
                                              "deltaY": 300})
    browser.wait(f"Number(document.body.dataset.zoom) < {zoom}")
    requests = [e["params"]["request"]["url"] for e in browser.events
                if e.get("method") == "Network.requestWillBeSent"]
    assert requests and all(u.startswith(("file:", "data:", "about:")) for u in requests), requests


def test_html_page_shows_hostile_names_as_text(tmp_path, browser):
    from test_viz_html import PAYLOAD, XSS
    graph = archdsl.load(XSS)
    graph.name = PAYLOAD
    write(graph, tmp_path / "x.html")
    browser.events.clear()
    browser.open((tmp_path / "x.html").as_uri())
    browser.wait("window.archviz && document.body.dataset.renders === '1'")
    assert not [e for e in browser.events if e.get("method") == "Page.javascriptDialogOpening"]
    assert browser.js("document.scripts.length") == 4
    assert browser.js("document.title") == f"{PAYLOAD} · archc viz"
    assert browser.js("document.querySelector('header b').textContent") == PAYLOAD
    label = browser.js("[...document.getElementById('b:blk').querySelectorAll('text')].map(t => t.textContent)")
    assert label[1].startswith('tag="</script><script>alert(1)')


@pytest.mark.parametrize("spec", [INCEPTION, DENSE, RESIDUAL], ids=["inception", "dense", "residual"])
def test_html_page_emits_the_same_dot_as_python(tmp_path, browser, spec):
    graph = archdsl.load(spec)
    view = build_view(graph)
    write(graph, tmp_path / "p.html")
    browser.open((tmp_path / "p.html").as_uri())
    browser.wait("window.archviz && document.body.dataset.renders === '1'")
    scopes = [p for p in view["scopes"] if p]
    choices = [expanded_at(view, d) for d in range(view["max_depth"] + 1)] + [scopes[1:], scopes[::2]]
    for expanded in choices:
        assert browser.js(f"window.archviz.emit({json.dumps(expanded)})") == emit(view, expanded)
