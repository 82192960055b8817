"""What a pass receives besides the graph: data, device, seed, progress reporting and verification.

A :class:`PassContext` is made once per pipeline and handed to every pass, as
onnx_ir's and xDSL's pass managers hand theirs. Options that are values (a
ratio, a method) stay dataclass fields of the pass; what is not a value (the
calibration or fine-tuning batches, the device, a progress bar) comes from here.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from ..diagnostics import ArchError, Span


@dataclass
class Batch:
    """Inputs ``x`` (one array per model input, NCHW float32) and optional integer labels ``y``."""
    x: tuple
    y: np.ndarray | None = None


@dataclass
class PassContext:
    """Shared by every pass of one pipeline run.

    * ``data``: the samples passes may learn from (calibration, Taylor and OBD
      importances, fine-tuning): a dict with ``x`` (an array with the batch first,
      or a tuple of them for several model inputs) and optionally ``y`` (labels).
      :meth:`batches` cuts it into :class:`Batch` objects.
    * ``device``: where a pass that runs the model should run it (``"cpu"``, ``"cuda"``).
    * ``seed``: for every random choice a pass makes, so a pipeline is deterministic.
    * ``progress``: whether long work shows a progress bar (on standard error).
    * ``verify``: run the model before and after each pass and compare (``--verify``);
      ``tolerance`` overrides each pass's own expected error.
    * ``calib_samples``: how many samples of ``data`` calibration uses (``--calib-samples``; None:
      the pass's default).
    """
    data: dict | None = None
    device: str = "cpu"
    seed: int = 0
    progress: bool = False
    verify: bool = False
    tolerance: float | None = None
    calib_samples: int | None = None
    stream: object = field(default=None, repr=False)      # where progress goes (default: stderr)
    source: str | None = None      # the file ``data`` came from, which messages about it name

    def __post_init__(self):
        if self.data is not None:
            check_data(self.data, self._span())
        if not isinstance(self.device, str):
            raise ArchError(f"PassContext.device must be a string such as 'cpu' or 'cuda', but it is "
                            f"{type(self.device).__name__}.")
        if not _is_int(self.seed) or not 0 <= self.seed < 2 ** 63:
            raise ArchError(f"The seed must be an integer from 0 to 2**63 - 1, but it is {self.seed!r}.")
        check_tolerance(self.tolerance)
        if self.calib_samples is not None and (not _is_int(self.calib_samples) or self.calib_samples < 1):
            raise ArchError(f"The number of calibration samples must be an integer of at least 1, but it is "
                            f"{self.calib_samples!r}.")
        if self.stream is not None and not callable(getattr(self.stream, "write", None)):
            raise ArchError(f"PassContext.stream must be a file-like object with write(), but it is "
                            f"{type(self.stream).__name__}.")

    def check_fits(self, graph) -> None:
        """The data has the shapes and labels ``graph`` takes (run once by the pipeline)."""
        if self.data is not None:
            check_data_fits(self.data, graph, self._span())

    def _span(self) -> Span | None:
        """Where messages about the data point: its file, if it came from one."""
        return Span.of_file(self.source) if self.source else None

    def require_data(self, pass_name: str, what: str) -> dict:
        """The data, or an error saying that ``pass_name`` needs it for ``what``."""
        if self.data is None:
            raise ArchError(f"Pass '{pass_name}' needs data for {what}; give it with --data FILE.npz (an array "
                            "'x' of inputs, batch first, and optionally 'y' of labels).")
        return self.data

    def batches(self, batch_size: int = 32, limit: int | None = None) -> Iterator[Batch]:
        """The data in batches of ``batch_size`` samples, in order, at most ``limit`` samples in all."""
        data = self.data or {}
        xs = data.get("x")
        if xs is None:
            return
        xs = xs if isinstance(xs, tuple) else (xs,)
        y = data.get("y")
        total = len(xs[0]) if limit is None else min(limit, len(xs[0]))
        for start in range(0, total, batch_size):
            end = min(start + batch_size, total)
            yield Batch(tuple(x[start:end] for x in xs), None if y is None else y[start:end])

    def track(self, items: Iterable, total: int | None = None, desc: str = "") -> Iterable:
        """``items``, with a progress bar when ``progress`` is on."""
        if not self.progress:
            return items
        from tqdm import tqdm
        return tqdm(items, total=total, desc=desc, file=self.stream or sys.stderr, leave=False,
                    dynamic_ncols=True)

    def rng(self, salt: str = "") -> np.random.Generator:
        """A generator seeded by ``seed`` and ``salt`` (a pass name, a layer), independent of call order."""
        import hashlib
        digest = hashlib.blake2b(f"{self.seed}:{salt}".encode(), digest_size=8).digest()
        return np.random.default_rng(int.from_bytes(digest, "little"))


def load_data(path, what: str = "--data") -> dict:
    """Read an ``.npz`` with ``x`` (inputs, batch first) and optionally ``y``; ArchError naming the file."""
    from ..data import read_npz
    arrays = read_npz(path, what, "an .npz file with an array 'x' of inputs, batch first, and optionally 'y' "
                                  "of labels")
    span = Span.of_file(path)
    if "x" not in arrays:
        raise ArchError(f"The {what} file has no array 'x'; it holds "
                        f"{', '.join(sorted(arrays)) or 'nothing'}.", span)
    out = {"x": arrays["x"]}
    if "y" in arrays:
        out["y"] = arrays["y"]
    check_data(out, span)                       # before casting: a complex x would lose its imaginary part
    return {k: (v.astype(np.float32, copy=False) if k == "x" else v.astype(np.int64, copy=False))
            for k, v in out.items()}


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_tolerance(tolerance) -> None:
    """``--verify``'s tolerance: None (each pass's own) or a finite number of at least 0."""
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float, np.floating))
                                  or not 0 <= tolerance < math.inf):
        raise ArchError(f"The tolerance must be a finite number of at least 0, but it is {tolerance!r}.")


def check_data(data, span: Span | None = None) -> None:
    """``data`` as :class:`PassContext` takes it, or an ArchError saying what is wrong: a dict with ``x``
    (a real, finite array with the batch first, or a tuple of them with one batch size) and optionally
    ``y`` (one integer label per sample)."""
    from ..data import check_inputs
    where = "PassContext.data" if span is None else "The data"
    if not isinstance(data, dict):
        raise ArchError(f"{where} must be a dict with an array 'x' (inputs, batch first) and optionally 'y' "
                        f"(labels), but it is {type(data).__name__}.", span)
    if unknown := sorted(str(k) for k in data if k not in ("x", "y")):
        raise ArchError(f"{where} holds {', '.join(repr(k) for k in unknown)}, which no pass reads; its keys "
                        "are 'x' (inputs) and 'y' (labels).", span)
    if "x" not in data:
        raise ArchError(f"{where} has no 'x' (the inputs, batch first).", span)
    xs = data["x"] if isinstance(data["x"], tuple) else (data["x"],)
    for k, x in enumerate(xs):
        name = "x" if len(xs) == 1 else f"x[{k}]"
        if not isinstance(x, np.ndarray):
            raise ArchError(f"{where}'s '{name}' must be a NumPy array, but it is {type(x).__name__}.", span)
        check_inputs(x, name, span)
        if x.ndim < 2 or len(x) == 0:
            raise ArchError(f"{where}'s '{name}' must hold samples with the batch first, but it has shape "
                            f"{tuple(x.shape)}.", span)
        if len(x) != len(xs[0]):
            raise ArchError(f"{where}'s inputs hold {len(xs[0])} and {len(x)} samples; give every input the "
                            "same batch.", span)
    y = data.get("y")
    if y is not None and (not isinstance(y, np.ndarray) or y.ndim != 1 or len(y) != len(xs[0])
                          or not np.issubdtype(y.dtype, np.integer)):
        shape = f"shape {tuple(y.shape)} and dtype {y.dtype}" if isinstance(y, np.ndarray) else type(y).__name__
        raise ArchError(f"{where}'s 'y' must hold one integer label per sample of 'x' ({len(xs[0])}), but it "
                        f"has {shape}.", span)


def check_data_fits(data: dict, graph, span: Span | None = None) -> None:
    """The samples of ``data`` have the shape the model's inputs take (the batch aside), and its labels
    lie within the model's first output: an error naming both otherwise."""
    xs = data["x"] if isinstance(data["x"], tuple) else (data["x"],)
    where = "PassContext.data" if span is None else "The data"
    if len(xs) != len(graph.inputs):
        inputs = f"{len(graph.inputs)} input{'s' if len(graph.inputs) != 1 else ''}"
        raise ArchError(f"{where} gives {len(xs)} input arrays, but model '{graph.name}' takes {inputs}; give 'x' as "
                        "a tuple with one array per input.", span)
    for k, (x, nid) in enumerate(zip(xs, graph.inputs)):
        want = tuple(graph.data(nid)["shape"])
        fits = len(x.shape) == len(want) and all(not isinstance(w, int) or w == h
                                                 for w, h in zip(want[1:], x.shape[1:]))
        if not fits:
            name = "x" if len(xs) == 1 else f"x[{k}]"
            have = ", ".join(map(str, x.shape[1:]))
            raise ArchError(f"{where}'s '{name}' holds samples of shape ({have}) (rank {x.ndim} with the batch), "
                            f"but model '{graph.name}' takes ({', '.join(map(str, want))}); give inputs of that "
                            "shape, batch first.", span)
    y = data.get("y")
    out = tuple(graph.data(graph.outputs[0])["shape"]) if graph.outputs else ()
    if y is not None and len(y) and len(out) == 2 and isinstance(out[1], int):
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= out[1]:
            raise ArchError(f"{where}'s labels run from {lo} to {hi}, but model '{graph.name}' has {out[1]} "
                            f"outputs (classes 0 to {out[1] - 1}); fix the labels or the model's classes.", span)


Progress = Callable[[Iterable], Iterable]
