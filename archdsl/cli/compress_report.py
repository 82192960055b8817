"""``archc compress-report``: a grid of pass pipelines, each measured for accuracy, size, MACs and latency.

See :mod:`archdsl.train.report` for the grid's TOML format and what is measured.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..diagnostics import ArchError
from .common import add_spec_args, defines, seed

FINETUNE_LR = 0.01


def run(args) -> int:
    from ..backends.weights import load_weights
    from ..data import open_data, target_of
    from ..train.loop import TrainConfig
    from ..train.report import check_points, load_grid, run_report
    from .train import load_spec, set_threads
    from ..train.dist import check_device
    set_threads(args)
    check_device(args.device)
    if args.finetune is not None and args.finetune < 0:
        raise ArchError(f"--finetune cannot be negative, but it is {args.finetune}.")
    grid = load_grid(args.grid)
    points, skipped = check_points(grid, args.skip_unavailable)
    ft = {"epochs": 0, "lr": FINETUNE_LR, **grid.finetune}
    config = TrainConfig(seed=args.seed, device=args.device, progress=not args.no_progress, **ft).checked()
    graph = load_spec(args)
    load_weights(graph, Path(args.weights))
    data = open_data(args.data, target_of(graph), args.resize)
    meta = {"spec": str(args.file), "model": graph.name, "defines": defines(args.define), "weights": args.weights}
    report = run_report(graph, data, grid, points, Path(args.output), train_config=config,
                        finetune_epochs=args.finetune, seed=args.seed, pass_samples=args.pass_samples,
                        progress=not args.no_progress, save_models=args.save_models, skipped=skipped, meta=meta)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    out = Path(args.output)
    print((out / "report.md").read_text(encoding="utf-8"), end="")
    print(f"wrote {out / 'report.md'}, {out / 'report.json'} and {len(report['plots'])} plots in {out}")
    return 0


def register(sub) -> None:
    from .train import add_data_args
    p = sub.add_parser("compress-report",
                       help="apply a grid of pass pipelines, fine-tune, and tabulate and plot accuracy against "
                            "MACs, size and latency")
    add_spec_args(p)
    p.add_argument("--weights", required=True, help="the trained weights of the model (the baseline)")
    add_data_args(p)
    p.add_argument("--grid", required=True, metavar="GRID.toml", help="the points to measure (see docs/compression.md)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder for the table and the plots")
    p.add_argument("--finetune", type=int, default=None, metavar="EPOCHS",
                   help="fine-tune every point this many epochs (default: the grid's [finetune] epochs, else 0)")
    p.add_argument("--skip-unavailable", action="store_true",
                   help="skip the points whose passes this archdsl lacks, listing them in the report")
    p.add_argument("--save-models", action="store_true",
                   help="also write each point's weights and spec to DIR/models/")
    p.add_argument("--pass-samples", type=int, default=256,
                   help="training samples given to passes that learn from data (default 256)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the passes and of fine-tuning (default 0)")
    p.add_argument("--device", default="cpu", help="where fine-tuning runs: cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="PyTorch's CPU threads for fine-tuning")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on standard error")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    p.set_defaults(fn=run)
