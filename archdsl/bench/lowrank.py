"""Low-rank factorisation at about 2x fewer MACs, measured: ``lowrank`` against tltorch, side by side.

For each model (VGG-16, AlexNet and ResNet-50 by default, at 224x224, the zoo's
random weights; latency does not depend on the values) the rows are

* ``base``: the dense IR;
* ``lowrank``: ``lowrank{macs=0.5}``, layers and ranks chosen by the roofline cost model;
* ``lowrank-macs``: ``lowrank{macs=0.5,cost=macs}``, the same allocation by MACs alone;
* ``uniform``: the straightforward factorisation, every conv but the first (``tucker2`` for
  KxK, ``svd`` for 1x1 convs) at one ``ratio``, searched so that the model keeps 0.5 of its MACs;
* ``torchvision``: torchvision's twin of the model with the same weights (dense), the base of
* ``tltorch``: that twin with every conv but the first replaced by tltorch's
  ``FactorizedConv.from_conv`` with its defaults (``factorization='CP'``,
  ``implementation='reconstructed'``) at ``rank=0.5`` (half the parameters); it rebuilds the full
  kernel at every call and runs the dense conv, so its MACs are the dense ones (plus the
  rebuild). ``decompose_weights=False``: the CP fit of every VGG-16 layer takes minutes and does
  not change the speed.

Each runs in PyTorch eager (``archdsl.to_torch`` for the IR rows) and in onnxruntime (archdsl's
ONNX; for torchvision and tltorch ``torch.onnx.export``, TorchScript exporter, recorded when it
fails). Every latency of one model and batch size is measured
round-robin in one process (``timing.interleaved``), so a change in machine load falls on every
row alike; speed-ups are ratios of medians against ``base`` on the same backend, ideal is the
MAC ratio, "measured / ideal" their quotient. PyTorch and onnxruntime use ``threads`` threads and
wait passively (``OMP_WAIT_POLICY=PASSIVE``, set before torch is imported unless the caller set
it; onnxruntime's ``session.intra_op.allow_spinning=0``).

``--layers`` measures the single layers behind the choice instead: each distinct VGG-16 conv
shape dense, as Tucker-2 at half its channels, at ``ceil(0.6 C)`` (odd ranks) and the same
rounded to 16, and with the input mode folded (two layers), against the cost model's prediction.

tltorch (``pip install archdsl[bench]``, import name ``tltorch``) is imported only here.
Run as ``python -m archdsl.bench.lowrank``.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import io
import json
import math
import sys
import warnings
from pathlib import Path
from .host import loadavg, passive_waits  # noqa: F401  (re-exported for the CLI)
from .host import machine as host_machine, waits
from ..diagnostics import ArchError
from .runners import CPU_BACKENDS, TorchRunner, cpu_backends

MODELS = (("vgg.arch", "vgg16"), ("alexnet.arch", "alexnet"), ("resnet.arch", "resnet50"))
TARGET = 0.5
ROWS = ("base", "lowrank", "lowrank-macs", "uniform", "torchvision", "tltorch")
BACKENDS = CPU_BACKENDS
BASE_OF = {"tltorch": "torchvision"}          # each row's speed-up is against this row (default: base)
ZOO = Path(__file__).resolve().parents[2] / "zoo_specs"


# ---- the variants

def lowrank_passes(target: float = TARGET) -> dict:
    return {"lowrank": f"lowrank{{macs={target:g}}}", "lowrank-macs": f"lowrank{{macs={target:g},cost=macs}}"}


def _first_conv(graph) -> str:
    return next(n.scope for n in graph.nodes() if n.op == "conv")


def uniform_macs(graph, ratio: float, skip: str) -> int:
    """MACs of the model with every ungrouped conv but ``skip`` factorised at ``ratio`` (shapes only)."""
    import numpy as np

    from ..ir import ops
    from ..passes.lowrank import Layer, Plan, plan_macs
    total = 0
    for n in graph.nodes():
        if n.op == "input":
            continue
        ins = [graph.data(i)["shape"] for i in n.inputs]
        m0 = ops.macs(n.op, n.attrs, ins, n.shape)
        if n.op != "conv" or n.scope == skip or n.attrs["groups"] != 1:
            total += m0
            continue
        shape = n.param("weight").shape
        lay = Layer(n.id, n.scope, n.op, dict(n.attrs), tuple(ins[0]), tuple(n.shape),
                    np.broadcast_to(np.float64(0), shape), None)
        nn, c, k = shape[0], shape[1], shape[2] * shape[3]
        if lay.pointwise:
            plan = Plan("svd", (math.ceil(ratio * min(nn, c) - 1e-9),))
        else:
            plan = Plan("tucker2", (min(math.ceil(ratio * nn - 1e-9), c * k), min(math.ceil(ratio * c - 1e-9), nn * k)))
        total += min(m0, plan_macs(lay, plan))
    return total


def uniform_passes(graph, target: float = TARGET) -> tuple[str, float]:
    """``(pipeline, ratio)``: the straightforward factorisation at the ratio keeping ``target`` of the MACs."""
    from ..ir.stats import totals
    base = totals(graph)["macs"]
    skip = _first_conv(graph)
    lo, hi = 0.01, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if uniform_macs(graph, mid, skip) > target * base:
            hi = mid
        else:
            lo = mid
    ratio = round(lo, 4)
    keep = ",".join([skip] + [n.scope for n in graph.nodes() if n.op == "linear"])
    return f'lowrank{{ratio={ratio:g},min_gain=1.0,keep="{keep}"}}', ratio


def tltorch_model(module, skip: str, rank: float = 0.5):
    """``module`` (an ordinary ``nn.Module`` that calls its children, such as a torchvision model) with every
    ungrouped conv but ``skip`` replaced by tltorch's default ``FactorizedConv.from_conv``. (Not an
    ``archdsl.to_torch`` module: that one runs a program of the modules it was built with.)"""
    import torch
    import tltorch
    for name, conv in list(module.named_modules()):
        if not isinstance(conv, torch.nn.Conv2d) or name == skip or conv.groups != 1:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            new = tltorch.FactorizedConv.from_conv(conv, rank=rank, decompose_weights=False)
        parent, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, leaf, new)
    return module.eval()


def torch_onnx(model, x, opset: int = 17) -> tuple:
    """``(ONNX bytes or None, error text)`` of ``torch.onnx.export`` (TorchScript exporter), dynamic batch."""
    import torch
    buf = io.BytesIO()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with warnings.catch_warnings(), torch.no_grad():      # tltorch's kernel rebuild traces only without grad
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (x,), buf, dynamo=False, opset_version=opset, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    except Exception as err:                  # recorded, not raised
        return None, f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return buf.getvalue(), ""


def ort_session(model_bytes: bytes, threads: int):
    from .runners import quiet_session
    return quiet_session(model_bytes, threads)


def _ort_step(sess, x):
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: x})


def _eager_step(runner: TorchRunner, x):
    """``runner``'s forward pass on ``x``, as a step that returns the output."""
    runner.prepare([x])
    return runner.step


# ---- one model

def prepare(zoo: Path, file: str, name: str, target: float, threads: int, tltorch: bool, stage) -> tuple:
    """``(row, {row key: (graph or None, torch module, onnx bytes or None)})``, unmeasured."""
    import time

    from ..api import load
    from ..backends.onnx_export import onnx_bytes
    from ..backends.torch_module import to_torch
    from ..ir.stats import totals
    from ..passes.pipeline import run_pipeline
    stage(f"{name}: load")
    graph = load(zoo / file, name)
    for p in graph.params.values():
        p.value
    base = totals(graph)
    row = {"model": name, "macs": base["macs"], "params": base["params"], "variants": {}}
    passes = lowrank_passes(target)
    passes["uniform"], ratio = uniform_passes(graph, target)
    variants = {"base": (graph, None)}
    for key, text in passes.items():
        stage(f"{name}: {key}")
        t0 = time.perf_counter()
        res = run_pipeline(graph, text)
        spent = time.perf_counter() - t0
        rep = res.reports[-1]
        t = totals(res.graph)
        variants[key] = (res.graph, rep)
        row["variants"][key] = {
            "passes": text, "pass_s": round(spent, 1), "macs_ratio": t["macs"] / base["macs"],
            "params_ratio": t["params"] / base["params"],
            "layers": [{k: v for k, v in r.items() if k in ("layer", "method", "ranks", "macs_before", "macs_after",
                                                             "rel_error", "modelled_ms_before", "modelled_ms_after")}
                       for r in rep.layers],
            "dense": [r.node for r in rep.refused]}
    row["variants"]["uniform"]["ratio"] = ratio
    out = {}
    x1 = _inputs(graph, 1)
    for key, (g, _) in variants.items():
        stage(f"{name}: build {key}")
        out[key] = (g, to_torch(g).eval(), onnx_bytes(g))
    if tltorch:
        import copy

        import torch

        from .twins import find_twin
        stage(f"{name}: tltorch")
        twin, note = find_twin(graph)
        if twin is None or not note.startswith("same parameter names"):
            row.setdefault("skipped", {})["tltorch"] = f"no torchvision twin with the same weights ({note})"
        else:
            tl = tltorch_model(copy.deepcopy(twin), _first_conv(graph))
            tl_params = sum(p.numel() for p in tl.parameters())
            row["variants"]["torchvision"] = {"passes": "torchvision twin, dense", "macs_ratio": 1.0,
                                              "params_ratio": 1.0}
            row["variants"]["tltorch"] = {
                "passes": "tltorch.FactorizedConv.from_conv(conv, rank=0.5) (CP, reconstructed) in the twin",
                "macs_ratio": 1.0, "params_ratio": tl_params / base["params"]}
            for key, module in (("torchvision", twin.eval()), ("tltorch", tl)):
                data, err = torch_onnx(module, torch.from_numpy(x1))
                out[key] = (None, module, data)
                if data is None:
                    row.setdefault("skipped", {})[f"{key} onnxruntime"] = f"torch.onnx.export failed: {err}"
    return row, out


def _inputs(graph, batch: int, seed: int = 0):
    from .runners import random_inputs
    return random_inputs(graph, batch, seed)[0]


def measure(row: dict, built: dict, graph, batches, warmup: int, runs: int, threads: int, stage, tick=None,
            backends=BACKENDS) -> dict:
    """Round-robin latencies of every variant on every backend at every batch; fills speed-ups."""
    import copy

    import numpy as np

    from .timing import interleaved
    sessions = {k: ort_session(b, threads) for k, (_, _, b) in built.items() if b is not None} \
        if "onnxruntime" in backends else {}
    nchw = {k: TorchRunner(m, label=k) for k, (_, m, _) in built.items()}
    nhwc = {k: TorchRunner(copy.deepcopy(m), label=k, channels_last=True) for k, (_, m, _) in built.items()} \
        if "eager channels-last" in backends else {}
    lat = row.setdefault("latency", {})
    for batch in batches:
        stage(f"{row['model']}: batch {batch}")
        x = _inputs(graph, batch)
        steps = {}
        eager = {key: _eager_step(nchw[key], x) for key in built}
        for key in built:
            if "eager" in backends:
                steps[("eager", key)] = eager[key]
            if key in nhwc:
                steps[("eager channels-last", key)] = _eager_step(nhwc[key], x)
            if key in sessions:
                steps[("onnxruntime", key)] = _ort_step(sessions[key], x)
        load0 = loadavg()
        stats = interleaved(steps, warmup, runs, tick)
        # the backends agree on each variant's output (eager NCHW the reference, run untimed if not timed)
        ref = {}
        for (backend, key), step in [*steps.items(), *((("eager", k), f) for k, f in eager.items()
                                                       if ("eager", k) not in steps)]:
            out = step()
            out = out[0] if isinstance(out, list) else out.contiguous().numpy()
            ref.setdefault(key, {})[backend] = out
        for (backend, key), st in stats.items():
            other = ref[key].get("eager")
            st["max_abs_diff_vs_eager"] = (None if backend == "eager" else
                                           float(np.max(np.abs(ref[key][backend] - other))))
            lat.setdefault(backend, {}).setdefault(key, {})[str(batch)] = st
        row.setdefault("loadavg", {})[str(batch)] = [load0, loadavg()]
        for backend in backends:
            got = lat.get(backend, {})
            for key in built:
                ref_key = BASE_OF.get(key, "base")
                if key in ("base", "torchvision") or key not in got or ref_key not in got:
                    continue
                speed = got[ref_key][str(batch)]["median_ms"] / got[key][str(batch)]["median_ms"]
                v = row["variants"][key]
                v.setdefault("speedup", {}).setdefault(backend, {})[str(batch)] = speed
                v.setdefault("speedup_of_min", {}).setdefault(backend, {})[str(batch)] = (
                    got[ref_key][str(batch)]["min_ms"] / got[key][str(batch)]["min_ms"])
                v.setdefault("measured_over_ideal", {}).setdefault(backend, {})[str(batch)] = speed * v["macs_ratio"]
    return row


def run(zoo: Path = ZOO, models=MODELS, target: float = TARGET, batches=(1, 8), warmup: int = 2, runs: int = 10,
        threads: int = 2, tltorch: bool = True, progress: bool = True, backends=BACKENDS) -> dict:
    passive = passive_waits()
    import torch
    from tqdm import tqdm
    torch.set_num_threads(threads)
    result = {"machine": host_machine(threads, ("tensorly", "tensorly-torch")),
              "target": target, "batches": list(batches), "warmup": warmup, "backends": list(backends),
              "runs": runs, "omp_passive_in_time": passive, "rows": []}
    with tqdm(total=len(models) * len(batches) * (warmup + runs) * len(ROWS) * len(backends), desc="bench-lowrank",
              unit="step", disable=not progress, file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
        def stage(text):
            bar.set_postfix_str(text, refresh=True)
        for file, name in models:
            row, built = prepare(Path(zoo), file, name, target, threads, tltorch, stage)
            measure(row, built, built["base"][0], batches, warmup, runs, threads, stage, bar.update, backends)
            result["rows"].append(row)
            del built
            gc.collect()
    result["machine"]["loadavg_end"] = loadavg()
    result["machine"]["date_end"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return result


# ---- single layers

def layer_variants(c: int, n: int):
    """``{label: [(op attrs, ...)]}``: a VGG conv ``c -> n`` dense and factorised in the ways compared."""
    half_in, half_out = c // 2, n // 2
    odd_in, odd_out = math.ceil(0.6 * c), math.ceil(0.6 * n)
    r16 = lambda r: 16 * math.ceil(r / 16)              # noqa: E731
    return {"dense": [(c, n, 3)],
            "tucker2 C/2": [(c, half_in, 1), (half_in, half_out, 3), (half_out, n, 1)],
            "tucker2 ceil(0.6C)": [(c, odd_in, 1), (odd_in, odd_out, 3), (odd_out, n, 1)],
            "tucker2 0.6C to 16": [(c, r16(odd_in), 1), (r16(odd_in), r16(odd_out), 3), (r16(odd_out), n, 1)],
            "folded input, r_out N/2": [(c, half_out, 3), (half_out, n, 1)]}


def run_layers(batches=(1, 8), warmup: int = 1, runs: int = 5, threads: int = 2, progress: bool = True) -> dict:
    passive_waits()
    import numpy as np
    import torch
    from tqdm import tqdm

    from ..passes.lowrank import ROOFLINE
    from .timing import interleaved
    torch.set_num_threads(threads)
    shapes = [(64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56), (256, 256, 56), (256, 512, 28),
              (512, 512, 28), (512, 512, 14)]
    out = {"machine": host_machine(threads, ("tensorly", "tensorly-torch")), "batches": list(batches), "runs": runs,
           "rows": []}
    total = len(shapes) * len(batches) * (warmup + runs) * 10
    with tqdm(total=total, desc="bench-lowrank --layers", disable=not progress, file=sys.stderr, leave=False) as bar:
        for c, n, h in shapes:
            for batch in batches:
                x = np.random.default_rng(0).standard_normal((batch, c, h, h), dtype=np.float32)
                steps, model = {}, {}
                for label, convs in layer_variants(c, n).items():
                    mods, t, macs = [], 0.0, 0
                    for ci, co, k in convs:
                        mods.append(torch.nn.Conv2d(ci, co, k, padding=k // 2, bias=False))
                        attrs = {"out_channels": co, "kernel_size": (k, k), "stride": (1, 1), "padding": (k // 2,) * 2,
                                 "dilation": (1, 1), "groups": 1}
                        shape_in, shape_out = ("N", ci, h, h), ("N", co, h, h)
                        t += ROOFLINE.node_time("conv", attrs, shape_in, shape_out, ci * co * k * k, batch)
                        macs += ci * co * k * k * h * h
                    module = torch.nn.Sequential(*mods).eval()
                    model[label] = (t, macs)
                    steps[("eager", label)] = _eager_step(TorchRunner(module, label=label), x)
                    data, _ = torch_onnx(module, torch.from_numpy(x[:1]))
                    steps[("onnxruntime", label)] = _ort_step(ort_session(data, threads), x)
                stats = interleaved(steps, warmup, runs, bar.update)
                for label, (t, macs) in model.items():
                    row = {"conv": f"{c}->{n} @{h}", "batch": batch, "variant": label,
                           "macs_ratio": macs / model["dense"][1], "modelled_speedup": model["dense"][0] / t}
                    for backend in ("eager", "onnxruntime"):
                        row[f"{backend}_ms"] = stats[(backend, label)]["median_ms"]
                        row[f"{backend}_speedup"] = (stats[(backend, "dense")]["median_ms"]
                                                     / stats[(backend, label)]["median_ms"])
                    out["rows"].append(row)
    out["machine"]["loadavg_end"] = loadavg()
    return out


# ---- report

def _f(v, fmt="{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def _head(m: dict, extra: str) -> str:
    return (f"{m['cpu']}, {m['cores']} cores, ISA {' '.join(m['isa']) or '-'}; {m['threads']} threads, "
            f"{waits(m)}; torch {m['torch']}, onnxruntime {m['onnxruntime']}, "
            f"tensorly {m['tensorly']}, tensorly-torch {m['tensorly-torch']}; {m['date']}"
            f"{' to ' + m['date_end'] if 'date_end' in m else ''}; load average "
            f"{m['loadavg_start'][0] if m['loadavg_start'] else '-'} -> "
            f"{m['loadavg_end'][0] if m.get('loadavg_end') else '-'}; {extra}")


def format_markdown(res: dict) -> str:
    b = [str(x) for x in res["batches"]]
    backends = res.get("backends", ("eager", "onnxruntime"))
    lines = [_head(res["machine"], f"median of {res['runs']} round-robin rounds after {res['warmup']}"), ""]
    head = (["model", "variant", "MACs ratio", "params ratio"] + [f"{be} b{x}" for be in backends for x in b]
            + [f"measured/ideal {be} b{x}" for be in backends for x in b])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in res["rows"]:
        for key, v in row["variants"].items():
            sp, mi = v.get("speedup", {}), v.get("measured_over_ideal", {})
            cells = [row["model"], key, _f(v["macs_ratio"]), _f(v.get("params_ratio"))]
            cells += [_f(sp.get(be, {}).get(x), "{:.2f}x") for be in backends for x in b]
            cells += [_f(mi.get(be, {}).get(x)) for be in backends for x in b]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "The same speed-ups from each row's fastest run (less sensitive to other jobs' bursts):", "",
              "| model | variant | " + " | ".join(f"{be} b{x}" for be in backends for x in b) + " |",
              "|" + "---|" * (2 + len(backends) * len(b))]
    for row in res["rows"]:
        for key, v in row["variants"].items():
            sp = v.get("speedup_of_min", {})
            lines.append("| " + " | ".join([row["model"], key]
                                           + [_f(sp.get(be, {}).get(x), "{:.2f}x")
                                              for be in backends for x in b]) + " |")
    lines += ["", "| model | batch | backend | " + " | ".join(f"{k} ms" for k in ROWS) + " | load average |",
              "|" + "---|" * (len(ROWS) + 4)]
    for row in res["rows"]:
        for x in b:
            for backend in backends:
                cells = [row["model"], x, backend]
                for key in ROWS:
                    st = row.get("latency", {}).get(backend, {}).get(key, {}).get(x)
                    cells.append(_f(st["median_ms"] if st else None, "{:.1f}"))
                la = row.get("loadavg", {}).get(x)
                cells.append(f"{la[0][0]:.1f} -> {la[1][0]:.1f}" if la and la[0] and la[1] else "-")
                lines.append("| " + " | ".join(cells) + " |")
    for row in res["rows"]:
        for key, v in row["variants"].items():
            if key in ("lowrank", "lowrank-macs", "uniform"):
                lines.append(f"\n{row['model']} {key} (`{v['passes']}`, {v.get('pass_s', '-')} s): " + ", ".join(
                    f"{r['layer']} {r['method']} {r['ranks']}" for r in v["layers"]) + "; dense: "
                    + (", ".join(v["dense"]) or "none"))
        for what, why in row.get("skipped", {}).items():
            lines.append(f"\n{row['model']}: no {what} row: {why}")
    return "\n".join(lines)


PLOTTED = {"lowrank": "lowrank{{macs={t:g}}}", "lowrank-macs": "lowrank{{macs={t:g},cost=macs}}",
           "uniform": "uniform Tucker-2 (every conv but the first)", "tltorch": "tltorch FactorizedConv (CP)"}
GOAL = 1.6             # issue 11: VGG-16 at least this much faster at 2x fewer MACs


def plot(res: dict, path) -> None:
    """Speed-ups as bars: one panel per model, a group per backend and batch size, a bar per variant;
    the dashed line is the ideal (the MAC ratio of ``lowrank``), the dotted one the goal. PNG or SVG by
    the suffix; deterministic (no date, a fixed SVG id salt)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matplotlib.rcParams["svg.hashsalt"] = "archdsl"
    backends = res.get("backends", ("eager", "onnxruntime"))
    groups = [(be, str(x)) for be in backends for x in res["batches"]]
    rows = res["rows"]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10.0, 2.8 * len(rows) + 0.6), dpi=110, squeeze=False)
    target = res.get("target", TARGET)
    colors = plt.get_cmap("tab10")
    width = 0.8 / len(PLOTTED)
    for ax, row in zip(axes[:, 0], rows):
        for j, key in enumerate(PLOTTED):
            v = row["variants"].get(key)
            if v is None:
                continue
            heights = [v.get("speedup", {}).get(be, {}).get(x, float("nan")) for be, x in groups]
            ax.bar([i + (j - (len(PLOTTED) - 1) / 2) * width for i in range(len(groups))], heights, width,
                   color=colors(j), label=PLOTTED[key].format(t=target))
        ideal = 1 / row["variants"]["lowrank"]["macs_ratio"]
        ax.axhline(ideal, ls="--", color="0.3", lw=1, label=f"ideal ({ideal:.2f}x: the MAC ratio)")
        ax.axhline(1.0, color="0.6", lw=0.8)
        if row["model"] == "vgg16":
            ax.axhline(GOAL, ls=":", color="crimson", lw=1.2, label=f"goal for VGG-16 ({GOAL}x)")
        ax.set_xticks(range(len(groups)), [be.replace(" ", "\n") + f"\nbatch {x}" for be, x in groups], fontsize=8)
        ax.set_ylabel("speed-up (x)")
        ax.set_title(f"{row['model']}: low-rank at {target:g} of the MACs, against the dense "
                     "model on the same backend", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    suffix = str(path).rsplit(".", 1)[-1].lower()
    fig.savefig(path, bbox_inches="tight", metadata={"Date": None} if suffix == "svg" else {"Software": None})
    plt.close(fig)


def format_layers(res: dict) -> str:
    lines = [_head(res["machine"], f"median of {res['runs']} round-robin rounds"), "",
             "| conv | batch | variant | MACs ratio | modelled speed-up | eager speed-up | onnxruntime speed-up "
             "| eager ms | onnxruntime ms |", "|" + "---|" * 9]
    for r in res["rows"]:
        lines.append(f"| {r['conv']} | {r['batch']} | {r['variant']} | {r['macs_ratio']:.2f} | "
                     f"{r['modelled_speedup']:.2f}x | {r['eager_speedup']:.2f}x | {r['onnxruntime_speedup']:.2f}x | "
                     f"{r['eager_ms']:.1f} | {r['onnxruntime_ms']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from ..cli.common import add_spin_arg
    p = argparse.ArgumentParser(prog="python -m archdsl.bench.lowrank", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(m for _, m in MODELS),
                   help="comma-separated zoo models (vgg16, alexnet, resnet50) or FILE.arch:MODEL")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target", type=float, default=TARGET, help="fraction of the MACs kept")
    p.add_argument("--no-tltorch", action="store_true", help="leave out the tltorch row")
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, of {', '.join(BACKENDS)}")
    p.add_argument("--layers", action="store_true", help="single VGG-16 layers against the cost model instead")
    p.add_argument("--json", action="store_true", help="print the raw results as JSON")
    p.add_argument("-o", "--output", help="also write the JSON here")
    p.add_argument("--plot", help="also draw the speed-ups (FILE.svg or FILE.png)")
    p.add_argument("--from-json", help="report (and --plot) a saved JSON instead of measuring")
    p.add_argument("--no-progress", action="store_true")
    add_spin_arg(p)
    args = p.parse_args(argv)
    passive_waits(args.spin)
    batches = tuple(int(s) for s in args.batches.split(","))
    known = {name: file for file, name in MODELS}
    models = []
    for item in (s.strip() for s in args.models.split(",") if s.strip()):
        file, sep, name = item.partition(":")
        models.append((file, name) if sep else (known.get(item, f"{item}.arch"), item))
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
        text = format_markdown(res)
    elif args.layers:
        res = run_layers(batches, max(1, args.warmup // 2), args.runs, args.threads, not args.no_progress)
        text = format_layers(res)
    else:
        try:
            backends = cpu_backends(args.backends)
        except ArchError as err:
            p.error(err.message)
        res = run(ZOO, tuple(models), args.target, batches, args.warmup, args.runs, args.threads,
                  not args.no_tltorch, not args.no_progress, backends)
        text = format_markdown(res)
    if args.output:
        Path(args.output).write_text(json.dumps(res, indent=1))
    if args.plot and not args.layers:
        plot(res, args.plot)
    print(json.dumps(res, indent=1) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
