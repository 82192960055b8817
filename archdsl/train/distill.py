"""Knowledge distillation with hints: a trained teacher guides a smaller student.

A **hint** pairs a teacher scope with a student scope (``--hint layer3:layer2``):
the output of the student's block, mapped by an adapter to the teacher's
channels (a 1x1 convolution, or a linear map for 2-D features, where the
channel counts differ; none where they agree), should match the teacher's block
output: the hint loss is their mean squared error per sample, summed over the
hints (FitNets, Romero et al. 2015). Training runs in two stages, as the seed
found best:

1. ``hint_epochs`` epochs of the hint loss alone, which trains the student up to
   its hinted blocks (and the adapters): the student is cut after its last
   hinted block (``dce`` of the graph whose outputs are the hinted nodes);
2. ``epochs`` epochs of ``(1 - alpha) CE(s, y) + alpha T^2 KL(softmax(t / T) ||
   softmax(s / T)) + hint_weight hint`` (Hinton et al. 2015: soft targets at
   temperature ``T``, whose gradients scale as ``1 / T^2``).

Block outputs become extra outputs of the graph (``graph.outputs``), so the
student's module has its usual parameters and the trained weights come back
into the student's own graph: the checkpoint loads like any other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..diagnostics import ArchError, did_you_mean


def _shape(s) -> str:
    return "(" + ", ".join(map(str, s)) + ")"


def scope_output(graph, scope: str, role: str) -> int:
    """The node whose value leaves scope ``scope`` (a layer, a block instance or a stage)."""
    members = {n.id for n in graph.nodes() if n.scope == scope or (n.scope or "").startswith(scope + ".")}
    members.discard(None)
    if not members:
        scopes = {n.scope for n in graph.nodes() if n.scope}
        scopes |= {s.rsplit(".", k)[0] for s in list(scopes) for k in range(1, s.count(".") + 1)}
        hint = did_you_mean(scope, scopes)
        raise ArchError(f"The {role} model '{graph.name}' has no scope '{scope}'{hint or '.'} A hint names a layer, "
                        "a block instance or a stage of each model; archc stats lists the scopes.")
    outs = set(graph.outputs)
    exits = [nid for nid in graph.node_ids() if nid in members
             and (nid in outs or any(u not in members for u in graph.users(nid)))]
    if len(exits) != 1:
        names = ", ".join(graph.data(n)["scope"] for n in exits) or "none"
        raise ArchError(f"The scope '{scope}' of the {role} model '{graph.name}' has {len(exits)} values that leave "
                        f"it ({names}), so it has no single output for a hint; name one of its layers instead.")
    return exits[0]


def with_outputs(graph, nids: list, only: bool = False):
    """A copy of ``graph`` with ``nids`` as extra outputs (or as its only outputs, dead code removed)."""
    g = graph.copy()
    if only:
        g.outputs = list(nids)
        from ..passes.pipeline import run_pipeline
        return run_pipeline(g, "dce").graph
    g.outputs = list(g.outputs) + list(nids)
    return g


@dataclass
class Hint:
    teacher: str
    student: str
    teacher_node: int = -1
    student_node: int = -1
    teacher_shape: tuple = ()
    student_shape: tuple = ()

    @property
    def label(self) -> str:
        return f"{self.teacher}:{self.student}"


def parse_hints(items) -> list:
    hints = []
    for item in items or []:
        t, sep, s = item.partition(":")
        if not sep or not t.strip() or not s.strip():
            raise ArchError(f"--hint expects TEACHER_SCOPE:STUDENT_SCOPE, such as --hint layer3:layer2, but got "
                            f"'{item}'.")
        hints.append(Hint(t.strip(), s.strip()))
    return hints


def resolve_hints(hints, teacher, student) -> list:
    for h in hints:
        h.teacher_node = scope_output(teacher, h.teacher, "teacher")
        h.student_node = scope_output(student, h.student, "student")
        h.teacher_shape = tuple(teacher.data(h.teacher_node)["shape"])
        h.student_shape = tuple(student.data(h.student_node)["shape"])
        ts, ss = h.teacher_shape, h.student_shape
        if len(ts) != len(ss) or len(ts) not in (2, 4) or ts[2:] != ss[2:]:
            raise ArchError(f"The hint {h.label} pairs the teacher's {_shape(ts)} with the student's {_shape(ss)}; a "
                            "hint needs feature maps of the same height and width (N, C, H, W), or features "
                            "(N, F), so pick blocks at the same resolution.")
    return hints


def make_adapters(hints):
    """One adapter per hint: a 1x1 conv (or a linear map) from the student's channels to the teacher's."""
    import torch.nn as nn
    layers = []
    for h in hints:
        cs, ct = h.student_shape[1], h.teacher_shape[1]
        if cs == ct:
            layers.append(nn.Identity())
        elif len(h.student_shape) == 4:
            layers.append(nn.Conv2d(cs, ct, 1, bias=False))
        else:
            layers.append(nn.Linear(cs, ct, bias=False))
    return nn.ModuleList(layers)


def check_pair(teacher, student) -> None:
    ti, si = teacher.data(teacher.inputs[0])["shape"], student.data(student.inputs[0])["shape"]
    if tuple(ti) != tuple(si):
        raise ArchError(f"The teacher '{teacher.name}' takes {_shape(ti)} but the student '{student.name}' takes "
                        f"{_shape(si)}; distillation feeds both the same samples, so compile them for one input "
                        "(e.g. -D size=... and --teacher-D size=...).")
    to, so = teacher.data(teacher.outputs[0])["shape"], student.data(student.outputs[0])["shape"]
    if tuple(to) != tuple(so):
        raise ArchError(f"The teacher '{teacher.name}' outputs {_shape(to)} but the student '{student.name}' outputs "
                        f"{_shape(so)}; soft targets need the same classes (-D num_classes=...).")


def _hinted(module, adapters):
    import torch.nn as nn

    class Hinted(nn.Module):
        """The student and its adapters: ``forward`` gives the student's outputs, hints adapted."""

        def __init__(self):
            super().__init__()
            self.student, self.adapters = module, adapters

        def forward(self, x):
            out = self.student(x)
            out = out if isinstance(out, tuple) else (out,)
            k = len(out) - len(self.adapters)
            return out[:k] + tuple(a(f) for a, f in zip(self.adapters, out[k:]))
    return Hinted()


def _mse_sum(pairs):
    """Summed over the batch: each sample's mean squared error, added over the hints."""
    total = 0
    for s, t in pairs:
        total = total + (s.float() - t.float()).pow(2).flatten(1).mean(1).sum()
    return total


def distill(teacher, student, data, config, hints, *, hint_epochs: int = 0, temperature: float = 4.0,
            alpha: float = 0.9, hint_weight: float = 1.0, dist=None, log=None):
    """Train ``student`` from ``teacher`` (graphs with weights); returns ``(trained student graph, history)``."""
    import contextlib
    import torch
    import torch.nn.functional as F
    import archdsl
    from .checkpoint import update_params
    from .dist import Dist
    from .loop import fit
    if not 0 < temperature < math.inf:
        raise ArchError(f"--temperature must be a positive finite number, but it is {temperature}.")
    if not 0 <= alpha <= 1:
        raise ArchError(f"--alpha must be in [0, 1], but it is {alpha}.")
    if hint_epochs < 0 or not 0 <= hint_weight < math.inf:
        raise ArchError("--hint-epochs cannot be negative, and --hint-weight must be a finite number of at least 0.")
    if hint_epochs and not hints:
        raise ArchError("--hint-epochs trains the hint loss alone, but no --hint was given; add --hint "
                        "TEACHER_SCOPE:STUDENT_SCOPE or drop --hint-epochs.")
    dist = dist or Dist(device=config.device)
    device = dist.device
    check_pair(teacher, student)
    resolve_hints(hints, teacher, student)
    torch.manual_seed(config.seed)
    adapters = make_adapters(hints).to(device)
    amp = config.autocast_dtype(device)
    history = []

    def autocast():
        return torch.autocast(device.split(":")[0], dtype=amp) if amp is not None else contextlib.nullcontext()

    tnodes, snodes = [h.teacher_node for h in hints], [h.student_node for h in hints]
    if hint_epochs and hints:
        t_trunk = archdsl.to_torch(with_outputs(teacher, tnodes, only=True), device=device).eval()
        s_trunk = archdsl.to_torch(with_outputs(student, snodes, only=True), device=device)
        model = dist.wrap(_hinted(s_trunk, adapters))

        def hint_loss(outputs, x, y):
            with torch.no_grad(), autocast():
                t = t_trunk(x)
            t = t if isinstance(t, tuple) else (t,)
            loss = _mse_sum(zip(outputs, t))
            return loss, None, {"hint": loss.item()}

        from dataclasses import replace
        stage = fit(model, data, replace(config, epochs=hint_epochs), dist=dist, loss_fn=hint_loss, desc="hint",
                    validate=False, log=(lambda e: log(e, "hint", hint_epochs)) if log else None)
        history += [{"stage": "hint", **e} for e in stage.history]
        student = update_params(student, s_trunk.state_dict())

    t_full = archdsl.to_torch(with_outputs(teacher, tnodes), device=device).eval()
    s_graph = with_outputs(student, snodes)
    s_full = archdsl.to_torch(s_graph, device=device)
    model = dist.wrap(_hinted(s_full, adapters))
    T, k = float(temperature), len(hints)

    def kd_loss(outputs, x, y):
        with torch.no_grad(), autocast():
            t = t_full(x)
        t = t if isinstance(t, tuple) else (t,)
        s_logits = outputs[0].float()
        ce = F.cross_entropy(s_logits, y, reduction="sum", label_smoothing=config.label_smoothing)
        kd = F.kl_div(F.log_softmax(s_logits / T, 1), F.log_softmax(t[0].float() / T, 1), reduction="sum",
                      log_target=True) * T * T
        loss = (1 - alpha) * ce + alpha * kd
        parts = {"ce": ce.item(), "kd": kd.item()}
        if k and hint_weight:
            h = _mse_sum(zip(outputs[1:], t[1:]))
            loss = loss + hint_weight * h
            parts["hint"] = h.item()
        return loss, s_logits, parts

    stage = fit(model, data, config, dist=dist, loss_fn=kd_loss, eval_module=s_full,
                log=(lambda e: log(e, "epoch", config.epochs)) if log else None)
    history += [{"stage": "distill", **e} for e in stage.history]
    return archdsl.from_torch(student, s_full), history, stage
