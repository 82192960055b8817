"""``archc compile``: a spec to PyTorch (module file or readable source) or ONNX.

Optional steps run in this order: load weights by name (``--weights``), run a
pass pipeline (``--passes``), then generate the target.
"""
from __future__ import annotations

from pathlib import Path

from ..diagnostics import ArchError
from .common import add_pass_args, add_spec_args, add_weights_format_arg, load_graph, output_path, run_passes, \
    weights_format, writing, write_spec_weights

TARGETS = ("torch", "torch-src", "onnx", "arch")


def run(args) -> int:
    inputs = (args.file, args.weights)
    out = output_path(args.output, inputs, (".arch",) if args.target == "arch" else ())
    writes = args.target in ("torch-src", "arch") and bool(args.weights or args.passes)
    fmt = weights_format(args, writes, "a torch-src file or an .arch spec (written with --weights or --passes)")
    if writes:
        from ..backends.torch_source import weights_path
        output_path(weights_path(out, fmt), inputs, what=f"The weights file beside {out.name}")
    graph = load_graph(args)
    if args.weights:
        from ..backends.weights import load_weights
        load_weights(graph, Path(args.weights))
    if args.passes:
        graph = run_passes(graph, args).graph
    with writing(out):
        _write(graph, out, args, fmt if writes else None)
    print(f"wrote {out}")
    return 0


def _write(graph, out: Path, args, fmt: str | None) -> None:
    """Write the target; ``fmt`` is the format of the weights file beside it, None where none is written."""
    if args.target == "torch":
        from ..backends.torch_save import save_module
        save_module(graph, out)
    elif args.target == "torch-src":
        from ..backends.torch_source import write_source
        # the source initialises itself as the spec says; weights that came from a file or a
        # pass go into a state_dict beside it, which the source documents and loads
        weights = write_source(graph, out, weights=fmt is not None, fmt=fmt or "pt")
        if weights is not None:
            print(f"wrote {weights} (the weights; load them with load_weights() from {out.name})")
    elif args.target == "onnx":
        from ..backends.onnx_export import save_onnx
        save_onnx(graph, out, opset=args.opset, functions=args.functions)
    elif args.target == "arch":
        from ..backends.arch_emit import write_arch
        spec = write_arch(graph, out)
        if fmt is not None:
            write_spec_weights(graph, out, spec, fmt)
    else:  # argparse's choices make this unreachable
        raise ArchError(f"Unknown target '{args.target}'; the targets are {', '.join(TARGETS)}.")


def register(sub) -> None:
    p = sub.add_parser("compile", help="generate PyTorch or ONNX from a spec")
    add_spec_args(p)
    p.add_argument("--target", choices=TARGETS, required=True,
                   help="torch: a torch.export program; torch-src: a standalone Python file (with --weights or "
                        "--passes, plus its weights as OUT.pt or OUT.safetensors beside it); onnx: an ONNX "
                        "model; arch: the graph (after --passes) written back as an .arch spec")
    p.add_argument("-o", "--output", required=True, help="the file to write")
    p.add_argument("--weights", help="a PyTorch state_dict (.pt, .safetensors, or an .npz of arrays) to load into "
                                     "the IR by name first")
    add_weights_format_arg(p)
    add_pass_args(p)
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default 20, the oldest with every op the IR uses; 13 up to the newest the "
                        "installed onnx knows are accepted, and a graph needing a newer one is refused)")
    p.add_argument("--functions", action="store_true",
                   help="ONNX: emit each block definition as an ONNX local function")
    p.set_defaults(fn=run)
