"""``archc run``: compile a spec, run forward passes on one backend, print outputs and latency."""
from __future__ import annotations

import numpy as np

from ..diagnostics import ArchError
from .common import add_spec_args, add_spin_arg, load_graph, reject_spec_flags, seed

BACKENDS = ("torch", "onnxruntime")


def _shape(s) -> str:
    return "(" + ", ".join(map(str, s)) + ")"


def top_values(array: np.ndarray, k: int) -> list:
    """The k largest values of the first sample, as (flat index, value), largest first."""
    flat = np.asarray(array[0] if array.ndim > 1 else array, dtype=np.float64).ravel()
    k = min(k, flat.size)
    idx = np.argsort(-flat, kind="stable")[:k]
    return [(int(i), float(flat[i])) for i in idx]


def run(args) -> int:
    from ..bench.host import passive_waits
    passive_waits(args.spin)                 # it times: idle PyTorch threads sleep (set before torch loads)
    from ..bench.runners import input_names, load_inputs, make_runner, random_inputs
    from ..bench.timing import latency
    for flag in ("batch", "runs", "top"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ArchError(f"--{flag} must be at least 1, but it is {getattr(args, flag)}.")
    if args.warmup < 0:
        raise ArchError(f"--warmup cannot be negative, but it is {args.warmup}.")
    from ..bench.artifacts import is_artifact, open_artifact
    if is_artifact(args.file):
        reject_spec_flags(args, "a compiled model")
        runner, model = open_artifact(args.file, args.backend, args.device, args.threads)
        backend = runner.label
    else:
        model = load_graph(args)
        backend = args.backend or "torch"
    if args.input:
        inputs = load_inputs(args.input, model, args.batch)
        where = ", ".join(args.input)
    else:
        inputs = random_inputs(model, args.batch or 1, args.seed)
        where = f"standard normal, seed {args.seed}"
    if not is_artifact(args.file):
        runner = make_runner(backend, model, args.device, args.opset, args.threads)
    runner.prepare(inputs)
    stats = latency(runner.step, args.warmup, args.runs)
    outs = runner.outputs()
    print(f"model {model.name} ({args.file}) on {backend}, {args.device} ({runner.detail})")
    for name, x in zip(input_names(model), inputs):
        print(f"input {name}: {_shape(x.shape)} ({where})")
    for i, out in enumerate(outs):
        label = "output" if len(outs) == 1 else f"output {i}"
        print(f"{label}: {_shape(out.shape)} {out.dtype}")
        tops = ", ".join(f"[{j}] {v:.6g}" for j, v in top_values(out, args.top))
        print(f"  top {min(args.top, out[0].size if out.ndim > 1 else out.size)} of sample 0: {tops}")
    print(f"latency over {stats['runs']} runs after {args.warmup} warm-up: median {stats['median_ms']:.3f} ms, "
          f"p90 {stats['p90_ms']:.3f} ms, mean {stats['mean_ms']:.3f} ms, min {stats['min_ms']:.3f} ms, "
          f"max {stats['max_ms']:.3f} ms")
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="run a spec's model on one backend: outputs and latency")
    add_spec_args(p)
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="torch: archdsl's PyTorch module; onnxruntime: archdsl's ONNX in onnxruntime (default torch; "
                        "a compiled .onnx or .pt2 file runs on its own)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    p.add_argument("--batch", type=int, default=None, help="batch size of the random input (default 1)")
    p.add_argument("--input", action="append", metavar="FILE.npy",
                   help="an input array (.npy), with or without the batch dimension; once per model input")
    p.add_argument("--runs", type=int, default=10, help="timed forward passes (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed forward passes first (default 2)")
    p.add_argument("--top", type=int, default=5, help="how many of the largest output values to show (default 5)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random input (default 0)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset for --backend onnxruntime (default 20)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for PyTorch or onnxruntime (default: the library's own choice)")
    add_spin_arg(p)
    p.set_defaults(fn=run)
