"""``archc check``: parse, elaborate and shape-check a spec."""
from __future__ import annotations

from .common import add_spec_args, load_graph


def run(args) -> int:
    from ..ir.stats import human, totals
    g = load_graph(args)
    t = totals(g)
    shapes = ", ".join("(" + ", ".join(map(str, g.data(o)["shape"])) + ")" for o in g.outputs)
    print(f"{args.file}: model '{g.name}' is well-formed: {t['nodes']} nodes, {human(t['params'])} parameters, "
          f"output {shapes}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("check", help="parse, elaborate and shape-check a spec")
    add_spec_args(p)
    p.set_defaults(fn=run)
