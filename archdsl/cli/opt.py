"""``archc opt``: run a pass pipeline on a spec and emit the optimised IR or its statistics.

Standard output gets what ``--emit`` asks for; standard error gets one summary
per pass (nodes, parameters and MACs before and after, and what it refused),
and the IR dumps of ``--print-ir-after``.
"""
from __future__ import annotations

import json
import sys

from .common import add_pass_args, add_spec_args, load_graph, run_passes

EMITS = ("ir", "arch-stats", "report")


def run(args) -> int:
    from ..ir.printer import print_graph
    from ..ir.stats import stats_table
    graph = load_graph(args)
    if args.weights:
        from ..backends.weights import load_weights
        load_weights(graph, args.weights)
    result = run_passes(graph, args)
    if args.output:
        from ..ir.serialize import save
        save(result.graph, args.output)
    if args.emit == "ir":
        print(print_graph(result.graph))
    elif args.emit == "arch-stats":
        print(stats_table(result.graph))
    else:
        print(json.dumps([r.to_json() for r in result.reports], indent=1))
    if not args.quiet and args.emit != "report":
        print(result.summary(), file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("opt", help="run optimisation passes and print the resulting IR or statistics")
    add_spec_args(p)
    add_pass_args(p, required=True)
    p.add_argument("--weights", help="a PyTorch state_dict (.pt) to load into the IR by name before the passes")
    p.add_argument("--emit", choices=EMITS, default="ir",
                   help="ir: the canonical IR text (default); arch-stats: the per-layer statistics table; "
                        "report: the pass reports as JSON")
    p.add_argument("-o", "--output", help="also save the optimised IR as FILE.json plus FILE.npz")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the pass summaries")
    p.set_defaults(fn=run)
