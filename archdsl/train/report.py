"""``archc compress-report``: accuracy beside every compression result, over a grid of pass pipelines.

For the trained model (the **baseline**) and for each point of the grid, the
report applies the point's passes to the baseline's IR, measures accuracy on
the validation split, optionally fine-tunes for some epochs on the training
split and measures again, and records the parameters and MACs (the convention
of ``archc stats``), the ONNX file's size and onnxruntime's CPU latency (all
points timed together at the end, round-robin, so that load changes fall on all).
Accuracy is measured on archdsl's ONNX in onnxruntime, so every model is
evaluated as it will be deployed. It writes ``report.md`` and ``report.json``
and Pareto plots of accuracy against latency, ONNX size and MACs
(``accuracy-latency``, ``accuracy-size``, ``accuracy-macs``, each PNG and SVG),
one series per pass family.

The grid is TOML::

    [finetune]                 # fine-tuning after the passes (options of archc train); epochs = 0: none
    epochs = 2
    lr = 0.01

    [measure]                  # latency: onnxruntime on the CPU
    batch = 1
    runs = 20
    warmup = 3
    threads = 1

    [[point]]                  # one pipeline
    passes = "prune{macs=0.5}"
    name = "prune 0.5"         # optional: default the pipeline
    family = "prune"           # optional: default the pass names joined by '+'
    finetune = 3               # optional: this point's epochs

    after = "quantize"         # optional: passes run after fine-tuning (post-training quantisation)

    [[sweep]]                  # one point per value, $x replaced by it
    family = "prune"
    passes = "prune{macs=$x}"
    values = [0.75, 0.5, 0.25]
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import cpu
from ..diagnostics import ArchError, Span, did_you_mean

FINETUNE_KEYS = {"epochs": int, "lr": float, "batch_size": int, "optimizer": str, "schedule": str, "warmup": float,
                 "weight_decay": float, "momentum": float, "label_smoothing": float}
MEASURE_KEYS = {"batch": int, "runs": int, "warmup": int, "threads": int}
POINT_KEYS = {"passes": str, "name": str, "family": str, "finetune": int, "after": str}
SWEEP_KEYS = {"passes": str, "values": list, "family": str, "name": str, "finetune": int, "after": str}
TOP_KEYS = {"finetune": dict, "measure": dict, "point": list, "sweep": list}
PLOTS = (("latency_ms", "latency (ms, onnxruntime CPU, batch {batch})", "accuracy-latency"),
         ("onnx_mb", "ONNX file size (MB)", "accuracy-size"),
         ("macs_m", "MACs per sample (millions)", "accuracy-macs"))


@dataclass
class Point:
    name: str
    passes: str
    family: str
    finetune: int | None = None
    after: str = ""                 # passes run after fine-tuning (post-training quantisation)

    @property
    def pipelines(self) -> list:
        return [s for s in (self.passes, self.after) if s]


@dataclass
class Grid:
    path: str
    points: list
    finetune: dict = field(default_factory=dict)
    measure: dict = field(default_factory=lambda: {"batch": 1, "runs": 20, "warmup": 3, "threads": 1})


def _err(path, message: str) -> ArchError:
    return ArchError(message, Span.of_file(path))


def _check_keys(path, table: dict, allowed: dict, where: str) -> None:
    for key, value in table.items():
        if key not in allowed:
            raise _err(path, f"{where[0].upper() + where[1:]} has no key '{key}'{did_you_mean(key, allowed) or '.'} "
                             f"Its keys are "
                             f"{', '.join(allowed)}.")
        want = allowed[key]
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise _err(path, f"The key '{key}' of {where} must be {_kind(want)}, but it is {value!r}.")


def _kind(t) -> str:
    return {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}[t]


def _family(passes: str) -> str:
    names = re.findall(r"(?:^|,)\s*([A-Za-z0-9_.+-]+)", re.sub(r"\{[^}]*\}", "", passes))
    return "+".join(names) or "baseline"


def _value_text(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def load_grid(path) -> Grid:
    """The grid of a TOML file; ArchError ``FILE: error: ...`` (or at the line) for every problem."""
    path = Path(path)
    if path.is_dir():
        raise _err(path, "Cannot read the grid: this is a directory; give the grid's .toml file.")
    if not path.is_file():
        raise _err(path, "Cannot read the grid: there is no such file.")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        import tomllib                              # Python 3.11+
    except ImportError:                             # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ArchError("Reading the grid needs Python 3.11 (tomllib) or the package tomli; install tomli.") \
                from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
        if m:
            line, col = int(m.group(1)), int(m.group(2))
            raise ArchError(f"The grid is not valid TOML: {reason}.", Span(str(path), line, col, line, col + 1),
                            sources={str(path): text}) from None
        raise _err(path, f"The grid is not valid TOML: {reason}.") from None
    _check_keys(path, data, TOP_KEYS, "the grid")
    finetune = data.get("finetune", {})
    _check_keys(path, finetune, FINETUNE_KEYS, "[finetune]")
    _check_finetune(path, finetune)
    measure = {"batch": 1, "runs": 20, "warmup": 3, "threads": 1, **data.get("measure", {})}
    _check_keys(path, measure, MEASURE_KEYS, "[measure]")
    for k in ("batch", "runs", "threads"):
        if measure[k] < 1:
            raise _err(path, f"The key '{k}' of [measure] must be at least 1, but it is {measure[k]}.")
    if measure["threads"] > cpu.MAX_THREADS:
        raise _err(path, f"The key 'threads' of [measure] must be at most {cpu.MAX_THREADS}, but it is "
                         f"{measure['threads']}.")
    points = []
    for i, p in enumerate(data.get("point", [])):
        where = f"[[point]] {i + 1}"
        if not isinstance(p, dict):
            raise _err(path, f"{where} must be a table.")
        _check_keys(path, p, POINT_KEYS, where)
        if "passes" not in p:
            raise _err(path, f"{where} has no 'passes'; give its pipeline, e.g. passes = \"prune{{macs=0.5}}\".")
        after = p.get("after", "")
        full = ",".join(s for s in (p["passes"], after) if s)
        if not full.strip():
            raise _err(path, f"The passes of {where} are empty; give a pipeline in passes (or in after).")
        if p.get("finetune") is not None and p["finetune"] < 0:
            raise _err(path, f"The key 'finetune' of {where} (its fine-tuning epochs) cannot be negative, but it is "
                             f"{p['finetune']}.")
        points.append(Point(p.get("name", full), p["passes"], p.get("family", _family(full)), p.get("finetune"),
                            after))
    for i, s in enumerate(data.get("sweep", [])):
        where = f"[[sweep]] {i + 1}"
        _check_keys(path, s, SWEEP_KEYS, where)
        for key in ("passes", "values"):
            if key not in s:
                raise _err(path, f"{where} has no '{key}'; a sweep needs passes = \"prune{{macs=$x}}\" and "
                                 "values = [...].")
        if "$x" not in s["passes"]:
            raise _err(path, f"The passes of {where} do not mention $x, which each value replaces.")
        for v in s["values"]:
            text_v = _value_text(v)
            passes = s["passes"].replace("$x", text_v)
            after = s.get("after", "").replace("$x", text_v)
            full = ",".join(q for q in (passes, after) if q)
            name = s["name"].replace("$x", text_v) if "name" in s else full
            points.append(Point(name, passes, s.get("family", _family(full)), s.get("finetune"), after))
    if not points:
        raise _err(path, "The grid has no points; add [[point]] tables with passes = \"...\" or a [[sweep]].")
    names = [p.name for p in points]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _err(path, f"Two points of the grid are both named '{dup[0]}'; give them different names.")
    return Grid(str(path), points, finetune, measure)


def check_points(grid: Grid, skip_unavailable: bool = False) -> tuple:
    """``(runnable points, skipped [(point, reason)])``: each pipeline is parsed before any work starts."""
    from ..passes.base import registry
    from ..passes.pipeline import parse_pipeline
    known = registry()
    ok, skipped = [], []
    for p in grid.points:
        try:
            for text in p.pipelines:
                parse_pipeline(text)
        except ArchError as err:
            missing = [n for text in p.pipelines for n in _family(text).split("+") if n not in known]
            if skip_unavailable and missing:
                skipped.append((p, f"the pass '{missing[0]}' is not available in this archdsl"))
                continue
            fix = " (--skip-unavailable skips such points)" if missing else ""
            raise err.with_note(f"in the point '{p.name}' of the grid{fix}", Span.of_file(grid.path)) from None
        ok.append(p)
    return ok, skipped


# ---- measuring ------------------------------------------------------------------------------

def machine() -> dict:
    """The CPU's model name and vector extensions, the core count, library versions and the date."""
    import numpy as np
    import onnxruntime
    import torch
    return {"cpu": cpu.model_name(), "extensions": cpu.isa(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}


def measure(graph, data, cfg: dict, keep: list | None = None) -> dict:
    """Parameters, MACs, ONNX size and onnxruntime's accuracy on the validation split.

    With ``keep`` (a list), the session and a batch of ``cfg["batch"]`` samples are appended
    to it, for :func:`latencies`."""
    import numpy as np
    from ..backends.onnx_export import onnx_bytes
    from ..cli.eval import ort_predictor, ort_session
    from ..ir.stats import totals
    from .loop import evaluate
    t = totals(graph)
    model = onnx_bytes(graph)
    session = ort_session(model, "cpu", cfg["threads"])
    m = evaluate(ort_predictor(session), data.val, 256)
    if keep is not None:
        x = np.ascontiguousarray(np.repeat(data.val.arrays(1)[0], cfg["batch"], axis=0))
        keep.append((session, x))
    return {"params": t["params"], "macs": t["macs"], "onnx_bytes": len(model), "top1": m["top1"],
            "top5": m["top5"], "loss": m["loss"]}


def latencies(sessions: list, cfg: dict, progress: bool = False) -> list:
    """onnxruntime latency of each ``(session, x)``, timed round-robin (``bench.timing.interleaved``) so that
    a change in the machine's load falls on every model alike: ``[(median_ms, p90_ms)]``."""
    from tqdm import tqdm
    from ..bench.timing import interleaved
    steps = {}
    for i, (session, x) in enumerate(sessions):
        name = session.get_inputs()[0].name
        steps[i] = (lambda s, feed: (lambda: s.run(None, feed)))(session, {name: x})
    total = len(steps) * (cfg["warmup"] + cfg["runs"])
    with tqdm(total=total, desc="latency", leave=False, dynamic_ncols=True, file=sys.stderr,
              disable=not progress) as bar:
        stats = interleaved(steps, cfg["warmup"], cfg["runs"], tick=lambda: bar.update(1))
    return [(stats[i]["median_ms"], stats[i]["p90_ms"]) for i in range(len(sessions))]


def _check_finetune(path: Path, finetune: dict) -> None:
    """The [finetune] values as ``archc train`` checks its options, worded by the grid's keys."""
    from .loop import TrainConfig
    try:
        TrainConfig(**{"epochs": 0, **finetune}).checked()          # compress-report's defaults
    except ArchError as err:
        message = err.message
        for key in FINETUNE_KEYS:
            message = message.replace(f"--{key.replace('_', '-')}", f"the key '{key}' of [finetune]")
        raise _err(path, message[0].upper() + message[1:]) from None


def model_stem(name: str, taken: set) -> str:
    """A file name (without suffix) for the point ``name`` under models/: letters, digits, ``_ . -`` only,
    never hidden or empty, and not one of ``taken`` (which it joins), so no point overwrites another."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-") or "point"
    unique, k = stem, 2
    while unique.lower() in taken:
        unique, k = f"{stem}-{k}", k + 1
    taken.add(unique.lower())
    return unique


def run_report(graph, data, grid: Grid, points, out_dir, *, train_config, finetune_epochs=None, seed: int = 0,
               pass_samples: int = 256, progress: bool = True, save_models: bool = False, skipped=(),
               meta: dict | None = None) -> dict:
    """Measure the baseline and every point; write the table, the JSON and the plots to ``out_dir``."""
    from tqdm import tqdm
    import archdsl
    from ..passes.context import PassContext
    from ..passes.pipeline import run_pipeline
    from .checkpoint import save_checkpoint
    from .loop import fit
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = grid.measure
    x, y = data.train.arrays(pass_samples)
    rows, saved = [], set()
    bar = tqdm(total=1 + len(points), desc="compress-report", leave=False, dynamic_ncols=True, file=sys.stderr,
               disable=not progress)
    bar.set_postfix_str("baseline")
    t0 = time.perf_counter()
    sessions = []
    base = measure(graph, data, cfg, sessions)
    rows.append({"name": "baseline", "family": "baseline", "passes": "", "finetune_epochs": 0,
                 "top1_passes": base["top1"], **base, "seconds": time.perf_counter() - t0})
    bar.update(1)
    for p in points:
        bar.set_postfix_str(p.name)
        t0 = time.perf_counter()
        ctx = lambda: PassContext(data={"x": x, "y": y}, seed=seed, progress=False)      # noqa: E731
        g = run_pipeline(graph, p.passes, ctx=ctx()).graph if p.passes else graph
        epochs = finetune_epochs if finetune_epochs is not None else (
            p.finetune if p.finetune is not None else train_config.epochs)
        row = {"name": p.name, "family": p.family, "passes": ",".join(p.pipelines), "finetune_epochs": epochs}
        if epochs:
            row["top1_passes"] = measure(g, data, cfg)["top1"]
            config = replace(train_config, epochs=epochs, progress=progress)
            module = archdsl.to_torch(g, device=config.device)
            fit(module, data, config, desc=f"{p.name}: epoch")
            g = archdsl.from_torch(g, module)
        if p.after:
            g = run_pipeline(g, p.after, ctx=ctx()).graph
        row.update(measure(g, data, cfg, sessions))
        row.setdefault("top1_passes", row["top1"])
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if save_models:
            stem = model_stem(p.name, saved)          # with_suffix would cut a name such as prune_ratio_0.25
            save_checkpoint(out_dir / "models" / f"{stem}.pt", archdsl.to_torch(g), None, {"passes": p.passes})
            try:
                from ..backends.arch_emit import write_arch
                write_arch(g, out_dir / "models" / f"{stem}.arch")
            except ArchError as err:
                print(f"note: the point '{p.name}' was saved as {stem}.pt only; its graph cannot be written "
                      f"as a spec: {err.message}", file=sys.stderr)
        bar.update(1)
    bar.close()
    for r, (median, p90) in zip(rows, latencies(sessions, cfg, progress)):
        r["latency_ms"], r["latency_p90_ms"] = median, p90
    del sessions
    base = rows[0]
    for r in rows:
        r["params_ratio"] = r["params"] / base["params"]
        r["macs_ratio"] = r["macs"] / base["macs"] if base["macs"] else None
        r["size_ratio"] = r["onnx_bytes"] / base["onnx_bytes"]
        r["speedup"] = base["latency_ms"] / r["latency_ms"] if r.get("latency_ms") else None
        r["delta_top1"] = r["top1"] - base["top1"]
    report = {"model": graph.name, "data": data.describe("val"), "grid": grid.path, "measure": cfg,
              "finetune": {**train_config.to_json(), "epochs": finetune_epochs if finetune_epochs is not None
                           else train_config.epochs},
              "machine": machine(), "meta": dict(meta or {}), "rows": rows,
              "skipped": [{"name": p.name, "passes": p.passes, "reason": why} for p, why in skipped]}
    (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(markdown(report), encoding="utf-8")
    report["plots"] = plot(report, out_dir)
    return report


# ---- writing ------------------------------------------------------------------------------

def _h(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def _x(ratio) -> str:
    """A ratio to the baseline: two decimals, or two significant digits below 0.1 (0.0013x)."""
    return "-" if ratio is None else (f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x")


def _n(k: int, word: str) -> str:
    return f"{k} {word}" + ("" if k == 1 else "s")


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def machine_line(m: dict) -> str:
    ext = ", ".join(m["extensions"]) or "no AVX2"
    return (f"{m['cpu']} ({ext}), {m['cpus']} CPUs; PyTorch {m['torch']}, onnxruntime {m['onnxruntime']}; "
            f"{m['date']}")


def markdown(report: dict) -> str:
    rows, cfg, ft = report["rows"], report["measure"], report["finetune"]
    lines = [f"# Compression report: {report['model']}", "",
             f"- data: {report['data']}; accuracy measured on archdsl's ONNX in onnxruntime",
             f"- fine-tuning: {_n(ft['epochs'], 'epoch')} by default ({ft['optimizer']}, lr {ft['lr']:g}, "
             f"{ft['schedule']}, batch {ft['batch_size']}); per point in the table",
             f"- latency: onnxruntime CPU, {_n(cfg['threads'], 'thread')}, batch {cfg['batch']}, median of "
             f"{cfg['runs']} runs after {cfg['warmup']} warm-up, all points timed round-robin",
             f"- machine: {machine_line(report['machine'])}", "",
             "| point | family | passes | params | MACs | ONNX size | latency (ms) | top-1 after passes | "
             "fine-tune epochs | top-1 | Δ top-1 |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        speed = f" ({r['speedup']:.2f}x)" if r.get("speedup") else ""
        lines.append(
            f"| {r['name']} | {r['family']} | {('`' + r['passes'] + '`') if r['passes'] else '-'} "
            f"| {_h(r['params'])} ({_x(r['params_ratio'])}) | {_h(r['macs'])} ({_x(r['macs_ratio'])}) "
            f"| {r['onnx_bytes'] / 1e6:.2f} MB ({_x(r['size_ratio'])}) | {r['latency_ms']:.3f}{speed} "
            f"| {_pct(r['top1_passes'])} | {r['finetune_epochs'] or '-'} | {_pct(r['top1'])} "
            f"| {100 * r['delta_top1']:+.2f} |")
    if report.get("skipped"):
        lines += ["", "Not measured: " + "; ".join(f"{s['name']} ({s['reason']})" for s in report["skipped"]) + "."]
    lines.append("")
    return "\n".join(lines)


def pareto(points: list) -> list:
    """The (x, accuracy) points no other point beats in both (lower x, higher accuracy), by x."""
    front, best = [], -1.0
    for x, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            front.append((x, a))
            best = a
    return front


def plot(report: dict, out_dir: Path) -> list:
    """Accuracy against latency, ONNX size and MACs: PNG and SVG each; returns the files written.

    The upper panel shows the final accuracy (after fine-tuning) on a scale that fits it, with the
    baseline and the Pareto front; the lower panel the accuracy right after the passes, 0 to 100%."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matplotlib.rcParams["svg.hashsalt"] = "archdsl"
    rows = report["rows"]
    xs = {r["name"]: {"latency_ms": r["latency_ms"], "onnx_mb": r["onnx_bytes"] / 1e6, "macs_m": r["macs"] / 1e6}
          for r in rows}
    families = [f for f in dict.fromkeys(r["family"] for r in rows) if f != "baseline"]
    colors = plt.get_cmap("tab10")
    markers = "osD^vPXhp<>"
    finals = [100 * r["top1"] for r in rows]
    lo = min(finals)
    lo = max(0.0, min(lo - 0.15 * (100 - lo), lo - 1.0))
    written = []
    for key, label, stem in PLOTS:
        fig, (top, low) = plt.subplots(2, 1, sharex=True, figsize=(8.0, 5.6), dpi=110,
                                       gridspec_kw={"height_ratios": [3, 1.3]})
        front = pareto([(xs[r["name"]][key], 100 * r["top1"]) for r in rows])
        top.plot([p[0] for p in front], [p[1] for p in front], ls=":", color="0.5", lw=1.2, zorder=1,
                 label="Pareto front")
        for i, fam in enumerate(families):
            pts = sorted((r for r in rows if r["family"] == fam), key=lambda r: xs[r["name"]][key])
            c, mk = colors(i % 10), markers[i % len(markers)]
            x = [xs[r["name"]][key] for r in pts]
            top.plot(x, [100 * r["top1"] for r in pts], marker=mk, color=c, lw=1.2, ms=6, label=fam, zorder=3)
            low.plot(x, [100 * r["top1_passes"] for r in pts], marker=mk, color=c, lw=0.8, ms=5, mfc="none",
                     zorder=3)
        base = rows[0]
        for ax in (top, low):
            ax.scatter([xs[base["name"]][key]], [100 * (base["top1"])], marker="*", s=150, color="black", zorder=4,
                       label="baseline" if ax is top else None)
            ax.grid(True, alpha=0.3)
        top.set_ylim(lo, 100.0 + 0.02 * (100 - lo))
        low.set_ylim(0, 105)
        top.set_ylabel("top-1 (%), fine-tuned")
        low.set_ylabel("top-1 (%),\nafter passes")
        low.set_xlabel(label.format(batch=report["measure"]["batch"]))
        top.set_title(f"{report['model']} on {report['data'].split(' (')[0]}: accuracy against "
                      f"{stem.split('-')[1]}")
        top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
        for ext in ("png", "svg"):
            path = out_dir / f"{stem}.{ext}"
            fig.savefig(path, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else {"Software": None})
            written.append(str(path))
        plt.close(fig)
    return written
