"""What a pass receives besides the graph: data, device, seed, progress reporting and verification.

A :class:`PassContext` is made once per pipeline and handed to every pass, as
onnx_ir's and xDSL's pass managers hand theirs. Options that are values (a
ratio, a method) stay dataclass fields of the pass; what is not a value (the
calibration or fine-tuning batches, the device, a progress bar) comes from here.
"""
from __future__ import annotations

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
    import zipfile
    from pathlib import Path
    p = Path(path)
    if not p.is_file():
        raise ArchError(f"Cannot read the {what} file: there is no such file.", Span.of_file(p))
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ArchError(f"Cannot read the {what} file as an .npz archive ({err}).", Span.of_file(p)) from None
    if "x" not in arrays:
        raise ArchError(f"The {what} file has no array 'x'; it holds "
                        f"{', '.join(sorted(arrays)) or 'nothing'}.", Span.of_file(p))
    x = arrays["x"]
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
        raise ArchError(f"The array 'x' must be numeric with the batch first, but it has shape "
                        f"{x.shape} and dtype {x.dtype}.", Span.of_file(p))
    out = {"x": x.astype(np.float32, copy=False)}
    if "y" in arrays:
        y = arrays["y"]
        if y.shape[:1] != x.shape[:1] or not np.issubdtype(y.dtype, np.integer):
            raise ArchError(f"The array 'y' must hold one integer label per sample of 'x' "
                            f"({x.shape[0]}), but it has shape {y.shape} and dtype {y.dtype}.", Span.of_file(p))
        out["y"] = y.astype(np.int64, copy=False)
    return out


Progress = Callable[[Iterable], Iterable]
