"""``archc bench-quant``: archdsl's int8 ``quantize`` pass against onnxruntime's ``quantize_static`` and fp32,
latency at batch 1 and 8 side by side (see archdsl.bench.quant); ``--share`` adds weight-share file sizes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..diagnostics import ArchError
from .common import add_spin_arg


def _models(text: str) -> tuple:
    from ..bench.quant import MODELS
    known = {name: file for file, name in MODELS}
    out = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        file, sep, name = item.partition(":")
        if not sep:
            file, name = known.get(item), item
            if file is None:
                raise ArchError(f"--models: '{item}' is none of {', '.join(known)}; give others as FILE.arch:MODEL.")
        out.append((file, name))
    if not out:
        raise ArchError("--models names no model.")
    return tuple(out)


def run(args) -> int:
    from ..bench.quant import format_markdown, passive_waits, run as bench
    passive_waits(args.spin)                 # before anything imports torch
    try:
        batches = tuple(int(s) for s in args.batches.split(","))
    except ValueError:
        raise ArchError(f"--batches expects comma-separated ints, such as 1,8, but got '{args.batches}'.") from None
    if args.runs < 1 or args.warmup < 0 or args.threads < 1 or args.calib < 1 or not batches or min(batches) < 1:
        raise ArchError("--runs, --threads, --calib and the batch sizes must be at least 1, and --warmup at least 0.")
    result = bench(Path(args.zoo), _models(args.models), args.passes, batches, args.warmup, args.runs, args.threads,
                   args.calib, args.share, progress=not args.no_progress, with_torch=args.torch)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1) if args.json else format_markdown(result))
    sys.stdout.flush()
    return 0


def register(sub) -> None:
    from ..bench.quant import PASS
    p = sub.add_parser("bench-quant", help="archdsl's int8 quantize pass against onnxruntime's quantize_static "
                                           "and fp32: CPU latency, accuracy, file sizes")
    p.add_argument("--zoo", default="zoo_specs", help="the folder holding the spec files")
    p.add_argument("--models", default="resnet50,googlenet,densenet121",
                   help="models (of resnet50, googlenet, densenet121) or FILE.arch:MODEL pairs, comma-separated")
    p.add_argument("--passes", default=PASS, help=f"archdsl's pipeline (default \"{PASS}\")")
    p.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    p.add_argument("--runs", type=int, default=20, help="timed round-robin rounds per batch size (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default 2)")
    add_spin_arg(p)
    p.add_argument("--calib", type=int, default=32, help="calibration samples for both quantisers (default 32)")
    p.add_argument("--share", action="store_true", help="also weight-share file sizes (8 and 4 bits, prune + share)")
    p.add_argument("--torch", action="store_true",
                   help="also PyTorch: eager fp32 against the int8 module on PyTorch's quantized kernels")
    p.add_argument("--json-out", help="also write the JSON results to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on standard error")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of Markdown")
    p.set_defaults(fn=run)
