"""``archc bench-construct``: time building PyTorch models with weights (``to_torch``, its old path, torchvision)."""
from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from ..cpu import check_threads
from ..diagnostics import ArchError


def _models(text: str) -> tuple:
    out = []
    for item in text.split(","):
        file, sep, model = item.strip().partition(":")
        if not sep or not file.endswith(".arch") or not model:
            raise ArchError(f"--models expects FILE.arch:MODEL pairs separated by commas, such as "
                            f"vgg.arch:vgg16,resnet.arch:resnet50, but got '{item.strip()}'.")
        out.append((file, model))
    return tuple(out)


def run(args) -> int:
    from tqdm import tqdm

    from ..bench.host import passive_waits
    passive_waits()                          # before anything imports torch
    from ..bench.construct import construct_rows
    models = _models(args.models)
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        raise ArchError("--runs and --threads must be at least 1, and --warmup at least 0.")
    check_threads(args.threads)
    steps = 3 * (args.runs + args.warmup) * len(models)
    with tqdm(total=steps, desc="bench-construct", disable=args.no_progress, leave=False) as bar:
        rows = construct_rows(Path(args.zoo), models, args.runs, args.warmup, args.threads, progress=bar.update)
    if args.json:
        print(json.dumps({"rows": rows, "threads": args.threads,
                          "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                          "machine": platform.processor() or platform.machine(),
                          "date": datetime.now(timezone.utc).isoformat(timespec="minutes")}, indent=1))
        return 0
    print(f"{'model':<10} {'params':>11} {'to_torch ms':>12} {'old ms':>9} {'speed-up':>9} {'torchvision ms':>15}")
    for r in rows:
        tv = f"{r['torchvision_ms']:>15.1f}" if "torchvision_ms" in r else f"{'-':>15}"
        print(f"{r['model']:<10} {r['params']:>11,} {r['to_torch_ms']:>12.1f} {r['old_ms']:>9.1f} "
              f"{r['speedup']:>8.1f}x {tv}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench-construct", help="time building PyTorch models with weights (to_torch, its old "
                                               "path, the torchvision constructor)")
    p.add_argument("--zoo", default="zoo_specs", help="the folder holding the spec files")
    p.add_argument("--models", default="vgg.arch:vgg16,resnet.arch:resnet50",
                   help="FILE.arch:MODEL pairs, comma-separated (default: vgg16 and resnet50)")
    p.add_argument("--runs", type=int, default=7, help="timed rounds (each step once a round; default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on standard error")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(fn=run)
