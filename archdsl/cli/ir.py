"""``archc ir``: print the canonical IR text (or save the IR as JSON + npz)."""
from __future__ import annotations

from .common import add_spec_args, load_graph


def run(args) -> int:
    g = load_graph(args)
    if args.output:
        from ..ir.serialize import save
        save(g, args.output)
        return 0
    from ..ir.printer import print_graph
    print(print_graph(g))
    return 0


def register(sub) -> None:
    p = sub.add_parser("ir", help="print the canonical IR text, or save the IR with -o FILE.json")
    add_spec_args(p)
    p.add_argument("-o", "--output", help="save the IR as FILE.json plus FILE.npz (parameters)")
    p.set_defaults(fn=run)
