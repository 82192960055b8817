"""The training loop and evaluation shared by ``archc train``, ``distill`` and ``compress-report``.

:func:`fit` trains a module on the ``train`` split of :class:`archdsl.data.Data`
and evaluates it on the ``val`` split after every epoch; :func:`evaluate` gives
top-1 and top-5 accuracy and the mean cross-entropy of any predictor (a PyTorch
module, an onnxruntime session). On CPU, a run is a function of the seed: the
batch order comes from ``(seed, epoch)``, dropout from ``torch.manual_seed``.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..diagnostics import ArchError
from .dist import Dist

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05}
STEP_MILESTONES = (0.5, 0.75)          # of the run: the step schedule multiplies the rate by 0.1 at each


@dataclass
class TrainConfig:
    """How to train; ``lr`` and ``weight_decay`` default per optimizer (sgd 0.1 and 5e-4, adamw 1e-3 and 0.05)."""
    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None
    optimizer: str = "sgd"
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup: float = 0.0                   # epochs of linear warm-up before the schedule
    weight_decay: float | None = None
    seed: int = 0
    device: str = "cpu"
    precision: str | None = None          # "fp32" | "bf16"; default bf16 on CUDA, fp32 on CPU
    label_smoothing: float = 0.0
    progress: bool = True

    def checked(self) -> "TrainConfig":
        if self.optimizer not in OPTIMIZERS:
            raise ArchError(f"Unknown optimizer '{self.optimizer}'; the optimizers are {', '.join(OPTIMIZERS)}.")
        if self.schedule not in SCHEDULES:
            raise ArchError(f"Unknown schedule '{self.schedule}'; the schedules are {', '.join(SCHEDULES)}.")
        if self.epochs < 0:
            raise ArchError(f"--epochs cannot be negative, but it is {self.epochs}.")
        if self.batch_size < 1:
            raise ArchError(f"--batch-size must be at least 1, but it is {self.batch_size}.")
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise ArchError(f"--lr must be a positive finite number, but it is {self.lr}.")
        if not 0 <= self.momentum < 1:
            raise ArchError(f"--momentum must be in [0, 1), but it is {self.momentum}.")
        if not 0 <= self.warmup <= max(self.epochs, 0):
            raise ArchError(f"--warmup must be between 0 and --epochs ({self.epochs}), but it is {self.warmup}.")
        if self.weight_decay is not None and not 0 <= self.weight_decay < math.inf:
            raise ArchError(f"--weight-decay must be a finite number of at least 0, but it is {self.weight_decay}.")
        if not 0 <= self.label_smoothing < 1:
            raise ArchError(f"--label-smoothing must be in [0, 1), but it is {self.label_smoothing}.")
        if self.precision not in (None, "fp32", "bf16"):
            raise ArchError(f"Unknown precision '{self.precision}'; the precisions are fp32 and bf16.")
        return self

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

    @property
    def decay(self) -> float:
        return DEFAULT_WEIGHT_DECAY[self.optimizer] if self.weight_decay is None else self.weight_decay

    def autocast_dtype(self, device: str):
        import torch
        precision = self.precision or ("bf16" if device.startswith("cuda") else "fp32")
        return torch.bfloat16 if precision == "bf16" else None

    def to_json(self) -> dict:
        d = asdict(self)
        d["lr"], d["weight_decay"] = self.learning_rate, self.decay
        return d


def make_optimizer(params, config: TrainConfig):
    import torch
    params = [p for p in params if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum,
                               weight_decay=config.decay)
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.decay)


def lr_factor(schedule: str, step: int, total: int, warmup: int = 0) -> float:
    """The learning rate's multiplier after ``step`` of ``total`` optimiser steps.

    The first ``warmup`` steps rise linearly to 1; the schedule covers the steps after them."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    t = min(step - warmup, total - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "step":
        return 0.1 ** sum(t >= m for m in STEP_MILESTONES)
    return 1.0


def make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    import torch
    total, warmup = steps_per_epoch * config.epochs, int(round(config.warmup * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(config.schedule, s, total, warmup))


# ---- metrics ---------------------------------------------------------------------------

def batch_metrics(logits: np.ndarray, y: np.ndarray) -> tuple:
    """``(summed cross-entropy, top-1 hits, top-5 hits)`` of one batch of logits, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(len(y)), y].sum())
    k = min(5, z.shape[1])
    top = np.argsort(-z, axis=1, kind="stable")[:, :k]
    hit1 = int((top[:, 0] == y).sum())
    hit5 = int((top == y[:, None]).any(axis=1).sum())
    return loss, hit1, hit5


def evaluate(predict, split, batch_size: int = 256, dist: Dist | None = None, classes: int | None = None) -> dict:
    """Accuracy and loss of ``predict`` (a function from an NCHW float32 array to logits) on ``split``."""
    dist = dist or Dist()
    loss = hit1 = hit5 = n = 0
    width = classes
    for batch in split.batches(batch_size, rank=dist.rank, world=dist.world):
        if len(batch.y) == 0:
            continue
        logits = np.asarray(predict(batch.x))
        width = logits.shape[1]
        l, h1, h5 = batch_metrics(logits, batch.y)
        loss, hit1, hit5, n = loss + l, hit1 + h1, hit5 + h5, n + len(batch.y)
    loss, hit1, hit5, n = dist.sum([loss, hit1, hit5, n])
    n = int(n)
    out = {"samples": n, "correct": int(hit1), "top1": hit1 / n if n else float("nan"),
           "top5": (hit5 / n if n else float("nan")) if (width or 0) >= 5 else None,
           "loss": loss / n if n else float("nan")}
    return out


def torch_predictor(module, device: str = "cpu", autocast_dtype=None):
    """A predict function for :func:`evaluate`: ``module`` in eval mode, first output, float32 numpy."""
    import contextlib
    import torch
    module.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        ctx = torch.autocast(device.split(":")[0], dtype=autocast_dtype) if autocast_dtype is not None \
            else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            out = module(torch.from_numpy(x).to(device))
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.float().cpu().numpy()
    return predict


# ---- training --------------------------------------------------------------------------

def cross_entropy_sum(label_smoothing: float = 0.0):
    """The default loss: summed cross-entropy of the first output."""
    import torch.nn.functional as F

    def loss_fn(outputs, x, y):
        logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        loss = F.cross_entropy(logits.float(), y, reduction="sum", label_smoothing=label_smoothing)
        return loss, logits, {}
    return loss_fn


@dataclass
class FitResult:
    history: list = field(default_factory=list)      # one dict per epoch
    seconds: float = 0.0
    optimizer: object = None
    scheduler: object = None
    epochs: int = 0

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


def _unwrap(module):
    return getattr(module, "module", module)


def fit(model, data, config: TrainConfig, *, dist: Dist | None = None, loss_fn=None, state: dict | None = None,
        desc: str = "epoch", log=None, eval_module=None, stream=None, validate: bool = True,
        stop_after: int | None = None) -> FitResult:
    """Train ``model`` (a module, possibly DDP-wrapped) on ``data.train``; evaluate on ``data.val`` each epoch.

    ``loss_fn(outputs, x, y) -> (summed loss, logits, {name: summed part})`` defaults to the
    summed cross-entropy. ``state`` resumes a run (``optimizer``, ``scheduler``, ``epoch``,
    ``history``, ``torch_rng`` of a checkpoint). ``log(entry)`` is called after every epoch.
    ``eval_module`` is what is evaluated (default: the unwrapped ``model``); ``validate=False``
    skips the evaluation (a model whose outputs are not class scores). ``stop_after=k`` stops after
    epoch ``k`` of the plan (as an interrupted run would; resume it with its checkpoint's state).
    """
    import contextlib
    import torch
    from tqdm import tqdm
    config.checked()
    dist = dist or Dist(device=config.device)
    device = dist.device
    loss_fn = loss_fn or cross_entropy_sum(config.label_smoothing)
    amp = config.autocast_dtype(device)
    steps = data.train.steps(config.batch_size, dist.world)
    optimizer = make_optimizer(model.parameters(), config)
    scheduler = make_scheduler(optimizer, config, steps)
    result = FitResult(optimizer=optimizer, scheduler=scheduler)
    start = 0
    torch.manual_seed(config.seed + dist.rank)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state.get("epoch", 0))
        result.history = list(state.get("history", []))
        if state.get("torch_rng") is not None and dist.rank == 0:
            torch.set_rng_state(state["torch_rng"])
    target = eval_module if eval_module is not None else _unwrap(model)
    t0 = time.perf_counter()
    last = config.epochs if stop_after is None else min(config.epochs, stop_after)
    result.epochs = start
    for epoch in range(start, last):
        model.train()
        e0 = time.perf_counter()
        sums = {"loss": 0.0, "hit": 0.0, "n": 0.0}
        scored = False
        bar = tqdm(total=steps, desc=f"{desc} {epoch + 1}/{config.epochs}", leave=False, dynamic_ncols=True,
                   file=stream or sys.stderr, disable=not (config.progress and dist.main))
        for batch in data.train.batches(config.batch_size, shuffle=True, seed=config.seed, epoch=epoch,
                                        rank=dist.rank, world=dist.world, train=True):
            x = torch.from_numpy(batch.x).to(device, non_blocking=True)
            y = torch.from_numpy(batch.y).to(device, non_blocking=True)
            ctx = torch.autocast(device.split(":")[0], dtype=amp) if amp is not None else contextlib.nullcontext()
            with ctx:
                outputs = model(x)
            loss_sum, logits, parts = loss_fn(outputs, x, y)
            optimizer.zero_grad(set_to_none=True)
            (loss_sum * (dist.world / batch.total)).backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                hit = (logits.argmax(1) == y).sum().item() if logits is not None else 0
            scored = scored or logits is not None
            sums["loss"] += float(loss_sum.item())
            sums["hit"] += hit
            sums["n"] += len(batch.y)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            bar.update(1)
            if sums["n"]:
                post = {"loss": f"{sums['loss'] / sums['n']:.4f}"}
                if logits is not None:
                    post["acc"] = f"{100 * sums['hit'] / sums['n']:.2f}%"
                bar.set_postfix(post, refresh=False)
        bar.close()
        keys = sorted(sums)
        totals = dict(zip(keys, dist.sum([sums[k] for k in keys])))
        n = max(1.0, totals["n"])
        entry = {"epoch": epoch + 1, "train_loss": totals["loss"] / n,
                 "train_accuracy": totals["hit"] / n if scored else None,
                 "lr": optimizer.param_groups[0]["lr"]}
        for k in keys:
            if k not in ("loss", "hit", "n"):
                entry[f"train_{k}"] = totals[k] / n
        if validate and len(data.val):
            val = evaluate(torch_predictor(target, device, amp), data.val, max(256, config.batch_size), dist)
            target.train()
            entry.update({"val_loss": val["loss"], "val_accuracy": val["top1"], "val_top5": val["top5"]})
        entry["seconds"] = time.perf_counter() - e0
        result.history.append(entry)
        result.epochs = epoch + 1
        if log is not None and dist.main:
            log(entry)
    result.seconds = time.perf_counter() - t0
    return result


def epoch_line(entry: dict, epochs: int, prefix: str = "epoch") -> str:
    """``epoch 2/5: train loss 0.1234, accuracy 96.10%; val loss ..., accuracy ... (3.2 s)``."""
    parts = [f"train loss {entry['train_loss']:.4f}"]
    if "train_hint" in entry and entry["train_hint"] != entry["train_loss"]:
        parts[-1] += f" (hint {entry['train_hint']:.4f})"
    if entry.get("train_accuracy") is not None:
        parts[-1] += f", accuracy {100 * entry['train_accuracy']:.2f}%"
    if "val_accuracy" in entry:
        parts.append(f"val loss {entry['val_loss']:.4f}, accuracy {100 * entry['val_accuracy']:.2f}%")
    return f"{prefix} {entry['epoch']}/{epochs}: " + "; ".join(parts) + f" ({entry['seconds']:.1f} s)"
