"""``archc stats``: per-layer shapes, parameters and MACs, with totals."""
from __future__ import annotations

import json

from .common import add_spec_args, load_graph


def run(args) -> int:
    from ..ir.stats import stats_json, stats_table
    g = load_graph(args)
    print(json.dumps(stats_json(g), indent=1) if args.json else stats_table(g))
    return 0


def register(sub) -> None:
    p = sub.add_parser("stats", help="per-layer shapes, parameters and MACs")
    add_spec_args(p)
    p.add_argument("--json", action="store_true", help="print JSON (params, macs, nodes, layers)")
    p.set_defaults(fn=run)
