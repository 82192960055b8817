"""The data sources of --data (archdsl/data.py): digits, .npz files, image folders, and each of their errors."""
import numpy as np
import pytest

import archdsl
from archdsl import ArchError
from archdsl.cli import main
from archdsl.data import Target, open_data, stratified_split, target_of

GRAY8 = Target("m", (1, 8, 8), 10)
RGB8 = Target("m", (3, 8, 8), 10)
TINY = """
model tiny(classes: int = 10, c: int = 1, size: int = 8) {
    input x: [c, size, size]
    output x -> conv1: conv(4, 3, padding=1) -> relu -> adaptive_avgpool(1) -> flatten -> fc: linear(classes)
}
"""


def message(call) -> str:
    with pytest.raises(ArchError) as info:
        call()
    return str(info.value)


# ---- digits ---------------------------------------------------------------------------------

def test_digits_split_is_fixed_stratified_and_standardised():
    a, b = open_data("digits", GRAY8), open_data("digits", GRAY8)
    assert (len(a.train), len(a.val)) == (1438, 359) and a.classes == [str(i) for i in range(10)]
    assert np.array_equal(a.val.labels, b.val.labels) and np.array_equal(a.train.x, b.train.x)
    assert sorted(np.unique(a.val.labels)) == list(range(10))          # every class in validation
    counts = np.bincount(a.val.labels)
    assert counts.min() >= 35 and counts.max() <= 37
    x, y = a.train.arrays()
    assert x.shape == (1438, 1, 8, 8) and x.dtype == np.float32 and y.dtype == np.int64
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-4


def test_digits_adapt_channels_and_resize():
    d = open_data("digits", Target("m", (3, 16, 16), 10), resize=16)
    assert d.sample_shape == (3, 16, 16)
    x, _ = d.val.arrays(4)
    assert x.shape == (4, 3, 16, 16) and np.array_equal(x[:, 0], x[:, 2])


def test_digits_errors_name_the_fix():
    assert message(lambda: open_data("digits", Target("resnet18", (3, 32, 32), 10))) == (
        "error: The samples of digits are 8x8, but model 'resnet18' takes 32x32 (N, 3, 32, 32); use --resize 32.")
    assert message(lambda: open_data("digits", Target("m", (1, 32, 32), 10), resize=16)) == (
        "error: The samples of digits are 16x16 after --resize, but model 'm' takes 32x32 (N, 1, 32, 32); "
        "use --resize 32.")
    assert message(lambda: open_data("digits", Target("m", (1, 8, 8), 8))) == (
        "error: The labels of digits run from 0 to 9, but model 'm' has 8 outputs (classes 0 to 7); give the model "
        "10 classes (-D num_classes=10 for the zoo's specs) or fix the labels.")
    assert message(lambda: open_data("digits", Target("m", (64,), 10))) == (
        "error: The samples of digits have shape (1, 8, 8) (rank 4 with the batch), but model 'm' takes (N, 64) "
        "(rank 2); store the inputs as NCHW, batch first.")
    assert message(lambda: open_data("digits", GRAY8, resize=0)) == "error: --resize must be at least 1, but it is 0."


def test_the_model_must_classify():
    g = archdsl.load("model m() { input x: [1, 8, 8]\n output x -> conv(4, 3) }")
    assert message(lambda: target_of(g)) == (
        "error: Model 'm' outputs (N, 4, 6, 6), but training and evaluation need class scores (N, classes); end the "
        "model with flatten and a linear layer.")
    assert target_of(archdsl.load(TINY)) == Target("tiny", (1, 8, 8), 10)


def test_stratified_split_and_shards():
    y = np.repeat(np.arange(3), 10)
    train, val = stratified_split(y)
    assert len(val) == 6 and np.array_equal(np.bincount(y[val]), [2, 2, 2])
    assert sorted(np.concatenate([train, val])) == list(range(30))
    d = open_data("digits", GRAY8)
    one = [b.y for b in d.train.batches(100, shuffle=True, seed=3, epoch=1)]
    two = [[b.y for b in d.train.batches(100, shuffle=True, seed=3, epoch=1, rank=r, world=2)] for r in (0, 1)]
    assert all(np.array_equal(a, np.concatenate([b, c])) for a, b, c in zip(one, *two))
    other = next(d.train.batches(100, shuffle=True, seed=3, epoch=2)).y
    assert not np.array_equal(one[0], other)
    assert d.train.steps(100) == len(one) == 15


# ---- .npz -------------------------------------------------------------------------------------

def save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_with_and_without_a_validation_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 1, 8, 8)).astype(np.float32), np.arange(50) % 5
    d = open_data(save(tmp_path / "a.npz", x=x, y=y), GRAY8)
    assert (len(d.train), len(d.val)) == (40, 10) and d.kind == "npz"
    got, _ = d.train.arrays()
    assert np.array_equal(got, x[stratified_split(y)[0]])             # used as given
    d = open_data(save(tmp_path / "b.npz", x=x, y=y, x_val=x[:7], y_val=y[:7]), GRAY8)
    assert (len(d.train), len(d.val)) == (50, 7)
    d = open_data(save(tmp_path / "c.npz", x=x, y=y), Target("m", (1, 16, 16), 10), resize=16)
    assert d.val.arrays(2)[0].shape == (2, 1, 16, 16)


def test_npz_errors(tmp_path):
    x, y = np.zeros((10, 1, 8, 8), np.float32), np.arange(10) % 3
    f = tmp_path / "d.npz"
    assert message(lambda: open_data(tmp_path / "none.npz", GRAY8)).endswith(
        "none.npz: error: Cannot read the --data file: there is no such file; --data takes digits, an .npz file "
        "(arrays x and y) or an image folder (one sub-folder per class).")
    assert message(lambda: open_data(tmp_path / "none", GRAY8)).endswith(
        "none: error: Cannot read the --data source: there is no such file or folder; --data takes digits, an .npz "
        "file (arrays x and y) or an image folder (one sub-folder per class).")
    (tmp_path / "d.txt").write_text("1 2 3")
    assert message(lambda: open_data(tmp_path / "d.txt", GRAY8)).endswith(
        "d.txt: error: Cannot read the --data file: only .npz archives and image folders are read as data; --data "
        "takes digits, an .npz file (arrays x and y) or an image folder (one sub-folder per class).")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert "bad.npz: error: Cannot read the --data file as an .npz archive" in message(
        lambda: open_data(tmp_path / "bad.npz", GRAY8))
    save(f, x=x)
    assert message(lambda: open_data(f, GRAY8)) == (
        f"{f}: error: The --data file has no array 'y' (integer labels, one per sample); it holds x.")
    save(f, x=x[:, 0], y=y)
    assert message(lambda: open_data(f, GRAY8)) == (
        f"{f}: error: The samples of '{f}' have shape (8, 8) (rank 3 with the batch), but model 'm' takes "
        "(N, 1, 8, 8) (rank 4); store the inputs as NCHW, batch first.")
    save(f, x=x, y=y)
    assert message(lambda: open_data(f, RGB8)) == (
        f"{f}: error: The samples of '{f}' have 1 channel (shape (1, 8, 8)), but model 'm' takes 3 channels "
        "(N, 3, 8, 8); convert the data or change the model's input.")
    save(f, x=x, y=y + 8)
    assert message(lambda: open_data(f, GRAY8)) == (
        f"{f}: error: The labels of '{f}' run from 8 to 10, but model 'm' has 10 outputs (classes 0 to 9); give "
        "the model 11 classes (-D num_classes=11 for the zoo's specs) or fix the labels.")
    save(f, x=x, y=y - 1)
    assert message(lambda: open_data(f, GRAY8)) == (
        f"{f}: error: The labels of '{f}' run from -1 to 1, but labels are class numbers from 0; fix the labels.")
    save(f, x=x, y=y.astype(np.uint64) + 2 ** 63)
    assert message(lambda: open_data(f, GRAY8)) == (
        f"{f}: error: The array 'y' holds labels up to {2 ** 63 + int(y.max())}, which are not class numbers; fix "
        "the labels.")
    bad = x.copy()
    bad[0, 0, 0, :3] = (np.nan, np.inf, -np.inf)
    save(f, x=bad, y=y)
    assert message(lambda: open_data(f, GRAY8)) == (
        f"{f}: error: The array 'x' holds 3 NaN or infinite values; clean the data first.")
    save(f, x=x, y=y[:5])
    assert message(lambda: open_data(f, GRAY8)) == (
        f"{f}: error: The array 'y' must hold one integer label per sample of 'x' (10), but it has shape (5) and "
        "dtype int64.")
    save(f, x=x, y=y.astype(np.float32))
    assert "must hold one integer label per sample" in message(lambda: open_data(f, GRAY8))
    save(f, x=x, y=y, x_val=x)
    assert message(lambda: open_data(f, GRAY8)) == (
        f"{f}: error: The --data file has only one of 'x_val' and 'y_val'; give both (the validation split) or "
        "neither (then 20% of each class is held out).")


# ---- image folders ---------------------------------------------------------------------------

def images(root, classes=("cat", "dog"), n=5, size=(12, 10)):
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(a).save(root / c / f"{i}.png")
    return root


def test_image_folder_layouts_and_transforms(tmp_path):
    d = open_data(images(tmp_path / "pets"), RGB8)
    assert d.classes == ["cat", "dog"] and (len(d.train), len(d.val)) == (8, 2) and d.kind == "folder"
    x, y = d.val.arrays()
    assert x.shape == (2, 3, 8, 8) and sorted(y) == [0, 1]
    a = next(d.train.batches(8, shuffle=True, seed=1, train=True)).x
    b = next(d.train.batches(8, shuffle=True, seed=1, train=True)).x
    assert a.shape == (8, 3, 8, 8) and np.array_equal(a, b)           # seeded augmentation
    gray = open_data(tmp_path / "pets", GRAY8)
    assert gray.val.arrays()[0].shape == (2, 1, 8, 8)
    images(tmp_path / "split" / "train")
    images(tmp_path / "split" / "val", n=2)
    d = open_data(tmp_path / "split", RGB8)
    assert (len(d.train), len(d.val)) == (10, 4)


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    assert message(lambda: open_data(tmp_path / "empty", RGB8)) == (
        f"{tmp_path / 'empty'}: error: The image folder has no class sub-folders; put the images of each class in "
        "a sub-folder named after the class (torchvision's ImageFolder layout).")
    root = images(tmp_path / "a")
    (root / "eel").mkdir()
    assert message(lambda: open_data(root, RGB8)).startswith(
        f"{root / 'eel'}: error: The class folder 'eel' holds no images (files ending in .jpg, .jpeg, .png")
    (root / "eel" / "0.png").write_bytes(b"garbage")
    d = open_data(root, RGB8)
    bad = [i for i, f in enumerate(d.train.files) if f.parent.name == "eel"] or \
        [i for i, f in enumerate(d.val.files) if f.parent.name == "eel"]
    split = d.train if any(f.parent.name == "eel" for f in d.train.files) else d.val
    assert message(lambda: split.load(bad)).startswith(
        f"{root / 'eel' / '0.png'}: error: Cannot read this image (UnidentifiedImageError")
    assert message(lambda: open_data(root, Target("m", (3, 8, 8), 2))) == (
        f"{root}: error: The image folder has 3 classes, but model 'm' has 2 outputs; compile it with "
        "-D num_classes=3.")
    assert message(lambda: open_data(root, RGB8, resize=8)) == (
        "error: --resize applies to digits and .npz data; an image folder is always cropped to the model's input "
        "size (8x8); drop --resize.")
    assert message(lambda: open_data(root, Target("m", (2, 8, 8), 10))) == (
        f"{root}: error: Model 'm' takes (N, 2, 8, 8), but an image folder gives RGB or grayscale images "
        "(N, 3, H, W) or (N, 1, H, W).")


# ---- on the command line: one line, no traceback -----------------------------------------------

def test_data_errors_on_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.arch").write_text(TINY)
    assert main(["train", "tiny.arch", "--data", "nope.npz", "-o", "t.pt", "--no-progress"]) == 1
    assert capsys.readouterr().err == (
        "nope.npz: error: Cannot read the --data file: there is no such file; --data takes digits, an .npz file "
        "(arrays x and y) or an image folder (one sub-folder per class).\n")
    assert main(["eval", "tiny.arch", "-D", "size=16", "--data", "digits"]) == 1
    assert capsys.readouterr().err == (
        "error: The samples of digits are 8x8, but model 'tiny' takes 16x16 (N, 1, 16, 16); use --resize 16.\n")
