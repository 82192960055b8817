"""Labelled image data for ``archc train``, ``eval``, ``distill`` and ``compress-report`` (``--data``).

One loader for every command: :func:`open_data` takes what ``--data`` says and
the model's input shape and class count, and returns a :class:`Data` with a
``train`` and a ``val`` :class:`Split`. Three sources, nothing downloaded:

* ``digits``: scikit-learn's bundled 1797 handwritten digits (8x8, grayscale,
  10 classes), standardised with the mean and deviation of the training split,
  split 80/20 per class with a fixed seed (the same split for every command and
  every ``--seed``); the single channel is repeated when the model takes several;
* ``FILE.npz``: ``x`` (NCHW, numbers) and ``y`` (integer labels), used as they
  are; optional ``x_val`` and ``y_val`` are the validation split, otherwise the
  same fixed 80/20 split per class applies;
* ``DIR``: an image folder in torchvision's ``ImageFolder`` layout (one
  sub-folder per class, classes in sorted order), or ``DIR/train`` and ``DIR/val``
  each in that layout. Images are converted to RGB (or grayscale for a
  one-channel model) and get the standard transforms: for training a random
  resized crop (scale 0.08 to 1, aspect 3/4 to 4/3) and a horizontal flip with
  probability 1/2, for evaluation a resize of the shorter side to ``S / 0.875``
  and a centre crop of ``S``; then ImageNet's mean and deviation.

``resize`` (``--resize S``) makes the samples of ``digits`` and ``.npz`` data
``S x S`` (bilinear); an image folder is always cropped to the model's size.
Every problem (a missing file, the wrong rank, channels or size, labels out of
range) is an :class:`ArchError` saying what is wrong and what to do.

Batches come from :meth:`Split.batches`: the order is a permutation seeded by
``(seed, epoch)`` and each batch is cut into ``world`` contiguous shards, one per
process, so that K processes of a distributed run see together exactly the
global batches of one process.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .diagnostics import ArchError, Span

DIGITS = "digits"
VAL_FRACTION = 0.2
SPLIT_SEED = 0
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_RATIO = 0.875
SOURCES = "digits, an .npz file (arrays x and y) or an image folder (one sub-folder per class)"


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _rng(*key) -> np.random.Generator:
    digest = hashlib.blake2b(":".join(map(str, key)).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def stratified_split(y: np.ndarray, fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED):
    """``(train, val)`` index arrays: ``round(fraction * n_c)`` samples of each class ``c`` go to val."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(fraction * len(idx)))
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


@dataclass
class Batch:
    """One process's share of a global batch: ``x`` (float32, NCHW), ``y`` (int64) and the global count."""
    x: np.ndarray
    y: np.ndarray
    total: int


class Split:
    """Samples of one split; ``load(indices, train, rng)`` gives ``(x, y)`` arrays for the model."""

    name: str = ""
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, indices, train: bool = False, seed=None):
        raise NotImplementedError

    def arrays(self, limit: int | None = None):
        """The first ``limit`` samples (all by default) as ``(x, y)``, without augmentation."""
        n = len(self) if limit is None else min(limit, len(self))
        return self.load(np.arange(n))

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                rank: int = 0, world: int = 1, train: bool = False):
        """:class:`Batch` objects: global batches of ``batch_size`` (the last may be smaller), this rank's shard.

        A final batch with fewer samples than processes is dropped, so that every
        process has work in every step."""
        n = len(self)
        order = _rng("order", seed, epoch).permutation(n) if shuffle else np.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < world:
                break
            mine = np.array_split(idx, world)[rank]
            x, y = self.load(mine, train=train, seed=(seed, epoch))
            yield Batch(x, y, len(idx))

    def steps(self, batch_size: int, world: int = 1) -> int:
        n = len(self)
        full, rest = divmod(n, batch_size)
        return full + (1 if rest >= world and rest > 0 else 0)


class ArraySplit(Split):
    """Samples held in memory (digits, .npz): converted to the model's channels and size per batch."""

    def __init__(self, name: str, x: np.ndarray, y: np.ndarray, channels: int, size: tuple | None):
        self.name, self.x, self.labels = name, x, y
        self.channels, self.size = channels, size

    def load(self, indices, train: bool = False, seed=None):
        x = self.x[np.asarray(indices, dtype=np.int64)]
        if x.shape[1] != self.channels:          # a grayscale source for a model of several channels
            x = np.repeat(x, self.channels, axis=1)
        if self.size is not None and tuple(x.shape[2:]) != tuple(self.size) and len(x):
            import torch
            import torch.nn.functional as F
            t = torch.from_numpy(np.ascontiguousarray(x))
            down = self.size[0] < x.shape[2] or self.size[1] < x.shape[3]
            x = F.interpolate(t, size=tuple(self.size), mode="bilinear", align_corners=False,
                              antialias=down).numpy()
        return np.ascontiguousarray(x, dtype=np.float32), self.labels[np.asarray(indices, dtype=np.int64)]


class FolderSplit(Split):
    """Image files read with PIL, with the standard training or evaluation transforms."""

    def __init__(self, name: str, files: list, labels: np.ndarray, channels: int, size: tuple):
        self.name, self.files, self.labels = name, files, labels
        self.channels, self.size = channels, size

    def _open(self, path: Path):
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(path) as im:
                return im.convert("L" if self.channels == 1 else "RGB")
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
            raise ArchError(f"Cannot read this image ({type(err).__name__}: {err}); remove it from the image "
                            "folder or replace it with a readable image.", Span.of_file(path)) from None

    def load(self, indices, train: bool = False, seed=None):
        from PIL import Image
        h, w = self.size
        out = np.empty((len(indices), self.channels, h, w), dtype=np.float32)
        for k, i in enumerate(indices):
            im = self._open(self.files[i])
            if train:
                rng = _rng("augment", seed, int(i))
                box = _random_resized_crop(im.size, rng)
                im = im.resize((w, h), Image.BILINEAR, box=box)
                if rng.random() < 0.5:
                    im = im.transpose(Image.FLIP_LEFT_RIGHT)
            else:
                im = _resize_center_crop(im, (h, w))
            a = np.asarray(im, dtype=np.float32) / 255.0
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
            out[k] = a
        if self.channels == 3:
            mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
        else:
            mean, std = np.full(self.channels, np.mean(IMAGENET_MEAN)), np.full(self.channels, np.mean(IMAGENET_STD))
        out = (out - mean[:, None, None].astype(np.float32)) / std[:, None, None].astype(np.float32)
        return out, self.labels[np.asarray(indices, dtype=np.int64)]


def _random_resized_crop(size, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """The crop box (left, upper, right, lower) of torchvision's RandomResizedCrop."""
    width, height = size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rng.integers(0, height - h + 1))
            j = int(rng.integers(0, width - w + 1))
            return (j, i, j + w, i + h)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    i, j = (height - h) // 2, (width - w) // 2
    return (j, i, j + w, i + h)


def _resize_center_crop(im, size):
    from PIL import Image
    h, w = size
    short = int(round(min(h, w) / CROP_RATIO))
    iw, ih = im.size
    if iw <= ih:
        nw, nh = short, max(1, int(round(short * ih / iw)))
    else:
        nh, nw = short, max(1, int(round(short * iw / ih)))
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - w) // 2, (nh - h) // 2
    return im.crop((left, top, left + w, top + h))


@dataclass
class Data:
    """What ``--data`` names, ready for one model: its classes and its ``train`` and ``val`` splits."""
    source: str
    kind: str                     # "digits" | "npz" | "folder"
    classes: list
    sample_shape: tuple           # (C, H, W) of the samples as the model receives them
    train: Split
    val: Split
    notes: list = field(default_factory=list)

    def split(self, name: str) -> Split:
        if name == "train":
            return self.train
        if name == "val":
            return self.val
        raise ArchError(f"Unknown split '{name}'; the splits are train and val.")

    def describe(self, split: str = "val") -> str:
        s = self.split(split)
        what = {"train": "training split", "val": "validation split"}[split]
        return f"{self.source} ({what}, {_plural(len(s), 'sample')})"


# ---- the model's side -------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """What the model takes and gives: one NCHW input ``(C, H, W)`` and ``classes`` logits."""
    name: str
    shape: tuple
    classes: int

    @property
    def full_shape(self) -> str:
        return _shape(("N", *self.shape))


def target_of(graph) -> Target:
    """The model's input shape (without the batch) and its number of classes, checked for classification."""
    if len(graph.inputs) != 1:
        raise ArchError(f"Model '{graph.name}' takes {len(graph.inputs)} inputs, but --data gives one tensor per "
                        "sample; train a model with a single image input.")
    if len(graph.outputs) != 1:
        raise ArchError(f"Model '{graph.name}' has {len(graph.outputs)} outputs, but training and evaluation need "
                        "one output of class scores (N, classes).")
    shape = tuple(graph.data(graph.inputs[0])["shape"])
    out = tuple(graph.data(graph.outputs[0])["shape"])
    if len(out) != 2 or not isinstance(out[1], int):
        raise ArchError(f"Model '{graph.name}' outputs {_shape(out)}, but training and evaluation need class "
                        "scores (N, classes); end the model with flatten and a linear layer.")
    return Target(graph.name, shape[1:], out[1])


def _check_shape(target: Target, sample: tuple, where: str, span, resize: int | None, adapts: bool) -> tuple:
    """The (C, H, W) the model will receive from samples of shape ``sample``, or an error."""
    want = target.shape
    if len(sample) != len(want):
        raise ArchError(f"The samples of {where} have shape {_shape(sample)} (rank {len(sample) + 1} with the batch), "
                        f"but model '{target.name}' takes {target.full_shape} (rank {len(want) + 1}); store the "
                        "inputs as NCHW, batch first.", span)
    if len(want) != 3:
        raise ArchError(f"Model '{target.name}' takes {target.full_shape}, but --data gives images (N, C, H, W); "
                        "train a model with an image input.", span)
    c = sample[0]
    if c != want[0] and not (adapts and c == 1):
        raise ArchError(f"The samples of {where} have {_plural(c, 'channel')} (shape {_shape(sample)}), but model "
                        f"'{target.name}' takes {_plural(want[0], 'channel')} {target.full_shape}; convert the data "
                        "or change the model's input.", span)
    size = tuple(sample[1:])
    if resize is not None:
        size = (resize, resize)
    if size != tuple(want[1:]):
        have, need = "x".join(map(str, size)), "x".join(map(str, want[1:]))
        fix = f"use --resize {want[1]}" if want[1] == want[2] else f"resize the data to {need}"
        after = " after --resize" if resize is not None else ""
        raise ArchError(f"The samples of {where} are {have}{after}, but model '{target.name}' takes {need} "
                        f"{target.full_shape}; {fix}.", span)
    return (want[0], *size)


def _check_labels(y: np.ndarray, target: Target, where: str, span) -> None:
    if len(y) == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise ArchError(f"The labels of {where} run from {lo} to {hi}, but labels are class numbers from 0; "
                        "fix the labels.", span)
    if hi >= target.classes:
        raise ArchError(f"The labels of {where} run from {lo} to {hi}, but model '{target.name}' has "
                        f"{target.classes} outputs (classes 0 to {target.classes - 1}); give the model {hi + 1} "
                        f"classes (-D num_classes={hi + 1} for the zoo's specs) or fix the labels.", span)


def _check_resize(resize) -> None:
    if resize is not None and resize < 1:
        raise ArchError(f"--resize must be at least 1, but it is {resize}.")


def open_data(source, target: Target, resize: int | None = None) -> Data:
    """The data ``source`` names (``digits``, an ``.npz`` file or an image folder), checked against the model."""
    _check_resize(resize)
    text = str(source)
    if text == DIGITS:
        return _digits(target, resize)
    path = Path(text)
    if path.is_dir():
        if resize is not None:
            raise ArchError("--resize applies to digits and .npz data; an image folder is always cropped to the "
                            f"model's input size ({'x'.join(map(str, target.shape[1:]))}); drop --resize.")
        return _folder(path, target)
    if path.suffix == ".npz" or path.is_file():
        return _npz(path, target, resize)
    raise ArchError(f"Cannot read the --data source: there is no such file or folder; --data takes {SOURCES}.",
                    Span.of_file(path))


def _digits(target: Target, resize: int | None) -> Data:
    from sklearn.datasets import load_digits
    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    y = bunch.target.astype(np.int64)
    train, val = stratified_split(y)
    mean, std = float(x[train].mean()), float(x[train].std())
    x = (x - mean) / std
    where = "digits"
    shape = _check_shape(target, x.shape[1:], where, None, resize, adapts=True)
    _check_labels(y, target, where, None)
    size = shape[1:]
    classes = [str(c) for c in bunch.target_names]
    return Data(DIGITS, "digits", classes, shape,
                ArraySplit("train", x[train], y[train], shape[0], size),
                ArraySplit("val", x[val], y[val], shape[0], size))


PICKLED = ("it is not a NumPy array file, and reading it as one would mean unpickling it, which archdsl never "
           "does")
OBJECTS = ("a member holds Python objects (an object array), and reading them would mean unpickling, which "
           "archdsl never does")


def read_npz(path, what: str = "--data", takes: str = SOURCES) -> dict:
    """The arrays of the ``.npz`` archive ``path``, every member a plain NumPy array (no pickles); an
    ArchError naming the file otherwise. ``what`` is the option that named it, ``takes`` what it takes."""
    import zipfile
    path = Path(path)
    span = Span.of_file(path)
    if path.is_dir():
        raise ArchError(f"Cannot read the {what} file: this is a directory; {what} takes {takes}.", span)
    if not path.is_file():
        raise ArchError(f"Cannot read the {what} file: there is no such file; {what} takes {takes}.", span)
    if path.suffix != ".npz":
        raise ArchError(f"Cannot read the {what} file: only .npz archives are read here (numpy.savez writes "
                        f"them); {what} takes {takes}.", span)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as err:
        why = (OBJECTS if "Object arrays" in str(err) else PICKLED if "pickle" in str(err) else str(err))
        raise ArchError(f"Cannot read the {what} file as an .npz archive: {why}; write it with numpy.savez.",
                        span) from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise ArchError(f"Cannot read the {what} file as an .npz archive ({err}); write it with numpy.savez.",
                        span) from None
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise ArchError(f"Cannot read the {what} file: its member '{name}' is not a NumPy array (.npy); write "
                            "the file with numpy.savez.", span)
    return arrays


def is_real(dtype) -> bool:
    """Integers or floats: the numbers a model's input may hold (not complex, boolean, text or objects)."""
    return np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)


def check_inputs(x: np.ndarray, name: str, span) -> None:
    """``x`` holds real numbers, all finite: complex, boolean or object arrays and NaN are refused."""
    if not is_real(x.dtype):
        raise ArchError(f"The array '{name}' must hold real numbers, but its dtype is {x.dtype}.", span)
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ArchError(f"The array '{name}' holds {bad:,} NaN or infinite values; clean the data first.", span)


def _npz(path: Path, target: Target, resize: int | None) -> Data:
    span = Span.of_file(path)
    if path.is_file() and path.suffix != ".npz":
        raise ArchError(f"Cannot read the --data file: only .npz archives and image folders are read as data; "
                        f"--data takes {SOURCES}.", span)
    arrays = read_npz(path)
    for name in ("x", "y"):
        if name not in arrays:
            what = "inputs, NCHW" if name == "x" else "integer labels, one per sample"
            raise ArchError(f"The --data file has no array '{name}' ({what}); it holds "
                            f"{', '.join(sorted(arrays)) or 'nothing'}.", span)
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise ArchError("The --data file has only one of 'x_val' and 'y_val'; give both (the validation split) "
                        "or neither (then 20% of each class is held out).", span)

    def pair(xn: str, yn: str):
        x, y = arrays[xn], arrays[yn]
        check_inputs(x, xn, span)
        if x.ndim == 0:
            raise ArchError(f"The array '{xn}' must hold samples with the batch first, but it is a single "
                            "number.", span)
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise ArchError(f"The array '{yn}' must hold one integer label per sample of '{xn}' ({len(x)}), but it "
                            f"has shape {_shape(y.shape)} and dtype {y.dtype}.", span)
        if len(x) == 0:
            raise ArchError(f"The array '{xn}' holds no samples.", span)
        if len(y) and int(y.max()) > np.iinfo(np.int64).max:
            raise ArchError(f"The array '{yn}' holds labels up to {int(y.max())}, which are not class numbers; fix "
                            "the labels.", span)
        return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)

    x, y = pair("x", "y")
    where = f"'{path}'"
    shape = _check_shape(target, x.shape[1:], where, span, resize, adapts=False)
    _check_labels(y, target, where, span)
    if "x_val" in arrays:
        xv, yv = pair("x_val", "y_val")
        if xv.shape[1:] != x.shape[1:]:
            raise ArchError(f"The array 'x_val' has samples of shape {_shape(xv.shape[1:])}, but 'x' has "
                            f"{_shape(x.shape[1:])}; both splits need the same shape.", span)
        _check_labels(yv, target, where, span)
        train = ArraySplit("train", x, y, shape[0], shape[1:])
        val = ArraySplit("val", xv, yv, shape[0], shape[1:])
    else:
        ti, vi = stratified_split(y)
        train = ArraySplit("train", x[ti], y[ti], shape[0], shape[1:])
        val = ArraySplit("val", x[vi], y[vi], shape[0], shape[1:])
    classes = [str(c) for c in range(target.classes)]
    return Data(str(path), "npz", classes, shape, train, val)


def _class_folders(root: Path) -> list:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _scan(root: Path, classes: list | None = None):
    folders = _class_folders(root)
    if not folders:
        raise ArchError("The image folder has no class sub-folders; put the images of each class in a sub-folder "
                        "named after the class (torchvision's ImageFolder layout).", Span.of_file(root))
    names = [f.name for f in folders]
    if classes is not None and names != classes:
        raise ArchError(f"The class sub-folders of this split ({', '.join(names)}) differ from the training "
                        f"split's ({', '.join(classes)}); both splits need the same classes.", Span.of_file(root))
    files, labels = [], []
    for label, folder in enumerate(folders):
        imgs = _images(folder)
        if not imgs:
            raise ArchError(f"The class folder '{folder.name}' holds no images (files ending in "
                            f"{', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder.", Span.of_file(folder))
        files += imgs
        labels += [label] * len(imgs)
    return names, files, np.asarray(labels, dtype=np.int64)


def _folder(root: Path, target: Target) -> Data:
    span = Span.of_file(root)
    c = target.shape[0] if len(target.shape) == 3 else None
    if len(target.shape) != 3 or c not in (1, 3):
        raise ArchError(f"Model '{target.name}' takes {target.full_shape}, but an image folder gives RGB or "
                        "grayscale images (N, 3, H, W) or (N, 1, H, W).", span)
    split_dirs = (root / "train").is_dir() and (root / "val").is_dir()
    if split_dirs:
        classes, files, labels = _scan(root / "train")
        _, vfiles, vlabels = _scan(root / "val", classes)
    else:
        classes, all_files, all_labels = _scan(root)
        ti, vi = stratified_split(all_labels)
        files, labels = [all_files[i] for i in ti], all_labels[ti]
        vfiles, vlabels = [all_files[i] for i in vi], all_labels[vi]
    if len(classes) > target.classes:
        raise ArchError(f"The image folder has {len(classes)} classes, but model '{target.name}' has "
                        f"{target.classes} outputs; compile it with -D num_classes={len(classes)}.", span)
    size = tuple(target.shape[1:])
    return Data(str(root), "folder", classes, (c, *size),
                FolderSplit("train", files, labels, c, size),
                FolderSplit("val", vfiles, vlabels, c, size))
