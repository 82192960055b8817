"""Compiled models as ``archc run`` and ``archc bench`` inputs: an ONNX file or a ``torch.export`` program.

Each opens into a runner of :mod:`.runners` and a :class:`~.runners.Signature`
read from the file itself (ONNX graph inputs; the exported program's
placeholders), so a model compiled once can be run and timed without its spec.
"""
from __future__ import annotations

from pathlib import Path

from ..cpu import check_threads
from ..diagnostics import ArchError, Span
from .runners import OrtRunner, Signature, TorchRunner, check_torch_device, ort_providers

SUFFIXES = {".onnx": "onnxruntime", ".pt2": "torch"}


def is_artifact(path) -> bool:
    return Path(path).suffix in SUFFIXES


def _read(path: Path) -> bytes:
    here = Span.of_file(path)
    if not path.is_file():
        raise ArchError("Cannot read this model: it does not exist or is not a regular file.", here)
    try:
        return path.read_bytes()
    except OSError as err:
        raise ArchError(f"Cannot read this model: {err.strerror or err}.", here) from None


def _dim(d) -> object:
    return d if isinstance(d, int) and d > 0 else "N"


def open_onnx(path: Path, device: str, threads: int | None):
    data = _read(path)
    ort_providers(device)
    try:
        runner = OrtRunner(data, device, "onnxruntime", threads)
    except Exception as err:  # noqa: BLE001 - onnxruntime's own errors (InvalidProtobuf, Fail ...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ArchError(f"onnxruntime cannot load this model: {first}", Span.of_file(path)) from None
    inputs = tuple((i.name, ("N", *(_dim(d) for d in i.shape[1:]))) for i in runner.session.get_inputs())
    for i in runner.session.get_inputs():
        if i.type != "tensor(float)":
            raise ArchError(f"Input '{i.name}' takes {i.type}, but archc runs models on float32 tensors (images); "
                            "run this model through onnxruntime with inputs of your own.", Span.of_file(path))
    for name, shape in inputs:
        if "N" in shape[1:]:
            raise ArchError(f"Input '{name}' has a dynamic dimension besides the batch; run it through "
                            "onnxruntime with inputs of your own (--input FILE.npy).", Span.of_file(path))
    name = runner.session.get_modelmeta().graph_name or path.stem
    return runner, Signature(name, inputs)


def open_program(path: Path, device: str, threads: int | None):
    import logging
    import zipfile

    import torch
    _read(path)
    check_torch_device(device)
    if not zipfile.is_zipfile(path):
        raise ArchError("This is not a torch.export program: a .pt2 file is a zip archive, and this one is not; "
                        "compile one with archc compile --target torch.", Span.of_file(path))
    log = logging.getLogger("torch.export")
    level = log.level
    log.setLevel(logging.CRITICAL)       # torch logs its own traceback before raising
    try:
        program = torch.export.load(str(path))
    except Exception as err:  # noqa: BLE001 - not an exported program, or a damaged one
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ArchError(f"This is not a torch.export program that this PyTorch can load ({first}); "
                        "compile one with archc compile --target torch.", Span.of_file(path)) from None
    finally:
        log.setLevel(level)
    user = set(program.graph_signature.user_inputs)
    inputs = tuple((n.name, ("N", *(_dim(int(d)) if str(d).isdigit() else "N" for d in n.meta["val"].shape[1:])))
                   for n in program.graph.nodes if n.op == "placeholder" and n.name in user)
    return TorchRunner(program.module(), device, "torch", threads, exported=True), Signature(path.stem, inputs)


def open_artifact(path, backend: str | None, device: str, threads: int | None):
    """(runner, signature) for a compiled model; ``backend`` must be the file's own or None."""
    path = Path(path)
    own = SUFFIXES[path.suffix]
    if backend not in (None, own):
        raise ArchError(f"A {path.suffix} file runs on {own}, not on {backend}; leave --backend out, or give the "
                        "spec to run it on either backend.", Span.of_file(path))
    check_threads(threads)
    return (open_onnx if own == "onnxruntime" else open_program)(path, device, threads)
