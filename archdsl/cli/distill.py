"""``archc distill``: train a student spec from a trained teacher, with hints and soft targets.

``FILE`` (with ``--model`` and ``-D``) is the student; the teacher is
``--teacher FILE`` with ``--teacher-model``, ``--teacher-D`` and
``--teacher-weights``. ``--hint T_SCOPE:S_SCOPE`` (repeatable) matches block
outputs; ``--hint-epochs N`` trains the hint loss alone first, then ``--epochs``
of task loss + soft-target KD + hint (:mod:`archdsl.train.distill`). The
student's checkpoint loads with ``--weights`` like any other.
"""
from __future__ import annotations

import json
from pathlib import Path

from .common import add_spec_args, defines, output_path


def run(args) -> int:
    from ..backends.weights import load_weights
    from ..data import open_data, target_of
    from ..ir.stats import totals
    from ..train import checkpoint as ck
    from ..train.dist import setup
    from ..train.distill import check_pair, distill, parse_hints, resolve_hints
    from ..train.loop import epoch_line, evaluate, torch_predictor
    from .train import config_from, human, load_spec, plural, set_threads

    config = config_from(args)
    set_threads(args)
    hints = parse_hints(args.hint)
    out = output_path(args.output, (args.file, args.teacher, args.teacher_weights, args.weights, args.data))
    dist = setup(config.device)
    try:
        student = load_spec(args)
        teacher = load_spec(args, args.teacher, args.teacher_model, args.teacher_define)
        load_weights(teacher, Path(args.teacher_weights))
        if args.weights:
            load_weights(student, Path(args.weights))
        data = open_data(args.data, target_of(student), args.resize)
        target_of(teacher)
        check_pair(teacher, student)
        resolve_hints(hints, teacher, student)
        import archdsl
        if dist.main and not args.json:
            ts, ss = totals(teacher), totals(student)
            t_acc = evaluate(torch_predictor(archdsl.to_torch(teacher, device=dist.device), dist.device), data.val)
            print(f"teacher {teacher.name} ({args.teacher}): {human(ts['params'])} parameters, {human(ts['macs'])} "
                  f"MACs, val accuracy {100 * t_acc['top1']:.2f}%")
            print(f"student {student.name} ({args.file}): {human(ss['params'])} parameters, {human(ss['macs'])} "
                  f"MACs; hints {', '.join(h.label for h in hints) or 'none'}; "
                  f"{plural(args.hint_epochs, 'hint epoch')}, {plural(config.epochs, 'epoch')} of KD (T={args.temperature:g}, alpha={args.alpha:g})")

        def log(entry, stage, epochs):
            if not args.json:
                print(epoch_line(entry, epochs, stage), flush=True)
        trained, history, result = distill(teacher, student, data, config, hints, hint_epochs=args.hint_epochs,
                                           temperature=args.temperature, alpha=args.alpha,
                                           hint_weight=args.hint_weight, dist=dist, log=log)
        if dist.main:
            module = archdsl.to_torch(trained)
            meta = {"model": student.name, "spec": str(args.file), "defines": defines(args.define),
                    "seed": config.seed, "config": config.to_json(), "data": str(args.data), "resize": args.resize,
                    "teacher": {"spec": str(args.teacher), "model": teacher.name, "weights": str(args.teacher_weights),
                                "defines": defines(args.teacher_define)},
                    "hints": [h.label for h in hints], "hint_epochs": args.hint_epochs,
                    "temperature": args.temperature, "alpha": args.alpha, "hint_weight": args.hint_weight,
                    "history": history, "world_size": dist.world}
            ck.save_checkpoint(out, module, None, meta)
            last = history[-1] if history else {}
            if args.json:
                print(json.dumps({"model": student.name, "teacher": teacher.name, "epochs": config.epochs,
                                  "hint_epochs": args.hint_epochs, "hints": [h.label for h in hints],
                                  "train_loss": last.get("train_loss"), "val_loss": last.get("val_loss"),
                                  "val_accuracy": last.get("val_accuracy"), "val_top5": last.get("val_top5"),
                                  "seconds": sum(e["seconds"] for e in history), "checkpoint": str(out),
                                  "history": history}, indent=1))
            else:
                acc = last.get("val_accuracy")
                print(f"wrote {out} (student val accuracy {100 * acc:.2f}%)" if acc is not None else f"wrote {out}")
        dist.barrier()
    finally:
        dist.close()
    return 0


def register(sub) -> None:
    from .train import add_data_args, add_train_args
    p = sub.add_parser("distill", help="train a student spec from a trained teacher (hints, soft targets)")
    add_spec_args(p)
    p.add_argument("--teacher", required=True, metavar="FILE", help="the teacher's .arch spec")
    p.add_argument("--teacher-model", help="the teacher's model, where its file defines several")
    p.add_argument("--teacher-D", dest="teacher_define", action="append", metavar="NAME=VALUE",
                   help="override a teacher model parameter (repeatable)")
    p.add_argument("--teacher-weights", required=True, metavar="W.pt", help="the teacher's trained weights")
    p.add_argument("--weights", help="the student's initial weights (default: the spec's initialisation)")
    add_data_args(p)
    p.add_argument("-o", "--output", required=True, help="the student's checkpoint to write (.pt)")
    add_train_args(p)
    p.add_argument("--hint", action="append", metavar="T_SCOPE:S_SCOPE",
                   help="match the student's block output to the teacher's (a 1x1 conv adapter where the "
                        "channels differ); repeatable")
    p.add_argument("--hint-epochs", type=int, default=0, help="epochs of the hint loss alone first (default 0)")
    p.add_argument("--hint-weight", type=float, default=1.0, help="weight of the hint loss afterwards (default 1)")
    p.add_argument("--temperature", type=float, default=4.0, help="soft-target temperature T (default 4)")
    p.add_argument("--alpha", type=float, default=0.9,
                   help="weight of the soft-target loss; 1 - alpha weighs the labels' loss (default 0.9)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(fn=run)
