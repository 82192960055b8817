"""``archc opt``: run a pass pipeline on a spec and emit the optimised IR or its statistics.

Standard output gets what ``--emit`` asks for; standard error gets one summary
per pass (nodes, parameters and MACs before and after, and what it refused),
and the IR dumps of ``--print-ir-after``.
"""
from __future__ import annotations

import json
import sys

from .common import add_spec_args, load_graph

EMITS = ("ir", "arch-stats", "report")


def run(args) -> int:
    from ..ir.printer import print_graph
    from ..ir.stats import stats_table
    from ..passes.pipeline import run_pipeline
    graph = load_graph(args)
    result = run_pipeline(graph, args.passes, verify=args.verify, print_ir_after=args.print_ir_after or (),
                          tolerance=args.tolerance)
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
    from ..passes.pipeline import DEFAULT_TOLERANCE
    p = sub.add_parser("opt", help="run optimisation passes and print the resulting IR or statistics")
    add_spec_args(p)
    p.add_argument("--passes", required=True, help='the pass pipeline, e.g. "fold-bn,dce" (see archc passes)')
    p.add_argument("--emit", choices=EMITS, default="ir",
                   help="ir: the canonical IR text (default); arch-stats: the per-layer statistics table; "
                        "report: the pass reports as JSON")
    p.add_argument("--verify", action="store_true",
                   help="run the model before and after every pass through PyTorch and fail if outputs diverge")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"--verify's limit on max|after - before| / max|before| (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--print-ir-after", action="append", metavar="PASS",
                   help="print the canonical IR to standard error after the named pass (repeatable)")
    p.add_argument("-o", "--output", help="also save the optimised IR as FILE.json plus FILE.npz")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the pass summaries")
    p.set_defaults(fn=run)
