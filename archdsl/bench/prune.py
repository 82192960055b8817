"""Structured pruning at about 2x fewer MACs: archdsl's ``prune`` pass against Torch-Pruning, measured.

For each model (ResNet-50, DenseNet-121, GoogLeNet, VGG-16 by default, all four
torchvision networks with the spec's weights loaded into torchvision's own model):

* ``archdsl``: the IR pruned by ``run_pipeline(graph, passes)`` (default
  :data:`PASSES`), run as ``archdsl.to_torch`` (PyTorch eager) and as
  ``onnx_bytes`` in onnxruntime; its speed-up is against the unpruned IR on the
  same two backends;
* ``torch-pruning``: torchvision's model pruned by Torch-Pruning's ``MetaPruner``
  (``MagnitudeImportance(p=2)``, one uniform ``pruning_ratio`` per layer, the
  classifier ignored), the ratio searched until the model keeps ``target`` of its
  MACs; run eager and, through ``torch.onnx.export`` (TorchScript exporter), in
  onnxruntime; its speed-up is against unpruned torchvision on the same backends.

MACs are those of convolutions and linear layers (archdsl's IR count; for
torchvision modules the same count by forward hooks, checked equal on the
unpruned model). Ideal speed-up is the MAC ratio; "measured / ideal" is the
measured speed-up divided by it.

Every latency of one model and batch size is measured round-robin in one process
(``timing.interleaved``): each round runs every row once, so a change of machine
load falls on all rows alike and the speed-ups (ratios of medians) stay
meaningful. PyTorch and onnxruntime both use ``threads`` threads and wait
passively: ``OMP_WAIT_POLICY=PASSIVE`` (set before torch is imported, when the
caller has not set it) and onnxruntime's ``session.intra_op.allow_spinning=0``, so
no idle worker spins while another row runs.

Torch-Pruning (``pip install archdsl[bench]``) is imported only here, inside
:func:`torch_pruning_model`; nothing else in archdsl needs it. Run as
``archc bench-prune`` or ``python -m archdsl.bench.prune``.
"""
from __future__ import annotations

import copy
import datetime
import gc
import io
import math
import sys
import warnings
from pathlib import Path
from .host import loadavg, passive_waits  # noqa: F401  (re-exported for the CLI)
from .host import machine as host_machine, waits
from .runners import CPU_BACKENDS

MODELS = (("resnet.arch", "resnet50"), ("densenet.arch", "densenet121"), ("googlenet.arch", "googlenet"),
          ("vgg.arch", "vgg16"))
PASSES = "prune{macs=0.5,criterion=l2,round_to=16}"
TARGET = 0.5
ROWS = ("base", "archdsl", "torchvision", "torch-pruning")   # per backend; speed-ups pair them as below
PAIRS = {"archdsl": "base", "torch-pruning": "torchvision"}
BACKENDS = CPU_BACKENDS


# ---- counting

def module_macs(module, x) -> int:
    """MACs of one sample through ``module``'s ``Conv2d`` and ``Linear`` layers (the IR's rule: bias free,
    ``out elements x in_channels / groups x kernel area``), counted with forward hooks on input ``x``."""
    import torch
    total = [0]

    def conv(m, inp, out):
        total[0] += out[0].numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear(m, inp, out):
        total[0] += out[0].numel() * m.in_features

    hooks = []
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(linear))
    try:
        with torch.inference_mode():
            module.eval()(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def param_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- the two pruners

def archdsl_pruned(graph, passes: str):
    """``(pruned graph, pass report)``."""
    from ..passes.pipeline import run_pipeline
    res = run_pipeline(graph, passes)
    return res.graph, res.reports[-1]


def _classifier(model):
    import torch
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]


def torch_pruning_model(model, x, target: float = TARGET, tol: float = 0.005, round_to: int | None = None,
                        tries: int = 8) -> tuple:
    """Torch-Pruning's L2 magnitude, per-layer uniform pruning of a copy of ``model`` keeping about ``target``
    of its MACs: ``(pruned model, pruning_ratio, MACs kept, tries)``.

    The ratio is searched: a first guess ``1 - sqrt(target)`` (MACs fall with the square of the widths), then
    the exponent of ``kept = (1 - ratio) ** e`` fitted to the last try, kept inside the bracket found so far.
    """
    import torch_pruning as tp
    base = module_macs(model, x)
    lo, hi = 0.0, 0.95
    ratio = 1.0 - math.sqrt(target)
    best = None
    for n in range(1, tries + 1):
        m = copy.deepcopy(model).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = tp.pruner.MetaPruner(m, x[:1], importance=tp.importance.MagnitudeImportance(p=2),
                                          pruning_ratio=ratio, ignored_layers=[_classifier(m)],
                                          global_pruning=False, round_to=round_to)
            pruner.step()
        kept = module_macs(m, x) / base
        if best is None or abs(kept - target) < abs(best[2] - target):
            best = (m, ratio, kept, n)
        if abs(kept - target) <= tol:
            break
        if kept > target:
            lo = max(lo, ratio)
        else:
            hi = min(hi, ratio)
        e = math.log(kept) / math.log(1.0 - ratio) if 0 < ratio < 1 and 0 < kept < 1 else 2.0
        guess = 1.0 - target ** (1.0 / e) if e > 0 else (lo + hi) / 2
        ratio = guess if lo < guess < hi else (lo + hi) / 2
        del m, pruner
    return best


def torch_onnx(model, x, opset: int) -> tuple:
    """``(ONNX bytes or None, error text)`` of ``torch.onnx.export`` (TorchScript exporter) with a dynamic batch."""
    import torch
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (x[:1],), buf, dynamo=False, opset_version=opset, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    except Exception as err:                # recorded, not raised: the issue asks whether it exports
        return None, f"{type(err).__name__}: {err}"
    return buf.getvalue(), ""


# ---- runners

def ort_runner(model_bytes: bytes, threads: int, label: str):
    """An :class:`~archdsl.bench.runners.OrtRunner` on the CPU (its idle threads do not spin)."""
    from .runners import OrtRunner
    return OrtRunner(model_bytes, "cpu", label, threads)


def _rel_diff(a, b) -> float | None:
    """max|a - b| / max|b| over the first outputs (None when the shapes differ)."""
    import numpy as np
    a, b = a[0].astype(np.float64), b[0].astype(np.float64)
    if a.shape != b.shape:
        return None
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) or 1.0))


# ---- one model

def prepare_model(zoo: Path, file: str, name: str, passes: str, threads: int, target: float = TARGET,
                  tp_round_to: int | None = None, opset: int = 20, stage=None, backends=BACKENDS) -> tuple:
    """``(row, {backend: {key: runner}}, graph, eager)`` for one model, unmeasured: the row holds MACs,
    parameters and widths; ``graph`` is the unpruned IR (for the inputs); ``eager`` the eager runners, the
    reference every backend's outputs are checked against, timed or not."""
    import torch

    from ..api import load
    from ..backends.onnx_export import onnx_bytes
    from ..backends.torch_module import to_torch
    from ..ir.stats import totals
    from .runners import TorchRunner
    from .twins import find_twin
    stage = stage or (lambda text: None)
    stage(f"{name}: load")
    graph = load(zoo / file, name)
    for p in graph.params.values():
        p.value
    twin, note = find_twin(graph)
    if twin is None or not note.startswith("same parameter names"):
        raise RuntimeError(f"{name}: no torchvision twin with the same weights ({note})")
    x = torch.from_numpy(_inputs(graph, 1))
    t0 = totals(graph)
    tv_macs = module_macs(twin, x)
    if tv_macs != t0["macs"]:
        raise RuntimeError(f"{name}: the hook MAC count ({tv_macs:,}) disagrees with the IR's ({t0['macs']:,})")

    stage(f"{name}: archdsl prune")
    pruned, report = archdsl_pruned(graph, passes)
    t1 = totals(pruned)
    stage(f"{name}: torch-pruning")
    row = {"model": name,
           "base": {"macs": t0["macs"], "params": t0["params"]},
           "archdsl": {"passes": passes, "macs": t1["macs"], "params": t1["params"],
                       "macs_ratio": t1["macs"] / t0["macs"], "params_ratio": t1["params"] / t0["params"],
                       "widths": _widths(report)}}
    try:
        tp_model, tp_ratio, tp_kept, tp_tries = torch_pruning_model(twin, x, target, round_to=tp_round_to)
    except Exception as err:  # noqa: BLE001 - the anchor failing is a result (ShuffleNetV2: ZeroDivisionError)
        tp_model = None
        row["torch-pruning"] = {"failed": f"{type(err).__name__}: {err}".strip()}
    else:
        row["torch-pruning"] = {"pruning_ratio": tp_ratio, "round_to": tp_round_to, "tries": tp_tries,
                                "macs": module_macs(tp_model, x), "params": param_count(tp_model),
                                "macs_ratio": tp_kept, "params_ratio": param_count(tp_model) / param_count(twin),
                                "widths": [m.out_channels for m in tp_model.modules()
                                           if isinstance(m, torch.nn.Conv2d)]}

    stage(f"{name}: ONNX")
    onnx = {"base": onnx_bytes(graph, opset), "archdsl": onnx_bytes(pruned, opset)}
    for key, model in (("torchvision", twin), ("torch-pruning", tp_model)):
        if model is None:
            continue
        onnx[key], err = torch_onnx(model, x, opset)
        if onnx[key] is None:
            row.setdefault("skipped", {})[f"{key} onnxruntime"] = f"torch.onnx.export failed: {err}"
    stage(f"{name}: sessions")
    eager = {"base": TorchRunner(to_torch(graph), "cpu", "archdsl", threads),
             "archdsl": TorchRunner(to_torch(pruned), "cpu", "archdsl", threads),
             "torchvision": TorchRunner(twin, "cpu", "torchvision", threads),
             **({"torch-pruning": TorchRunner(tp_model, "cpu", "torch-pruning", threads)} if tp_model else {})}
    ort = {k: ort_runner(b, threads, k) for k, b in onnx.items() if b is not None}
    nhwc = {k: TorchRunner(copy.deepcopy(r.module), "cpu", r.label, threads, channels_last=True)
            for k, r in eager.items()} if "eager channels-last" in backends else {}
    groups = {"eager": eager, "eager channels-last": nhwc, "onnxruntime": ort}
    return row, {be: groups[be] for be in backends}, graph, eager


def _inputs(graph, batch: int, seed: int = 0):
    from .runners import random_inputs
    return random_inputs(graph, batch, seed)[0]


def _widths(report) -> list:
    return [r["channels_after"] for r in report.layers if r.get("op") == "conv"]


def measure(row: dict, runners: dict, graph, batches, warmup: int, runs: int, tick=None, stage=None,
            references: dict | None = None) -> dict:
    """Round-robin latencies of every runner at every batch size; fills ``row['latency']`` and the speed-ups.

    Outputs are checked against the eager runners: those of ``runners``, or where eager is not timed those
    of ``references``, run once untimed."""
    from .timing import interleaved
    lat = row.setdefault("latency", {})
    for batch in batches:
        key = str(batch)
        if stage:
            stage(f"{row['model']}: batch {batch}")
        x = _inputs(graph, batch)
        steps = {}
        for backend, group in runners.items():
            for name, r in group.items():
                r.prepare([x])
                steps[(backend, name)] = r.step
        load0 = loadavg()
        stats = interleaved(steps, warmup, runs, tick)
        outs = {k: runners[k[0]][k[1]].outputs() for k in steps}
        for name, r in (references or {}).items():
            if ("eager", name) not in outs:
                r.prepare([x])
                r.step()
                outs[("eager", name)] = r.outputs()
        for (backend, name), st in stats.items():
            # onnxruntime against the same network eager; torchvision eager against the unpruned IR
            same = ("eager", name) if backend != "eager" else ("eager", "base") if name == "torchvision" else None
            st["max_rel_diff"] = _rel_diff(outs[(backend, name)], outs[same]) if same else None
            lat.setdefault(backend, {}).setdefault(name, {})[key] = st
        row.setdefault("loadavg", {})[key] = [load0, loadavg()]
        # each pruned model against its own unpruned network: the same backend, the same rounds
        for tool, base in PAIRS.items():
            for backend in runners:
                got = lat.get(backend, {})
                if key not in got.get(tool, {}) or key not in got.get(base, {}):
                    continue
                speed = got[base][key]["median_ms"] / got[tool][key]["median_ms"]
                row[tool].setdefault("speedup", {}).setdefault(backend, {})[key] = speed
                row[tool].setdefault("speedup_of_min", {}).setdefault(backend, {})[key] = \
                    got[base][key]["min_ms"] / got[tool][key]["min_ms"]
                row[tool].setdefault("measured_over_ideal", {}).setdefault(backend, {})[key] = \
                    speed * row[tool]["macs_ratio"]
        row.setdefault("base_over_torchvision", {})[key] = {
            backend: lat[backend]["base"][key]["median_ms"] / lat[backend]["torchvision"][key]["median_ms"]
            for backend in runners if "base" in lat[backend] and "torchvision" in lat[backend]}
    return row


def run(zoo: Path = Path("zoo_specs"), models=MODELS, passes: str = PASSES, batches=(1, 8), warmup: int = 2,
        runs: int = 10, threads: int = 2, tp_round_to: int | None = None, progress: bool = True,
        backends=BACKENDS) -> dict:
    """The whole benchmark; plain JSON-able data."""
    passive = passive_waits()
    import torch
    from tqdm import tqdm
    torch.set_num_threads(threads)
    result = {"machine": host_machine(threads, ("torchvision", "torch-pruning")),
              "passes": passes, "target": TARGET, "batches": list(batches), "backends": list(backends),
              "warmup": warmup, "runs": runs, "omp_passive_in_time": passive, "rows": []}
    per_model = 4 + len(batches) * (warmup + runs) * 8
    with tqdm(total=per_model * len(models), desc="bench-prune", unit="step", disable=not progress,
              file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
        def stage(text):
            bar.set_postfix_str(text, refresh=True)
        for file, name in models:
            row, runners, graph, eager = prepare_model(Path(zoo), file, name, passes, threads, TARGET,
                                                       tp_round_to, stage=stage, backends=backends)
            bar.update(4)
            steps = sum(len(g) for g in runners.values())
            bar.total += len(batches) * (warmup + runs) * (steps - 8)
            measure(row, runners, graph, batches, warmup, runs, tick=bar.update, stage=stage, references=eager)
            result["rows"].append(row)
            del runners, graph, eager
            gc.collect()
    result["machine"]["loadavg_end"] = loadavg()
    result["machine"]["date_end"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return result


# ---- report

def _f(v, fmt="{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def format_markdown(res: dict) -> str:
    m = res["machine"]
    b = [str(x) for x in res["batches"]]
    backends = res.get("backends", ("eager", "onnxruntime"))
    lines = [f"{m['cpu']}, {m['cores']} cores, ISA {' '.join(m['isa']) or '-'}; {m['threads']} threads, "
             f"{waits(m)}; torch {m['torch']}, torchvision {m['torchvision']}, "
             f"torch-pruning {m['torch-pruning']}, onnxruntime {m['onnxruntime']}; {m['date']} to {m['date_end']}; "
             f"load average {m['loadavg_start'][0] if m['loadavg_start'] else '-'} -> "
             f"{m['loadavg_end'][0] if m['loadavg_end'] else '-'}; median of {res['runs']} round-robin rounds "
             f"after {res['warmup']}; archdsl: `{res['passes']}`", ""]
    head = (["model", "tool", "MACs ratio", "params ratio"] + [f"{be} speed-up b{x}" for be in backends for x in b]
            + [f"measured/ideal {be} b{x}" for be in backends for x in b])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in res["rows"]:
        for tool in PAIRS:
            t = row[tool]
            if "failed" in t:
                lines.append(f"| {row['model']} | {tool} | fails: {t['failed'][:80]} |" + " |" * (len(head) - 3))
                continue
            sp, mi = t.get("speedup", {}), t.get("measured_over_ideal", {})
            cells = [row["model"], tool, _f(t["macs_ratio"]), _f(t["params_ratio"])]
            cells += [_f(sp.get(be, {}).get(x), "{:.2f}x") for be in backends for x in b]
            cells += [_f(mi.get(be, {}).get(x)) for be in backends for x in b]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "The same, from the fastest round of each row instead of the median (less sensitive to load):", "",
              "| model | tool | " + " | ".join(h for h in head[4:] if h.startswith("measured")) + " |",
              "|" + "---|" * (2 + len(backends) * len(b))]
    for row in res["rows"]:
        for tool in PAIRS:
            t = row[tool]
            if "failed" in t:
                continue
            sp = t.get("speedup_of_min", {})
            cells = [row["model"], tool] + [_f(sp[be][x] * t["macs_ratio"] if x in sp.get(be, {}) else None)
                                             for be in backends for x in b]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| model | batch | backend | archdsl unpruned ms | archdsl ms | torchvision ms | torch-pruning ms "
                 "| A/A | load average |")
    lines.append("|" + "---|" * 9)
    for row in res["rows"]:
        for x in b:
            aa = row.get("base_over_torchvision", {}).get(x, {})
            la = row.get("loadavg", {}).get(x)
            for backend in backends:
                cells = [row["model"], x, backend]
                for key in ROWS:
                    st = row["latency"].get(backend, {}).get(key, {}).get(x)
                    cells.append(_f(st["median_ms"] if st else None, "{:.1f}"))
                cells.append(_f(aa.get(backend)))
                cells.append(f"{la[0][0]:.1f} -> {la[1][0]:.1f}" if la and la[0] and la[1] else "-")
                lines.append("| " + " | ".join(cells) + " |")
    lines.append("\nA/A: the unpruned network twice (archdsl's module or ONNX over torchvision's), timed in the "
                 "same rounds: how far two equal rows drift apart on this machine. In PyTorch eager archdsl's "
                 "modules pool faster than torchvision's (StridedMaxPool2d), so there it reads below 1 where max "
                 "pools weigh.")
    for row in res["rows"]:
        for what, why in row.get("skipped", {}).items():
            lines.append(f"\n{row['model']}: no {what} row: {why}")
    return "\n".join(lines)

if __name__ == "__main__":
    passive_waits()
    from ..cli import main
    sys.exit(main(["bench-prune", *sys.argv[1:]]))
