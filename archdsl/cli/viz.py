"""``archc viz``: draw a spec's graph with its blocks as nested, collapsible clusters."""
from __future__ import annotations

from ..diagnostics import ArchError
from .common import add_spec_args, load_graph, output_path, writing


def _depth(text: str | None):
    if text is None:
        return "default"                    # pictures: full; the HTML page: top-level blocks collapsed
    if text in ("full", "all"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ArchError(f"--depth takes a number of block levels to expand (0 or more) or 'full', not '{text}'.")
    return value


def _run_passes(graph, passes: str):
    try:
        from ..passes.pipeline import run_pipeline
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("archdsl.passes"):
            raise ArchError("--passes needs archdsl's pass pipeline (archdsl.passes.pipeline), which this "
                            "installation does not have.") from None
        raise
    return run_pipeline(graph, passes).graph


def run(args) -> int:
    from ..viz import write
    depth = _depth(args.depth)
    out = output_path(args.output, (args.file,))
    graph = load_graph(args)
    if args.passes:
        graph = _run_passes(graph, args.passes)
    with writing(out):
        write(graph, out, depth)
    print(f"wrote {args.output}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("viz", help="draw the graph with blocks as nested clusters (SVG, PNG, PDF, DOT or HTML)")
    add_spec_args(p)
    p.add_argument("-o", "--output", required=True,
                   help="the picture to write; its suffix picks the format: .svg, .png, .pdf (through Graphviz's "
                        "dot), .dot, or .html (interactive: click a block to expand or collapse it)")
    p.add_argument("--depth", default=None, metavar="N",
                   help="expand blocks down to N levels of nesting and draw deeper ones as single boxes "
                        "(0: every top-level block is a box; 'full': every block expanded, the default, except "
                        "for .html, which opens at 0)")
    p.add_argument("--passes", help='run a pass pipeline first and draw the optimised graph, e.g. "fold-bn,dce"')
    p.set_defaults(fn=run)
