"""``archc train``: train (or fine-tune after passes) a spec's PyTorch module on ``--data``; write a checkpoint.

Steps, in order: load the spec (initial weights from ``--seed``), load
``--weights`` (all but the ``--reset`` layers) or ``--resume`` a checkpoint,
run ``--passes`` on the IR, train the generated module, bring the weights back
into the IR (``archdsl.from_torch``) and write the checkpoint, whose
``state_dict`` has the IR's parameter names. After passes the spec of the
optimised graph is written beside it (``OUT.arch``), so that every command
loads the checkpoint with ``--weights``. Under ``torchrun`` it trains with
DistributedDataParallel (:mod:`archdsl.train.dist`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..diagnostics import ArchError
from .common import add_spec_args, defines, output_path, seed

PASS_SAMPLES = 256


# ---- arguments shared with eval, distill and compress-report -------------------------------

def add_data_args(p) -> None:
    p.add_argument("--data", required=True, metavar="SOURCE",
                   help="digits (scikit-learn's 8x8 handwritten digits), an .npz file with arrays x (NCHW) and y "
                        "(labels), optionally x_val and y_val, or an image folder (one sub-folder per class, or "
                        "train/ and val/ each so)")
    p.add_argument("--resize", type=int, default=None, metavar="S",
                   help="make digits or .npz samples SxS (bilinear), for models that take larger inputs")


def add_train_args(p, epochs: int = 10) -> None:
    p.add_argument("--epochs", type=int, default=epochs, help=f"epochs to train (default {epochs})")
    p.add_argument("--batch-size", type=int, default=64, help="the global batch size (default 64)")
    p.add_argument("--lr", type=float, default=None, help="the peak learning rate (default: sgd 0.1, adamw 0.001)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd",
                   help="sgd (momentum 0.9) or adamw (default sgd)")
    p.add_argument("--momentum", type=float, default=0.9, help="sgd's momentum (default 0.9)")
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine",
                   help="learning-rate schedule over all steps: cosine to zero, step (x0.1 at 50%% and 75%%) or "
                        "constant (default cosine)")
    p.add_argument("--warmup", type=float, default=0.0, metavar="EPOCHS",
                   help="epochs (may be fractional) of linear learning-rate warm-up before the schedule (default 0)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="weight decay (default: sgd 5e-4, adamw 0.05)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the loss (default 0)")
    p.add_argument("--seed", type=seed, default=0,
                   help="seed of the initial weights, the batch order and dropout (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                   help="bf16 runs the forward pass under autocast (default: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--threads", type=int, default=None, help="PyTorch's CPU threads (default: PyTorch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on standard error")


def add_passes_args(p) -> None:
    p.add_argument("--passes", help='a pass pipeline to run on the IR before training, e.g. "prune{macs=0.5}"')
    p.add_argument("--verify", action="store_true", help="check every pass's outputs as archc opt --verify does")
    p.add_argument("--tolerance", type=float, default=None, help="override the passes' expected errors for --verify")
    p.add_argument("--print-ir-after", action="append", metavar="PASS",
                   help="print the canonical IR to standard error after the named pass (repeatable)")
    p.add_argument("--pass-samples", type=int, default=PASS_SAMPLES,
                   help=f"training samples given to the passes that learn from data (default {PASS_SAMPLES})")


def config_from(args):
    from ..train.loop import TrainConfig
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                       momentum=args.momentum, schedule=args.schedule, warmup=args.warmup,
                       weight_decay=args.weight_decay,
                       seed=args.seed, device=args.device, precision=args.precision,
                       label_smoothing=args.label_smoothing, progress=not args.no_progress).checked()


def set_threads(args) -> None:
    from ..cpu import check_threads
    check_threads(args.threads)
    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)


def load_spec(args, file=None, model=None, define=None, seed=None):
    from ..api import load
    return load(Path(file or args.file), model if file else args.model,
                defines=defines(define if file else args.define), max_nodes=args.max_nodes,
                seed=args.seed if seed is None else seed)


def pass_context(args, data, device: str = "cpu", progress: bool = False):
    from ..passes.context import PassContext
    x, y = data.train.arrays(args.pass_samples)
    return PassContext(data={"x": x, "y": y}, device=device.split(":")[0], seed=args.seed, progress=progress,
                       verify=args.verify, tolerance=args.tolerance)


def apply_passes(graph, args, data, progress: bool = False, quiet: bool = False):
    from ..passes.pipeline import run_pipeline
    if args.pass_samples < 1:
        raise ArchError(f"--pass-samples must be at least 1, but it is {args.pass_samples}.")
    result = run_pipeline(graph, args.passes, print_ir_after=args.print_ir_after or (),
                          ctx=pass_context(args, data, "cpu", progress))
    if not quiet:
        for report in result.reports:
            print(report.summary(), file=sys.stderr)
    return result.graph


def write_spec_beside(graph, out: Path) -> Path | None:
    """The optimised graph as a spec beside ``out`` (``OUT.arch``); None, with a note, where no spec can say it."""
    from ..backends.arch_emit import write_arch
    path = out.with_suffix(".arch")
    try:
        write_arch(graph, path)
    except ArchError as err:
        print(f"note: the optimised graph cannot be written as a spec ({err.message}); the checkpoint loads into "
              "it from Python (archdsl.from_torch).", file=sys.stderr)
        return None
    return path


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def human(n: int) -> str:
    from ..ir.stats import human as h
    return h(n)


# ---- the command ---------------------------------------------------------------------------

def run(args) -> int:
    from ..data import open_data, target_of
    from ..ir.stats import totals
    from ..train import checkpoint as ck
    from ..train.dist import setup
    from ..train.loop import epoch_line, fit

    config = config_from(args)
    set_threads(args)
    if args.resume and (args.weights or args.passes or args.reset):
        raise ArchError("--resume continues a run as it was and cannot be combined with --weights, --reset or "
                        "--passes; after passes, resume with the spec the first run wrote beside its checkpoint "
                        "(OUT.arch).")
    if args.reset and not args.weights:
        raise ArchError("--reset names layers to leave out of --weights, but no --weights were given.")
    out = output_path(args.output, (args.file, args.data, args.weights, args.resume))
    dist = setup(config.device)
    try:
        graph = load_spec(args)
        data = open_data(args.data, target_of(graph), args.resize)
        state = None
        reset = []
        if args.resume:
            state = ck.read_checkpoint(args.resume)
            from ..backends.weights import update_from_state_dict
            graph = update_from_state_dict(graph, state["state_dict"])
        elif args.weights:
            reset = ck.load_weights_except(graph, args.weights, args.reset or [])
        if args.passes:
            graph = apply_passes(graph, args, data, progress=config.progress and dist.main, quiet=not dist.main)
        import archdsl
        module = archdsl.to_torch(graph, device=dist.device)
        model = dist.wrap(module)
        t = totals(graph)
        if dist.main and not args.json:
            print(f"model {graph.name} ({args.file}): {t['params']:,} parameters ({human(t['params'])}), "
                  f"{t['macs']:,} MACs ({human(t['macs'])}); data {data.source}: {len(data.train)} training and "
                  f"{len(data.val)} validation samples of {'x'.join(map(str, data.sample_shape))}")
            steps = data.train.steps(config.batch_size, dist.world)
            extra = f", {dist.world} processes ({dist.backend})" if dist.active else ""
            print(f"{config.optimizer}, lr {config.learning_rate:g}, weight decay {config.decay:g}, "
                  f"{config.schedule} schedule, {plural(config.epochs, 'epoch')} of {steps} steps (batch "
                  f"{config.batch_size}), seed {config.seed}, {dist.device}{extra}"
                  + (f"; reset {len(reset)} parameters ({', '.join(ck.split_patterns(args.reset))})" if reset
                     else ""))
        log = None if args.json else (lambda e: print(epoch_line(e, config.epochs), flush=True))
        result = fit(model, data, config, dist=dist, state=state, log=log)
        trained = archdsl.from_torch(graph, module)
        if dist.main:
            arch = write_spec_beside(trained, out) if args.passes else None
            meta = {"model": graph.name, "spec": str(args.file), "defines": defines(args.define),
                    "passes": args.passes, "seed": config.seed, "config": config.to_json(), "data": str(args.data),
                    "resize": args.resize, "arch": str(arch) if arch else None,
                    "world_size": dist.world}
            ck.save_checkpoint(out, module, result, meta)
            last = result.last
            if args.json:
                summary = {"model": graph.name, "epochs": config.epochs, "train_loss": last.get("train_loss"),
                           "train_accuracy": last.get("train_accuracy"), "val_loss": last.get("val_loss"),
                           "val_accuracy": last.get("val_accuracy"), "val_top5": last.get("val_top5"),
                           "seconds": result.seconds, "params": t["params"], "macs": t["macs"],
                           "train_samples": len(data.train), "val_samples": len(data.val),
                           "world_size": dist.world, "device": dist.device, "checkpoint": str(out),
                           "spec": str(arch) if arch else None, "history": result.history}
                print(json.dumps(summary, indent=1))
            else:
                acc = last.get("val_accuracy")
                what = f"val accuracy {100 * acc:.2f}%, " if acc is not None else ""
                print(f"wrote {out} ({what}{plural(config.epochs, 'epoch')}, {result.seconds:.1f} s)")
                if arch:
                    print(f"wrote {arch} (the optimised model; evaluate it with archc eval {arch} --weights {out})")
        dist.barrier()
    finally:
        dist.close()
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a spec's model on --data (digits, .npz, image folder); write a checkpoint")
    add_spec_args(p)
    add_data_args(p)
    p.add_argument("-o", "--output", required=True, help="the checkpoint to write (.pt); loads with --weights")
    add_train_args(p)
    p.add_argument("--weights", help="start from these weights (a state_dict or checkpoint), loaded by name")
    p.add_argument("--reset", action="append", metavar="SCOPES",
                   help="with --weights: keep these layers' initial weights (comma-separated scopes or patterns, "
                        "e.g. fc), to transfer to another -D num_classes (repeatable)")
    p.add_argument("--resume", metavar="CKPT", help="continue the run of this checkpoint up to --epochs")
    add_passes_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of one line per epoch")
    p.set_defaults(fn=run)
