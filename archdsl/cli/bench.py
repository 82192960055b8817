"""``archc bench``: compile times and latencies of every backend for one model (see archdsl.bench.suite)."""
from __future__ import annotations

import json
import sys

from ..diagnostics import ArchError
from .common import add_spec_args, add_spin_arg, defines, reject_spec_flags


def _bench_artifact(args) -> int:
    """A compiled .onnx or .pt2 file: its latency on its own runtime, with the machine's record."""
    from ..bench.artifacts import open_artifact
    from ..bench.host import machine
    from ..bench.runners import random_inputs
    from ..bench.timing import latency
    reject_spec_flags(args, "a compiled model")
    from ..bench.suite import check_counts
    check_counts(args.batch, args.runs, args.warmup, args.threads)
    if args.passes:
        raise ArchError("--passes rewrites a spec's graph, but this is a compiled model; give the spec instead.")
    runner, model = open_artifact(args.file, None, args.device, args.threads)
    runner.prepare(random_inputs(model, args.batch))
    stats = latency(runner.step, args.warmup, args.runs)
    result = {"model": model.name, "file": args.file, "runtime": runner.label, "detail": runner.detail,
              "batch": args.batch, "latency": stats, "machine": machine(args.threads or 0)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        m = result["machine"]
        print(f"{model.name} ({args.file}) on {runner.detail}, batch {args.batch}")
        print(f"latency over {stats['runs']} runs after {args.warmup} warm-up: median {stats['median_ms']:.3f} ms, "
              f"p90 {stats['p90_ms']:.3f} ms, min {stats['min_ms']:.3f} ms")
        print(f"machine: {m.get('cpu', '?')}; ISA {' '.join(m['isa']) or 'baseline'} (int8: {m['int8']}); "
              f"load {m['loadavg_start']}")
    return 0


def run(args) -> int:
    from ..bench.host import passive_waits
    passive_waits(args.spin)                 # idle PyTorch threads sleep: set before anything imports torch
    from ..bench.artifacts import is_artifact
    if is_artifact(args.file):
        return _bench_artifact(args)
    from ..bench.suite import BenchConfig, format_report, run_bench
    cfg = BenchConfig(file=args.file, model=args.model, defines=defines(args.define), max_nodes=args.max_nodes,
                      device=args.device, batch=args.batch, passes=args.passes, opset=args.opset,
                      warmup=args.warmup, runs=args.runs, compile_repeat=args.compile_repeat, twin=not args.no_twin,
                      threads=args.threads, channels_last=args.channels_last)
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
    add_spin_arg(p)
    p.add_argument("--no-twin", action="store_true", help="skip the torchvision twin")
    p.add_argument("--channels-last", action="store_true",
                   help="run every PyTorch row in channels-last (NHWC) memory order, weights and inputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on standard error")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(fn=run)
