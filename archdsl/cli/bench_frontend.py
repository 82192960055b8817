"""``archc bench-frontend``: text to shape-checked IR, for the largest zoo models and growing generated specs."""
from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

from ..diagnostics import ArchError


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ArchError(f"--blocks expects comma-separated ints, such as 143,1428, but got '{text}'.") from None
    if not sizes or min(sizes) < 1 or max(sizes) > 20_000:
        raise ArchError("--blocks sizes must be between 1 and 20000.")
    return sizes


def _models(text: str | None) -> tuple:
    from ..bench.frontend import ZOO_MODELS
    if text is None:
        return ZOO_MODELS
    pairs = tuple(tuple(item.split(":", 1)) for item in text.split(",") if item)
    if not pairs or any(len(p) != 2 or not p[0].endswith(".arch") or not p[1] for p in pairs):
        raise ArchError(f"--models expects comma-separated FILE.arch:MODEL pairs, such as resnet.arch:resnet152, "
                        f"but got '{text}'.")
    return pairs


def run(args) -> int:
    from tqdm import tqdm

    from ..bench.frontend import scaling_rows, zoo_rows
    sizes = _sizes(args.blocks)
    models = _models(args.models)
    zoo = Path(args.zoo)
    with tqdm(total=len(models) + len(sizes), desc="bench-frontend", disable=args.no_progress, leave=False) as bar:
        rows = zoo_rows(zoo, models, progress=bar.update) + scaling_rows(sizes, progress=bar.update)
    if args.json:
        print(json.dumps({"rows": rows, "machine": platform.processor() or platform.machine(),
                          "date": datetime.now(timezone.utc).isoformat(timespec="minutes")}, indent=1))
        return 0
    print(f"{'spec':<40} {'nodes':>7} {'ms':>9} {'us/node':>8}")
    for r in rows:
        print(f"{r['spec']:<40} {r['nodes']:>7} {r['ms']:>9.1f} {r['ms'] * 1e3 / r['nodes']:>8.1f}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench-frontend", help="time text -> shape-checked IR (zoo models and a scaling series)")
    p.add_argument("--zoo", default="zoo_specs", help="the zoo folder (its largest model of each family is timed)")
    p.add_argument("--models", default=None, metavar="FILE.arch:MODEL,...",
                   help="the zoo models to time (default: the largest of each family)")
    p.add_argument("--blocks", default="143,286,714,1428,2857",
                   help="sizes of the generated residual network, in blocks of 7 nodes (default gives about "
                        "1k, 2k, 5k, 10k and 20k nodes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on standard error")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(fn=run)
