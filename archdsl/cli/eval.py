"""``archc eval``: top-1 (and top-5) accuracy and the loss of a model on ``--data``, on any backend.

``FILE`` is a spec (with ``--weights`` and optionally ``--passes``, run on the
PyTorch module or on archdsl's ONNX in onnxruntime) or a compiled ``.onnx``
file, which runs in onnxruntime as it is, so a quantised model is evaluated as
it will run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..diagnostics import ArchError, Span
from .common import add_spec_args, seed

BACKENDS = ("torch", "onnxruntime")


def ort_session(model, device: str = "cpu", threads: int | None = None):
    """An onnxruntime session of a model (bytes or a path), whose idle threads sleep
    (:func:`archdsl.bench.runners.quiet_session`: the compress report times it)."""
    from ..bench.runners import ort_providers, quiet_session
    return quiet_session(model, threads, ort_providers(device.split(":")[0]))


def ort_predictor(session):
    name = session.get_inputs()[0].name

    def predict(x):
        return session.run(None, {name: x})[0]
    return predict


def onnx_target(path: Path):
    """The :class:`archdsl.data.Target` of a compiled ONNX model: its one input's shape and its class count."""
    import onnx
    from ..data import Target
    span = Span.of_file(path)
    if not path.is_file():
        raise ArchError("Cannot read the ONNX file: there is no such file.", span)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf raises several types for corrupt files
        raise ArchError(f"Cannot read this file as an ONNX model ({type(err).__name__}); compile one with "
                        "archc compile --target onnx.", span) from None
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]

    def dims(value):
        return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "N")
                     for d in value.type.tensor_type.shape.dim)
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ArchError(f"The ONNX model has {len(inputs)} inputs and {len(model.graph.output)} outputs, but "
                        "evaluation needs one image input and one output of class scores.", span)
    shape, out = dims(inputs[0]), dims(model.graph.output[0])
    if len(out) != 2 or not isinstance(out[1], int) or not all(isinstance(d, int) for d in shape[1:]):
        raise ArchError(f"The ONNX model maps {shape} to {out}, but evaluation needs fixed input sizes and class "
                        "scores (N, classes).", span)
    return Target(model.graph.name or path.stem, tuple(shape[1:]), out[1])


def run(args) -> int:
    from ..data import open_data, target_of
    from ..train.loop import evaluate, torch_predictor
    from .train import apply_passes, load_spec, set_threads
    set_threads(args)
    if args.batch_size < 1:
        raise ArchError(f"--batch-size must be at least 1, but it is {args.batch_size}.")
    path = Path(args.file)
    if path.suffix == ".onnx":
        for flag in ("weights", "passes", "model"):
            if getattr(args, flag):
                raise ArchError(f"--{flag} applies to a spec; an .onnx file holds its model and weights, so "
                                f"drop --{flag}.")
        if args.backend != "onnxruntime" and args.backend_given:
            raise ArchError("An .onnx file runs in onnxruntime; drop --backend torch or evaluate the spec instead.")
        target = onnx_target(path)
        data = open_data(args.data, target, args.resize)
        session = ort_session(str(path), args.device, args.threads)
        predict, backend, name, where = ort_predictor(session), "onnxruntime", target.name, str(path)
    else:
        graph = load_spec(args)
        data = open_data(args.data, target_of(graph), args.resize)
        if args.weights:
            from ..backends.weights import load_weights
            load_weights(graph, Path(args.weights))
        if args.passes:
            graph = apply_passes(graph, args, data)
        backend, name = args.backend, graph.name
        where = f"{args.file}" + (f", weights {args.weights}" if args.weights else ", initial weights")
        if backend == "torch":
            import archdsl
            from ..train.dist import check_device
            check_device(args.device)
            predict = torch_predictor(archdsl.to_torch(graph, device=args.device), args.device)
        else:
            from ..backends.onnx_export import onnx_bytes
            predict = ort_predictor(ort_session(onnx_bytes(graph, args.opset), args.device, args.threads))
    split = data.split(args.split)
    m = evaluate(predict, split, args.batch_size)
    if args.json:
        print(json.dumps({"model": name, "file": str(args.file), "weights": args.weights, "backend": backend,
                          "device": args.device, "data": data.source, "split": args.split, **m}, indent=1))
        return 0
    print(f"model {name} ({where}) on {backend}, {args.device}: {data.describe(args.split)}")
    line = f"top-1 accuracy {100 * m['top1']:.2f}% ({m['correct']}/{m['samples']})"
    if m["top5"] is not None:
        line += f", top-5 accuracy {100 * m['top5']:.2f}%"
    print(line + f", loss {m['loss']:.4f}")
    return 0


class _Backend(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.backend_given = True


def register(sub) -> None:
    from .train import add_data_args
    p = sub.add_parser("eval", help="accuracy and loss of a spec with weights, or of an .onnx file, on --data")
    add_spec_args(p)
    add_data_args(p)
    p.add_argument("--weights", help="the weights to evaluate (a state_dict or a checkpoint of archc train)")
    p.add_argument("--split", choices=("val", "train"), default="val", help="which split (default val)")
    p.add_argument("--backend", choices=BACKENDS, default="torch", action=_Backend,
                   help="torch: archdsl's PyTorch module; onnxruntime: archdsl's ONNX (default torch; an .onnx "
                        "FILE always runs in onnxruntime)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per forward pass (default 256)")
    p.add_argument("--passes", help="a pass pipeline to run on the IR after loading the weights")
    p.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tolerance", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--print-ir-after", action="append", metavar="PASS", help=argparse.SUPPRESS)
    p.add_argument("--pass-samples", type=int, default=256,
                   help="training samples given to passes that learn from data (default 256)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the initial weights and the passes (default 0)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset for --backend onnxruntime (default 20)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch or onnxruntime")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(fn=run, backend_given=False)
