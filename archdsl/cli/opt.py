"""``archc opt``: run a pass pipeline on a spec and emit the optimised IR, its statistics or a spec.

Standard output gets what ``--emit`` asks for; standard error gets one summary
per pass (nodes, parameters and MACs before and after, and what it refused),
and the IR dumps of ``--print-ir-after``. ``--emit arch`` writes the optimised
graph back as an ``.arch`` spec (to ``-o OUT.arch``, else to standard output).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..diagnostics import ArchError, Span
from .common import SAVED_IR, add_pass_args, add_spec_args, add_weights_format_arg, load_graph, output_path, \
    run_passes, weights_format, writing, write_spec_weights

EMITS = ("ir", "arch-stats", "report", "arch")
# what an output name asks for that `archc compile` writes, not `archc opt`: (--target, in words)
GENERATED = {".onnx": ("onnx", "ONNX"), ".py": ("torch-src", "PyTorch source"),
             ".pt": ("torch", "a saved PyTorch module")}


def run(args) -> int:
    from ..ir.printer import print_graph
    from ..ir.stats import stats_table
    spec_out = args.output is not None and Path(args.output).suffix == ".arch"
    if args.emit == "arch" and args.output is not None and not spec_out:
        raise ArchError(f"--emit arch writes a spec, so -o must name an .arch file, but it names '{args.output}'; "
                        "to save the IR as JSON, leave --emit arch out.")
    if spec_out and args.emit != "arch":
        raise ArchError(f"-o {args.output} names a spec file; add --emit arch to write the optimised graph as a "
                        "spec, or give -o a .json name to save the IR.")
    target = GENERATED.get(Path(args.output).suffix) if args.output is not None else None
    if target is not None:
        raise ArchError(f"archc opt writes the optimised IR (.json) or, with --emit arch, a spec (.arch), not "
                        f"{target[1]}; to run the passes and write {target[1]}, give archc compile the same "
                        f"arguments and --target {target[0]}.", Span.of_file(Path(args.output)))
    fmt = weights_format(args, spec_out, "the spec of --emit arch -o OUT.arch")
    out = None
    if args.output is not None:
        inputs = (args.file, args.weights)
        out = output_path(args.output, inputs, (".arch",) if spec_out else (SAVED_IR,))
        if spec_out:
            from ..backends.torch_source import weights_path
            output_path(weights_path(out, fmt), inputs, what=f"The weights file beside {out.name}")
        else:
            output_path(out.with_suffix(".npz"), inputs, what=f"The tensors file beside {out.name}")
    graph = load_graph(args)
    if args.weights:
        from ..backends.weights import load_weights
        load_weights(graph, args.weights)
    result = run_passes(graph, args)
    if out is not None and not spec_out:
        from ..ir.serialize import save
        with writing(out):
            save(result.graph, out)
    if args.emit == "arch":
        from ..backends.arch_emit import emit_arch_spec, write_arch
        if spec_out:
            with writing(out):
                spec = write_arch(result.graph, out)
        else:
            spec = emit_arch_spec(result.graph)
        if spec_out:
            print(f"wrote {args.output}")
            write_spec_weights(result.graph, Path(args.output), spec, fmt)
        else:
            sys.stdout.write(spec.text)
        if not args.quiet:
            for old, new in sorted(spec.renames.items()):
                print(f"note: @{old} is named @{new} in the spec (no label can give the original name)",
                      file=sys.stderr)
            for note in spec.notes:
                print(f"note: {note}", file=sys.stderr)
    elif args.emit == "ir":
        print(print_graph(result.graph))
    elif args.emit == "arch-stats":
        print(stats_table(result.graph))
    else:
        print(json.dumps([r.to_json() for r in result.reports], indent=1))
    if not args.quiet and args.emit != "report":
        print(result.summary(), file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("opt", help="run optimisation passes and print the resulting IR, statistics or spec")
    add_spec_args(p)
    add_pass_args(p, required=True)
    p.add_argument("--weights", help="a PyTorch state_dict (.pt, .safetensors, or an .npz of arrays) to load into "
                                     "the IR by name before the passes")
    add_weights_format_arg(p)
    p.add_argument("--emit", choices=EMITS, default="ir",
                   help="ir: the canonical IR text (default); arch-stats: the per-layer statistics table; "
                        "report: the pass reports as JSON; arch: the optimised graph as an .arch spec")
    p.add_argument("-o", "--output", help="also save the optimised IR as FILE.json plus FILE.npz; with --emit arch, "
                                          "write the spec to FILE.arch instead of printing it")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the pass summaries")
    p.set_defaults(fn=run)
