"""``archc bench-prune``: archdsl's ``prune`` pass against Torch-Pruning at about 2x fewer MACs, measured
(see archdsl.bench.prune; needs ``pip install archdsl[bench]``)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..cpu import check_threads
from ..diagnostics import ArchError
from .common import add_spin_arg


def _models(text: str) -> tuple:
    from ..bench.prune import MODELS
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


def _batches(text: str) -> tuple:
    try:
        out = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ArchError(f"--batches expects comma-separated ints, such as 1,8, but got '{text}'.") from None
    if not out or min(out) < 1:
        raise ArchError("--batches sizes must be at least 1.")
    return out


def run(args) -> int:
    from ..bench.prune import passive_waits
    from ..bench.runners import cpu_backends
    passive_waits(args.spin)                 # before anything imports torch
    backends = cpu_backends(args.backends)
    import importlib.util
    if importlib.util.find_spec("torch_pruning") is None:
        raise ArchError("archc bench-prune compares with Torch-Pruning, which is not installed: "
                        "pip install 'archdsl[bench]' (or torch-pruning>=1.6).")
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        raise ArchError("--runs and --threads must be at least 1, and --warmup at least 0.")
    check_threads(args.threads)
    from ..bench.prune import format_markdown, run as bench
    models, batches = _models(args.models), _batches(args.batches)
    result = bench(Path(args.zoo), models, args.passes, batches, args.warmup, args.runs, args.threads,
                   args.tp_round_to, progress=not args.no_progress, backends=backends)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1) if args.json else format_markdown(result))
    sys.stdout.flush()
    return 0


def register(sub) -> None:
    from ..bench.prune import PASSES
    p = sub.add_parser("bench-prune", help="archdsl's prune pass against Torch-Pruning at ~2x fewer MACs: MACs, "
                                           "parameters and measured CPU speed-ups")
    p.add_argument("--zoo", default="zoo_specs", help="the folder holding the spec files")
    p.add_argument("--models", default="resnet50,densenet121,googlenet,vgg16",
                   help="models (of resnet50, densenet121, googlenet, vgg16) or FILE.arch:MODEL pairs, "
                        "comma-separated (default: all four)")
    p.add_argument("--passes", default=PASSES, help=f"archdsl's pipeline (default \"{PASSES}\")")
    p.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    p.add_argument("--runs", type=int, default=10, help="timed round-robin rounds per batch size (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--threads", type=int, default=2, help="threads for PyTorch and onnxruntime (default 2)")
    add_spin_arg(p)
    p.add_argument("--tp-round-to", type=int, default=None,
                   help="Torch-Pruning's round_to (default none, as in the issue's measurement)")
    p.add_argument("--backends", default="eager,eager channels-last,onnxruntime",
                   help="comma-separated, of eager, eager channels-last (NHWC weights and inputs), onnxruntime "
                        "(default: all three)")
    p.add_argument("--json-out", help="also write the JSON results to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on standard error")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of Markdown")
    p.set_defaults(fn=run)
