"""Int8 on the CPU: archdsl's ``quantize`` pass against onnxruntime's own ``quantize_static``, measured.

For each model (ResNet-50, GoogLeNet, DenseNet-121 by default, at 224x224), one fp32 graph is the
starting point of everything: the spec's network with batch-norm statistics and affine parameters
drawn away from the defaults (running mean N(0, 0.1), variance U(0.5, 2), gamma U(0.5, 1.5), beta
N(0, 0.1): the range of trained networks) and ``fold-bn`` applied. Its ONNX file is

* ``fp32``: run as it is;
* ``ort-tool``: quantised by ``onnxruntime.quantization.quantize_static`` (QDQ format, per-channel
  int8 weights, uint8 activations (U8S8), MinMax calibration, its defaults otherwise);
* ``archdsl``: the same graph through ``run_pipeline(graph, "quantize{...}")`` (QDQ, per channel,
  the activations the pass picks for this CPU), then ``onnx_bytes``.

Both quantisers calibrate on the same samples (standard normal, ``calib`` of them); accuracy is
measured on other samples of that distribution: the cosine similarity of the logits with fp32 and
the top-1 agreement. Latency is onnxruntime's (CPUExecutionProvider, all graph optimisations,
``threads`` intra-op threads that do not spin), the median over ``runs`` round-robin rounds
(``timing.interleaved``: each round runs every model once, so load changes fall on all alike).

With ``with_torch`` (``--torch``) PyTorch joins the same rounds: eager fp32 (``archdsl.to_torch``) and
the quantised graph on PyTorch's own int8 kernels (``torch_quant.int8_module``, x86 engine).

With ``share`` the weight-share pass is measured too, on the same fp32 graph: file sizes at 8 and 4
bits and after ``prune`` + share (Deep Compression's pipeline, without its fine-tuning), with their
cosine against fp32.

onnxruntime's quantisation tool is imported here only (it ships with onnxruntime); nothing else in
archdsl uses it. Run as ``archc bench-quant`` or ``python -m archdsl.bench.quant``.
"""
from __future__ import annotations

import gc
import math
import sys
import tempfile
import time
from pathlib import Path
from .host import loadavg, passive_waits  # noqa: F401  (re-exported for the CLI)
from .host import machine as host_machine, waits

MODELS = (("resnet.arch", "resnet50"), ("googlenet.arch", "googlenet"), ("densenet.arch", "densenet121"))
PASS = "quantize"
SHARE = ("weight-share{bits=8}", "weight-share{bits=4}", "prune{ratio=0.5},weight-share{bits=5}")


def trained_like(graph, seed: int = 0) -> None:
    """Batch-norm statistics and affine parameters in the range of a trained network."""
    import numpy as np
    rng = np.random.default_rng(seed)
    for n in graph.nodes():
        if n.op != "bn":
            continue
        c = n.shape[1]
        values = {"running_mean": rng.normal(0, 0.1, c), "running_var": rng.uniform(0.5, 2.0, c),
                  "weight": rng.uniform(0.5, 1.5, c), "bias": rng.normal(0, 0.1, c)}
        for local, v in values.items():
            if local in n.params:
                n.param(local).value = v.astype(np.float32)


def session(model, threads: int):
    from .runners import quiet_session
    return quiet_session(model, threads)


def ort_tool(fp32_path: str, out_path: str, calib, reduce_range: bool = False) -> float:
    """``quantize_static`` (QDQ, per channel, U8S8, MinMax) of the fp32 file; returns the seconds it took.
    ``reduce_range``: 7-bit weights, as onnxruntime advises on x86 without VNNI (the benchmark passes it
    where archdsl's ``quantize`` took 7 bits, so that neither side's u8 x s8 sums saturate)."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)           # it warns about every BN weight's axis
    try:
        t0 = time.perf_counter()
        quantize_static(fp32_path, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, reduce_range=reduce_range)
        return time.perf_counter() - t0
    finally:
        logging.getLogger().setLevel(level)


def cosine(a, b) -> float:
    import numpy as np
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / math.sqrt((a @ a) * (b @ b)))


def _node_counts(model_bytes: bytes, threads: int) -> dict:
    """The operators onnxruntime runs after its optimisations (from the optimised model it writes)."""
    import collections

    import onnx
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        m = onnx.load(opts.optimized_model_filepath)
    return dict(collections.Counter(n.op_type for n in m.graph.node).most_common())


def measure_model(zoo: Path, file: str, name: str, passes: str, batches, warmup: int, runs: int, threads: int,
                  calib_n: int, share: bool, stage=None, with_torch: bool = False) -> dict:
    import numpy as np

    import archdsl
    from ..backends.onnx_export import onnx_bytes
    from ..passes import run_pipeline
    from ..passes.context import PassContext
    from .timing import interleaved

    def say(text):
        if stage:
            stage(f"{name}: {text}")

    say("building the fp32 graph")
    g = archdsl.load(zoo / file, name)
    trained_like(g)
    fp = run_pipeline(g, "fold-bn").graph
    shape = fp.data(fp.inputs[0])["shape"][1:]
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((calib_n, *shape), dtype=np.float32)
    test = np.random.default_rng(1).standard_normal((16, *shape), dtype=np.float32)
    row = {"model": name, "file": file, "passes": passes, "calib_samples": calib_n}
    fp_bytes = onnx_bytes(fp)
    say("archdsl quantize")
    t0 = time.perf_counter()
    q = run_pipeline(fp, passes, ctx=PassContext(data={"x": calib}, calib_samples=calib_n)).graph
    row["archdsl_quantize_s"] = time.perf_counter() - t0
    ours = onnx_bytes(q)
    row["archdsl_meta"] = q.meta.get("quantize", {})
    say("onnxruntime quantize_static")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp_bytes)
        row["ort_tool_quantize_s"] = ort_tool(str(src), str(dst), calib,
                                              reduce_range=row["archdsl_meta"].get("weight_max") == 63)
        theirs = dst.read_bytes()
    models = {"fp32": fp_bytes, "ort-tool": theirs, "archdsl": ours}
    row["size_mb"] = {k: len(v) / 1e6 for k, v in models.items()}
    row["ort_ops"] = {k: _node_counts(v, threads) for k, v in models.items() if k != "fp32"}
    sessions = {k: session(v, threads) for k, v in models.items()}
    outs = {k: s.run(None, {"x": test})[0] for k, s in sessions.items()}
    torch_models = {}
    if with_torch:
        import torch

        from ..backends.torch_quant import int8_module
        torch.set_num_threads(threads)
        torch_models = {"torch-fp32": archdsl.to_torch(fp).eval(), "torch-int8": int8_module(q)}
        with torch.no_grad():
            for k, m in torch_models.items():
                outs[k] = m(torch.from_numpy(test)).numpy()
    top = outs["fp32"].argmax(1)
    int8 = ["ort-tool", "archdsl"] + (["torch-int8"] if with_torch else [])
    row["cosine"] = {k: cosine(outs[k], outs["fp32"]) for k in int8}
    row["top1_agreement"] = {k: float((outs[k].argmax(1) == top).mean()) for k in int8}
    row["latency"] = {}
    for batch in batches:
        say(f"latency at batch {batch}")
        x = rng.standard_normal((batch, *shape), dtype=np.float32)
        steps = {k: (lambda s=s: s.run(None, {"x": x})) for k, s in sessions.items()}
        if torch_models:
            import torch
            xt = torch.from_numpy(x)
            steps.update({k: (lambda m=m: _no_grad(m, xt)) for k, m in torch_models.items()})
        res = interleaved(steps, warmup, runs)
        med = {k: v["median_ms"] for k, v in res.items()}
        lat = {"median_ms": med, "p90_ms": {k: v["p90_ms"] for k, v in res.items()},
               "speedup_vs_fp32": {k: med["fp32"] / med[k] for k in ("ort-tool", "archdsl")},
               "archdsl_vs_tool": med["ort-tool"] / med["archdsl"]}
        if torch_models:
            lat["torch_int8_vs_fp32"] = med["torch-fp32"] / med["torch-int8"]
        row["latency"][str(batch)] = lat
    del sessions, torch_models
    if share:
        row["share"] = {}
        for pipe in SHARE:
            say(pipe)
            t0 = time.perf_counter()
            s = run_pipeline(fp, pipe).graph
            spent = time.perf_counter() - t0
            b = onnx_bytes(s)
            out = session(b, threads).run(None, {"x": test})[0]
            row["share"][pipe] = {"size_mb": len(b) / 1e6, "ratio_vs_fp32": len(b) / len(fp_bytes),
                                  "cosine_vs_fp32": cosine(out, outs["fp32"]), "seconds": spent}
    gc.collect()
    return row


def _no_grad(module, x):
    import torch
    with torch.no_grad():
        return module(x)


def run(zoo: Path = Path("zoo_specs"), models=MODELS, passes: str = PASS, batches=(1, 8), warmup: int = 3,
        runs: int = 20, threads: int = 2, calib: int = 32, share: bool = False, progress: bool = True,
        with_torch: bool = False) -> dict:
    passive_waits()
    info = host_machine(threads, ())
    rows = []
    for file, name in models:
        def stage(text):
            if progress:
                print(f"[bench-quant] {text}", file=sys.stderr, flush=True)
        rows.append(measure_model(Path(zoo), file, name, passes, batches, warmup, runs, threads, calib, share,
                                  stage, with_torch))
    info["loadavg_end"] = loadavg()
    return {"machine": info, "warmup": warmup, "runs": runs, "rows": rows, "with_torch": with_torch}


def format_markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"CPU: {m['cpu']}, {m['cores']} cores, int8 ISA: {m['int8']} ({', '.join(m['isa'])}); "
             f"onnxruntime {m['onnxruntime']}, {m['threads']} threads"
             f"{'; PyTorch ' + waits(m) if res.get('with_torch') else ''}; {m['date']}; load average "
             f"{m.get('loadavg_start')} -> {m.get('loadavg_end')}", "",
             "| model | batch | fp32 | ort quantize_static | archdsl quantize | archdsl vs tool |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        for batch, lat in r["latency"].items():
            med, sp = lat["median_ms"], lat["speedup_vs_fp32"]
            lines.append(f"| {r['model']} | {batch} | {med['fp32']:.1f} ms | {med['ort-tool']:.1f} ms "
                         f"({sp['ort-tool']:.2f}x) | {med['archdsl']:.1f} ms (**{sp['archdsl']:.2f}x**) | "
                         f"{lat['archdsl_vs_tool']:.2f}x |")
    lines += ["", "| model | cosine vs fp32 (tool / archdsl) | top-1 agreement (tool / archdsl) | file MB "
                  "(fp32 / tool / archdsl) | quantise time (tool / archdsl) |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        c, t, s = r["cosine"], r["top1_agreement"], r["size_mb"]
        lines.append(f"| {r['model']} | {c['ort-tool']:.5f} / {c['archdsl']:.5f} | {t['ort-tool']:.3f} / "
                     f"{t['archdsl']:.3f} | {s['fp32']:.1f} / {s['ort-tool']:.1f} / {s['archdsl']:.1f} | "
                     f"{r['ort_tool_quantize_s']:.1f} s / {r['archdsl_quantize_s']:.1f} s |")
    if any("torch-fp32" in lat["median_ms"] for r in res["rows"] for lat in r["latency"].values()):
        lines += ["", "| model | batch | PyTorch fp32 (eager) | PyTorch int8 (`int8_module`) | speed-up | "
                      "cosine vs fp32 |", "|---|---|---|---|---|---|"]
        for r in res["rows"]:
            for batch, lat in r["latency"].items():
                med = lat["median_ms"]
                lines.append(f"| {r['model']} | {batch} | {med['torch-fp32']:.1f} ms | {med['torch-int8']:.1f} ms | "
                             f"**{lat['torch_int8_vs_fp32']:.2f}x** | {r['cosine']['torch-int8']:.5f} |")
    if any("share" in r for r in res["rows"]):
        lines += ["", "| model | pipeline | file MB | size vs fp32 | cosine vs fp32 |", "|---|---|---|---|---|"]
        for r in res["rows"]:
            for pipe, v in r.get("share", {}).items():
                lines.append(f"| {r['model']} | `{pipe}` | {v['size_mb']:.1f} | {v['ratio_vs_fp32']:.3f} "
                             f"({1 / v['ratio_vs_fp32']:.1f}x smaller) | {v['cosine_vs_fp32']:.5f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from ..cli import main as cli
    return cli(["bench-quant", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
