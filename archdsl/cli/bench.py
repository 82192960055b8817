"""``archc bench``: compile times and latencies of every backend for one model (see archdsl.bench.suite)."""
from __future__ import annotations

import json
import sys

from .common import add_spec_args, defines


def run(args) -> int:
    from ..bench.suite import BenchConfig, format_report, run_bench
    cfg = BenchConfig(file=args.file, model=args.model, defines=defines(args.define), max_nodes=args.max_nodes,
                      device=args.device, batch=args.batch, passes=args.passes, opset=args.opset,
                      warmup=args.warmup, runs=args.runs, compile_repeat=args.compile_repeat, twin=not args.no_twin,
                      threads=args.threads)
    result = run_bench(cfg, progress=not args.no_progress)
    print(json.dumps(result, indent=1) if args.json else format_report(result))
    sys.stdout.flush()
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="time compilation and inference on every backend (and the torchvision twin)")
    add_spec_args(p)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--passes",
                   help='a pass pipeline to run first, e.g. "fold-bn,dce" (the graph without it is timed too)')
    p.add_argument("--opset", type=int, default=None, help="ONNX opset for both exporters (default 20)")
    p.add_argument("--runs", type=int, default=20, help="timed forward passes per backend (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed forward passes first (default 3)")
    p.add_argument("--compile-repeat", type=int, default=3, help="times each compile stage is timed (default 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for both PyTorch and onnxruntime (default: each library's own choice)")
    p.add_argument("--no-twin", action="store_true", help="skip the torchvision twin")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on standard error")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(fn=run)
