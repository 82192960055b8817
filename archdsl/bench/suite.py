"""``archc bench``: compile times and latencies of every backend for one model, in one run.

Compile stages are timed ``compile_repeat`` times and reported by their median: text to IR
(parse + elaborate + shape-check), weight initialisation, the pass pipeline (if any), IR to
the in-memory PyTorch module, IR to the generated-source module (where
``archdsl.backends.torch_source.build_module`` exists), IR to serialised ONNX, and, for a
model with a torchvision twin, ``torch.onnx.export`` of the twin (TorchScript exporter,
serialised to memory). Latency is wall time per forward pass after warm-up on the same
random input for every backend, measured round-robin within the PyTorch rows and within the
onnxruntime rows, so that the ratios inside each group share the machine's load. Every
backend's outputs are also compared with archdsl's PyTorch module (max absolute difference),
so a fast wrong backend shows.
"""
from __future__ import annotations

import gc
import importlib
import importlib.util
import io
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cpu import check_threads
from ..diagnostics import ArchError
from ..frontend.layers import DEFAULT_MAX_NODES
from .host import machine, waits
from .runners import OrtRunner, TorchRunner, check_torch_device, input_shapes, ort_providers, random_inputs
from .timing import interleaved, repeat, summary

LABELS = {
    "text_to_ir": "text -> IR (parse, elaborate, shape-check)",
    "init_weights": "initialise weights",
    "passes": "pass pipeline",
    "ir_to_torch": "IR -> PyTorch module (archdsl.to_torch)",
    "ir_to_torch_source": "IR -> generated-source module (build_module)",
    "ir_to_onnx": "IR -> ONNX, serialised (archdsl)",
    "onnxruntime_session": "onnxruntime session, archdsl ONNX",
    "torch_onnx_export": "torch.onnx.export of the torchvision twin",
    "twin_onnxruntime_session": "onnxruntime session, exported twin",
    "torch": "archdsl PyTorch module",
    "torch_source": "archdsl generated-source module",
    "onnxruntime": "archdsl ONNX in onnxruntime",
    "torch_no_passes": "archdsl PyTorch module, no passes",
    "onnxruntime_no_passes": "archdsl ONNX in onnxruntime, no passes",
    "torchvision": "torchvision twin, eager",
    "torchvision_onnx_export": "torch.onnx.export'ed twin in onnxruntime",
}


@dataclass
class BenchConfig:
    file: str
    model: str | None = None
    defines: dict = field(default_factory=dict)
    max_nodes: int = DEFAULT_MAX_NODES
    device: str = "cpu"
    batch: int = 1
    passes: str | None = None
    opset: int | None = None
    warmup: int = 3
    runs: int = 20
    compile_repeat: int = 3
    twin: bool = True
    seed: int = 0
    threads: int | None = None
    channels_last: bool = False        # every PyTorch row in NHWC memory order (weights and inputs)


def _source_builder():
    """``build_module`` of the generated-source backend, or ``(None, reason)``."""
    if importlib.util.find_spec("archdsl.backends.torch_source") is None:
        return None, "archdsl.backends.torch_source does not exist"
    mod = importlib.import_module("archdsl.backends.torch_source")
    fn = getattr(mod, "build_module", None)
    return (fn, "") if callable(fn) else (None, "archdsl.backends.torch_source has no build_module")


def _materialise(graph) -> None:
    for p in graph.params.values():
        p.value


def _max_diff(outs, ref) -> float | None:
    if ref is None or len(outs) != len(ref) or any(o.shape != r.shape for o, r in zip(outs, ref)):
        return None
    return max(float(np.max(np.abs(o.astype(np.float64) - r))) if o.size else 0.0 for o, r in zip(outs, ref))


class _Bench:
    def __init__(self, cfg: BenchConfig, progress: bool):
        self.cfg = cfg
        self.result = {"spec": cfg.file, "model": None, "device": cfg.device, "batch": cfg.batch,
                       "passes": cfg.passes, "threads": cfg.threads, "opset": None, "machine": machine(cfg.threads),
                       "compile_ms": {}, "latency": {}, "ratios": {}, "skipped": {}}
        self.progress, self.bar = progress, None

    # ---- progress
    def plan(self, units: int) -> None:
        if not self.progress:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=units, desc="archc bench", unit="step", file=sys.stderr, leave=False,
                            dynamic_ncols=True)
        else:
            self.bar.total = units
            self.bar.refresh()

    def stage(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=True)

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    # ---- measuring
    def timed(self, key: str, fn):
        self.stage(LABELS[key])
        out, spent = None, []
        for _ in range(max(1, self.cfg.compile_repeat)):
            o, s = repeat(fn, 1)
            out = o
            spent += s
            self.tick()
        self.result["compile_ms"][key] = summary(spent)["median_ms"]
        return out

    def once(self, key: str, fn):
        self.stage(LABELS[key])
        out, s = repeat(fn, 1)
        self.result["compile_ms"][key] = s[0] * 1e3
        self.tick()
        return out

    def measure(self, runners: dict, inputs, comparable: dict, ref=None):
        """Time a group of runners round-robin; returns the outputs of archdsl's PyTorch module
        (the reference every other row is compared with; ``comparable[key]`` False: no comparison)."""
        self.stage("latency: " + ", ".join(runners))
        for runner in runners.values():
            runner.prepare(inputs)
        stats = interleaved({k: r.step for k, r in runners.items()}, self.cfg.warmup, self.cfg.runs, self.tick)
        if "torch" in runners:
            ref = runners["torch"].outputs()
        for key, runner in runners.items():
            st = stats[key]
            st["max_abs_diff_vs_torch"] = None if key == "torch" or not comparable.get(key, True) \
                else _max_diff(runner.outputs(), ref)
            st["detail"] = runner.detail
            self.result["latency"][key] = st
        runners.clear()
        gc.collect()
        return ref

    def run(self) -> dict:
        cfg = self.cfg
        from ..api import load
        from ..backends.onnx_export import check_graph, check_opset, onnx_bytes
        from ..backends.torch_module import to_torch

        def load_once():
            return load(Path(cfg.file), cfg.model, defines=cfg.defines, max_nodes=cfg.max_nodes)

        def passes(graph):
            from ..passes.pipeline import run_pipeline
            out = run_pipeline(graph, cfg.passes)
            return getattr(out, "graph", out)

        # user errors first, before the progress bar starts
        check_torch_device(cfg.device)
        self.result["opset"] = check_opset(cfg.opset)
        graph = load_once()
        check_graph(passes(graph) if cfg.passes else graph, cfg.opset)
        ort_ok = True
        try:
            ort_providers(cfg.device)
        except ArchError as err:
            ort_ok = False
            self.result["skipped"]["onnxruntime"] = err.message
        builder, why = _source_builder()
        if builder is None:
            self.result["skipped"]["torch_source"] = why

        def plan(twin: bool) -> None:
            torch_rows = 1 + (builder is not None) + bool(cfg.passes) + twin
            ort_rows = (1 + bool(cfg.passes) + twin) * ort_ok
            n_compile = 4 + bool(cfg.passes) + (builder is not None) + twin
            self.plan(n_compile * cfg.compile_repeat + (1 + twin) * ort_ok
                      + (torch_rows + ort_rows) * (cfg.warmup + cfg.runs))
        plan(cfg.twin)

        # ---- compile stages
        graph = self.timed("text_to_ir", load_once)
        self.result["model"] = graph.name
        fresh = iter([load_once() for _ in range(max(1, cfg.compile_repeat))])
        self.timed("init_weights", lambda: _materialise(next(fresh)))
        base = graph
        _materialise(base)
        if cfg.passes:
            graph = self.timed("passes", lambda: passes(base))
            _materialise(graph)
        self.result["input_shapes"] = [list(s) for s in input_shapes(graph, cfg.batch)]
        inputs = random_inputs(graph, cfg.batch, cfg.seed)
        module = self.timed("ir_to_torch", lambda: to_torch(graph))
        src_module = self.timed("ir_to_torch_source", lambda: builder(graph)) if builder else None
        model = self.timed("ir_to_onnx", lambda: onnx_bytes(graph, cfg.opset))
        twin, exported, same_weights = self.twin(base) if cfg.twin else (None, None, False)
        if not cfg.twin:
            self.result["skipped"]["torchvision"] = "--no-twin"
        plan(twin is not None)

        # ---- latencies: the PyTorch rows round-robin, then the onnxruntime rows round-robin.
        # The groups run apart because idle onnxruntime worker threads spin and would slow
        # PyTorch; within a group every row sees the same machine load.
        t, nhwc = cfg.threads, cfg.channels_last
        group = {"torch": TorchRunner(module, cfg.device, "torch", t, channels_last=nhwc)}
        if src_module is not None:
            group["torch_source"] = TorchRunner(src_module, cfg.device, "torch-src", t, channels_last=nhwc)
        if cfg.passes:
            group["torch_no_passes"] = TorchRunner(to_torch(base), cfg.device, "torch", t, channels_last=nhwc)
        if twin is not None:
            group["torchvision"] = TorchRunner(twin, cfg.device, "torchvision", t, channels_last=nhwc)
        del module, src_module, twin
        ref = self.measure(group, inputs, {"torchvision": same_weights})
        if ort_ok:
            group = {"onnxruntime": self.once("onnxruntime_session",
                                              lambda: OrtRunner(model, cfg.device, threads=t))}
            if cfg.passes:
                group["onnxruntime_no_passes"] = OrtRunner(onnx_bytes(base, cfg.opset), cfg.device, threads=t)
            if exported is not None:
                group["torchvision_onnx_export"] = self.once("twin_onnxruntime_session",
                                                             lambda: OrtRunner(exported, cfg.device, threads=t))
            self.measure(group, inputs, {"torchvision_onnx_export": same_weights}, ref)
        self.ratios()
        return self.result

    def twin(self, graph):
        """``(twin module, exported ONNX bytes, same weights?)`` or Nones, timing torch.onnx.export."""
        from .twins import find_twin
        import torch
        twin, note = find_twin(graph)
        if twin is None:
            self.result["skipped"]["torchvision"] = note
            return None, None, False
        self.result["twin"] = {"name": graph.name, "note": note}
        example = tuple(torch.from_numpy(x) for x in random_inputs(graph, 1, self.cfg.seed))
        names = [f"input{i}" for i in range(len(example))]
        outs = [f"output{i}" for i in range(len(graph.outputs))]

        def export():
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(twin, example, buf, dynamo=False, opset_version=self.result["opset"],
                                  input_names=names, output_names=outs,
                                  dynamic_axes={n: {0: "N"} for n in names + outs})
            return buf.getvalue()
        exported = self.timed("torch_onnx_export", export)
        return twin, exported, note.startswith("same parameter names")

    def ratios(self) -> None:
        c, lat, r = self.result["compile_ms"], self.result["latency"], self.result["ratios"]

        def med(key):
            return lat[key]["median_ms"] if key in lat else None

        def put(name, num, den):
            if num is not None and den:
                r[name] = num / den
        put("onnx_emit_speedup_vs_torch_onnx_export", c.get("torch_onnx_export"), c.get("ir_to_onnx"))
        put("onnxruntime_latency_vs_exported_twin", med("onnxruntime"), med("torchvision_onnx_export"))
        put("torch_latency_vs_torchvision", med("torch"), med("torchvision"))
        put("onnxruntime_latency_vs_torch", med("onnxruntime"), med("torch"))
        put("torch_source_latency_vs_torch", med("torch_source"), med("torch"))
        put("passes_speedup_torch", med("torch_no_passes"), med("torch"))
        put("passes_speedup_onnxruntime", med("onnxruntime_no_passes"), med("onnxruntime"))


RATIO_LABELS = {
    "onnx_emit_speedup_vs_torch_onnx_export": "ONNX emission speed-up over torch.onnx.export (x, higher is better)",
    "onnxruntime_latency_vs_exported_twin": "onnxruntime latency, archdsl ONNX / exported twin (lower is better)",
    "torch_latency_vs_torchvision": "PyTorch latency, archdsl module / torchvision eager (lower is better)",
    "onnxruntime_latency_vs_torch": "latency, archdsl onnxruntime / archdsl PyTorch",
    "torch_source_latency_vs_torch": "latency, generated-source module / in-memory module",
    "passes_speedup_torch": "pass speed-up, PyTorch (x, higher is better)",
    "passes_speedup_onnxruntime": "pass speed-up, onnxruntime (x, higher is better)",
}


def check_counts(batch: int, runs: int, warmup: int, threads: int | None, compile_repeat: int = 1) -> None:
    """The numbers every ``archc bench`` takes, spec or compiled model: an error for any out of range."""
    for name, value in (("batch", batch), ("runs", runs), ("compile-repeat", compile_repeat)):
        if value < 1:
            raise ArchError(f"--{name} must be at least 1, but it is {value}.")
    if warmup < 0:
        raise ArchError(f"--warmup cannot be negative, but it is {warmup}.")
    check_threads(threads)


def run_bench(cfg: BenchConfig, progress: bool = True) -> dict:
    """Run the whole benchmark; the result is plain JSON-able data (see docs/cli/bench.md)."""
    check_counts(cfg.batch, cfg.runs, cfg.warmup, cfg.threads, cfg.compile_repeat)
    if cfg.passes is not None:
        from ..passes.pipeline import parse_pipeline
        parse_pipeline(cfg.passes)         # an empty or wrong pipeline is refused before any timing
    bench = _Bench(cfg, progress)
    try:
        return bench.run()
    finally:
        bench.close()


def format_report(res: dict) -> str:
    m = res["machine"]
    lines = [f"archc bench: {res['model']} ({res['spec']}), batch {res['batch']}, {res['device']}, "
             f"input {', '.join('(' + ', '.join(map(str, s)) + ')' for s in res.get('input_shapes', []))}"
             + (f", passes \"{res['passes']}\"" if res["passes"] else ""),
             f"machine: {m['cpu']}, {m['cores']} cores" + (f", {m['gpu']}" if "gpu" in m else "")
             + f"; torch {m['torch']} ({res.get('threads') or m['torch_threads']} threads), onnxruntime "
             f"{m['onnxruntime']}{' (' + str(res['threads']) + ' threads)' if res.get('threads') else ''}, "
             f"onnx {m['onnx']}; {m['date']}",
             f"ISA {' '.join(m['isa']) or 'baseline'} (int8: {m['int8']}); idle threads "
             + (f"sleep ({waits(m)}, onnxruntime allow_spinning=0)" if m["OMP_WAIT_POLICY"] == "PASSIVE"
                else f"of onnxruntime sleep, PyTorch's follow {waits(m)}")
             + f"; load average {' '.join(map(str, m['loadavg_start'] or ['?']))}", ""]
    lines.append(f"{'compile (median ms)':<52}{'ms':>10}")
    for key, ms in sorted(res["compile_ms"].items(), key=lambda kv: list(LABELS).index(kv[0])):
        lines.append(f"  {LABELS[key]:<50}{ms:>10.1f}")
    lines += ["", f"{'latency':<52}{'median ms':>10}{'p90 ms':>10}{'max|diff|':>12}"]
    for key, st in sorted(res["latency"].items(), key=lambda kv: list(LABELS).index(kv[0])):
        d = st.get("max_abs_diff_vs_torch")
        lines.append(f"  {LABELS[key]:<50}{st['median_ms']:>10.3f}{st['p90_ms']:>10.3f}"
                     + (f"{d:>12.2e}" if d is not None else f"{'-':>12}"))
    if res["ratios"]:
        lines += ["", "ratios"]
        for key, value in res["ratios"].items():
            lines.append(f"  {RATIO_LABELS[key]:<72}{value:>8.2f}")
    if res.get("twin"):
        lines += ["", f"torchvision twin {res['twin']['name']}: {res['twin']['note']}"]
    for key, why in res["skipped"].items():
        lines.append(f"skipped {key}: {why}")
    return "\n".join(lines)
