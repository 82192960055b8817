"""``archc stats``: per-layer shapes, parameters and MACs, with totals."""
from __future__ import annotations

import json

from ..diagnostics import ArchError
from .common import add_spec_args, load_graph


def run(args) -> int:
    from ..ir.stats import stats_json, stats_table
    if args.depth is not None and args.depth < 0:
        raise ArchError(f"--depth takes a number of scope levels (0 or more), not {args.depth}.")
    g = load_graph(args)
    print(json.dumps(stats_json(g, args.depth), indent=1) if args.json else stats_table(g, args.depth, memory_lines=True))
    return 0


def register(sub) -> None:
    p = sub.add_parser("stats", help="per-layer shapes, parameters and MACs")
    add_spec_args(p)
    p.add_argument("--json", action="store_true", help="print JSON (params, macs, nodes, memory, layers)")
    p.add_argument("--depth", type=int, default=None, metavar="N",
                   help="one row per scope N levels deep (1: per top-level block, like torchinfo's depth), "
                        "with parameters and MACs summed")
    p.set_defaults(fn=run)
