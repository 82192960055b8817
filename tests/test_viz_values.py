"""`archc viz` prints block arguments within a budget: deep, long or shared lists cost O(label width) time,
memory and recursion, whatever their size as a tree (issue 15: `y = [y, y]` forty times took 1.85 GB, a
5000-deep list raised RecursionError)."""
import time
import tracemalloc

import pytest

import archdsl
from archdsl.viz import build_view, to_dot, write
from archdsl.viz.labels import value

SPEC = """
block b(v: list) {{
    input x
    output x -> relu
}}
model net() {{
    y = [1]
    for i in range({n}) {{ y = {step} }}
    input x: [3, 8, 8]
    output x -> blk: b(y)
}}
"""


def _timed(fn):
    """fn()'s result, seconds taken and peak bytes allocated."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        out = fn()
        return out, time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _box_args(text: str) -> str:
    """The argument line of the collapsed box of ``blk`` in DOT text."""
    line = next(l for l in text.splitlines() if l.strip().startswith('"b:blk"'))
    return line.split('<br align="left"/>')[1]


def _doubled(n: int) -> list:
    y = [1]
    for _ in range(n):
        y = [y, y]
    return y


def _nested(n: int) -> list:
    y = [1]
    for _ in range(n):
        y = [y]
    return y


@pytest.mark.parametrize("n,step,shown", [
    (40, "[y, y]", "v=[[[[...], [...]], [[...], [...]]], ...]"),     # 2^40 leaves as a tree, 41 lists
    (5000, "[y]", "v=[[[[...]]]]"),                                   # deeper than Python's recursion limit
    (1, "range(1000000)", "v=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...]"),
])
def test_huge_argument_values_print_in_bounded_time_and_memory(n, step, shown, tmp_path):
    """The front end now refuses to build the first two values (archdsl/frontend/bounds.py), but a graph
    made through the API can still hold them: the labels must stay bounded whatever the graph holds."""
    if step == "range(1000000)":
        graph = archdsl.load(SPEC.format(n=n, step=step))
    else:
        graph = archdsl.load(SPEC.format(n=1, step="[y]"))
        graph.scopes["blk"].args = {"v": _doubled(n) if step == "[y, y]" else _nested(n)}
    text, seconds, peak = _timed(lambda: to_dot(graph, 0))
    assert _box_args(text) == shown
    assert seconds < 1.0 and peak < 20_000_000, (seconds, peak)
    # every format goes through the same labels: the page and the fully expanded DOT too
    (_, seconds, _) = _timed(lambda: write(graph, tmp_path / "net.html"))
    assert seconds < 1.0
    assert shown in build_view(graph)["scopes"]["blk"]["title"]["label"]


def test_value_examples():
    assert value([1, 2, 3]) == "[1, 2, 3]"
    assert value((1, 2)) == "(1, 2)"
    assert value([]) == "[]" and value(()) == "()"
    assert value([[1, [2, [3, [4]]]]]) == "[[1, [2, [...]]]]"             # three levels, then [...]
    assert value([True, None, 0.5, "s"]) == '[true, none, 0.5, "s"]'
    assert value("x" * 100) == '"' + "x" * 32 + "…"
    assert value(list(range(40)), width=12) == "[0, 1, 2, 3, ...]"
    assert value(2 ** 5000).endswith("…") and len(value(2 ** 5000)) <= 48


def test_a_self_similar_value_of_any_depth_costs_the_same():
    y = [1]
    for _ in range(200):
        y = [y, y, y]                     # 3^200 leaves as a tree
    out, seconds, peak = _timed(lambda: value(y))
    assert out == "[[[[...], [...], [...]], [[...], ...], ...], ...]"
    assert seconds < 0.05 and peak < 100_000
