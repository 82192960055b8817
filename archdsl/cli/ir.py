"""``archc ir``: print the canonical IR text (or save the IR as JSON + npz)."""
from __future__ import annotations

from .common import SAVED_IR, add_spec_args, load_graph, output_path, writing


def run(args) -> int:
    if args.output:
        out = output_path(args.output, (args.file,), (SAVED_IR,))
        output_path(out.with_suffix(".npz"), (args.file,), what=f"The tensors file beside {out.name}")
    g = load_graph(args)
    if args.output:
        from ..ir.serialize import save
        with writing(out):
            save(g, out)
        print(f"wrote {out} and {out.with_suffix('.npz')}")
        return 0
    from ..ir.printer import print_graph
    print(print_graph(g))
    return 0


def register(sub) -> None:
    p = sub.add_parser("ir", help="print the canonical IR text, or save the IR with -o FILE.json")
    add_spec_args(p)
    p.add_argument("-o", "--output", help="save the IR as FILE.json plus FILE.npz (parameters)")
    p.set_defaults(fn=run)
