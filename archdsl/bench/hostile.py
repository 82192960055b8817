"""The hostile inputs of issue 15, timed: ``python -m archdsl.bench.hostile``.

Each input is written to a temporary directory and loaded with :func:`archdsl.load` three
times in this process; the table row gives the median wall time and what the load gave
(the graph's size, or the first words of its error). Every one must end, with a graph or
a located error, in well under a second: the step budget of docs/language.md ("Resource
limits") pays for every token read, expression evaluated and layer built.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

MB = 1_000_000
_MODEL = "model m() {{\n  input x: [4, 8, 8]\n{body}\n}}\n"


def _blocks() -> str:
    lines, size, i = ["  h = x"], 40, 0
    while size < MB - 200:
        line = f"  h = h -> b{i}: [conv(4, 3, padding=1) -> relu]"
        lines.append(line)
        size, i = size + len(line) + 1, i + 1
    return _MODEL.format(body="\n".join(lines + ["  output h"]))


def _sum() -> str:
    return _MODEL.format(body="  n = 1" + " + 1" * ((MB - 100) // 4) + "\n  output x -> conv(4, 1)")


def _chain() -> str:
    return _MODEL.format(body="  output x" + " -> relu" * ((MB - 100) // 8))


CASES = {
    "many small blocks (1 MB)": _blocks,
    "one long sum (1 MB)": _sum,
    "one long chain (1 MB)": _chain,
    "a 3000-layer dense block": lambda: _MODEL.format(body="  output x -> dense { relu for i in range(3000) }"),
    "a loop of a million additions": lambda: _MODEL.format(
        body="  n = 0\n  for i in range(1000000) { n = n + i }\n  output x"),
    "a loop of 100,000 convs": lambda: _MODEL.format(
        body="  h = x\n  for i in range(100000) { h = h -> conv(4, 3, padding=1) }\n  output h"),
    "9,000 convs, then 700,000 additions": lambda: _MODEL.format(
        body="  h = x\n  for i in range(9000) { h = h -> conv(4, 3, padding=1) }\n"
             "  n = 0\n  for i in range(700000) { n = n + 1 }\n  output h"),
}


def write_inputs(folder: Path) -> dict:
    """``{name: path}`` of every input, four imported 1 MB files among them."""
    paths = {}
    for i, (name, make) in enumerate(CASES.items()):
        paths[name] = folder / f"case{i}.arch"
        paths[name].write_text(make(), encoding="utf-8")
    for k in range(4):
        (folder / f"lib{k}.arch").write_text(f"C{k} = 1" + " + 1" * ((MB - 100) // 4) + "\n", encoding="utf-8")
    main = folder / "imports.arch"
    main.write_text("".join(f'import "lib{k}.arch"\n' for k in range(4)) + _MODEL.format(body="  output x"),
                    encoding="utf-8")
    paths["four imported 1 MB files"] = main
    return paths


def run(repeat: int = 3) -> list:
    import archdsl
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in write_inputs(Path(tmp)).items():
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                try:
                    got = f"{len(archdsl.load(path))} nodes"
                except archdsl.ArchError as err:
                    got = f"error at {Path(err.span.file).name}:{err.span.line}: {err.message}"
                times.append(time.perf_counter() - start)
            rows.append((name, statistics.median(times), got))
            print(f"| {name} | {rows[-1][1]:.2f} s | {got[:100]} |", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m archdsl.bench.hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    run(parser.parse_args(argv).repeat)


if __name__ == "__main__":
    main()
