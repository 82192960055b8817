"""archc train, eval, distill and compress-report on small models and the digits data set."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import archdsl
from archdsl.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = """
model tiny(classes: int = 10, width: int = 32) {
    input x: [1, 8, 8]
    output x -> conv1: conv(width, 3, padding=1, bias=false) -> bn1: bn -> relu
             -> conv2: conv(width * 2, 3, stride=2, padding=1, bias=false) -> bn2: bn -> relu
             -> adaptive_avgpool(1) -> flatten -> fc: linear(classes)
}
"""
NOBN = """
model nobn(classes: int = 10) {
    input x: [1, 8, 8]
    output x -> conv1: conv(8, 3, padding=1) -> relu -> conv2: conv(16, 3, stride=2, padding=1) -> relu
             -> adaptive_avgpool(1) -> flatten -> fc: linear(classes)
}
"""
QUIET = ["--no-progress", "--threads", "1"]


def cli(capsys, *argv) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def cli_error(capsys, *argv) -> str:
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 1
    return capsys.readouterr().err


def weights(path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with the specs and a tiny model trained on digits (5 epochs, about a second)."""
    d = tmp_path_factory.mktemp("train")
    (d / "tiny.arch").write_text(TINY)
    (d / "nobn.arch").write_text(NOBN)
    cwd = os.getcwd()
    os.chdir(d)
    try:
        assert main(["train", "tiny.arch", "--data", "digits", "--epochs", "5", "--batch-size", "32", "-o",
                     "t.pt", "--json", *QUIET]) == 0
    finally:
        os.chdir(cwd)
    return d


@pytest.fixture
def here(work, monkeypatch):
    monkeypatch.chdir(work)
    return work


def test_a_small_model_learns_digits(here, capsys):
    data = json.loads(cli(capsys, "train", "tiny.arch", "--data", "digits", "--epochs", "5", "--batch-size", "32",
                          "-o", "again.pt", "--json", *QUIET))
    assert data["val_accuracy"] >= 0.95 and data["epochs"] == 5 and len(data["history"]) == 5
    assert {"train_loss", "val_accuracy", "epochs", "seconds"} <= set(data)
    assert data["history"][-1]["train_loss"] < data["history"][0]["train_loss"]
    # the checkpoint has the IR's names: it loads with --weights, and every backend agrees on it
    assert sorted(weights("t.pt")) == sorted(archdsl.load(TINY).params)
    assert cli(capsys, "compile", "tiny.arch", "--weights", "t.pt", "--target", "onnx", "-o", "t.onnx") == \
        "wrote t.onnx\n"
    runs = [json.loads(cli(capsys, "eval", *args, "--data", "digits", "--json"))
            for args in (["tiny.arch", "--weights", "t.pt"],
                         ["tiny.arch", "--weights", "t.pt", "--backend", "onnxruntime"], ["t.onnx"])]
    assert {r["correct"] for r in runs} == {runs[0]["correct"]} and runs[0]["samples"] == 359
    assert runs[0]["top1"] >= 0.95 and runs[0]["top5"] >= runs[0]["top1"]
    assert all(abs(r["loss"] - runs[0]["loss"]) < 1e-4 for r in runs)
    text = cli(capsys, "eval", "tiny.arch", "--weights", "t.pt", "--data", "digits").splitlines()
    assert text[0] == "model tiny (tiny.arch, weights t.pt) on torch, cpu: digits (validation split, 359 samples)"
    assert text[1].startswith(f"top-1 accuracy {100 * runs[0]['top1']:.2f}% ({runs[0]['correct']}/359), top-5 ")


def test_training_is_deterministic_and_resumes_exactly(here, capsys):
    common = ["--data", "digits", "--batch-size", "64", "--optimizer", "adamw", *QUIET]
    cli(capsys, "train", "tiny.arch", "-D", "width=8", *common, "--epochs", "2", "-o", "a.pt")
    cli(capsys, "train", "tiny.arch", "-D", "width=8", *common, "--epochs", "2", "-o", "b.pt")
    cli(capsys, "train", "tiny.arch", "-D", "width=8", *common, "--epochs", "1", "-o", "c1.pt")
    # the schedule covers --epochs; resuming with a longer run re-plans it, so compare like with like
    out = cli(capsys, "train", "tiny.arch", "-D", "width=8", *common, "--epochs", "2", "--resume", "c1.pt",
              "-o", "c2.pt")
    assert out.splitlines()[-1].startswith("wrote c2.pt (val accuracy ")
    a, b = weights("a.pt"), weights("b.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load("c2.pt", weights_only=True)["epoch"] == 2
    assert len(torch.load("c2.pt", weights_only=True)["history"]) == 2


def test_resume_is_exact_with_the_same_plan(here):
    """A run stopped after one epoch and resumed from its checkpoint ends with the uninterrupted run's weights."""
    from archdsl.data import open_data, target_of
    from archdsl.train.checkpoint import read_checkpoint, save_checkpoint
    from archdsl.train.loop import TrainConfig, fit
    g = archdsl.load(TINY, width=8)
    data = open_data("digits", target_of(g))
    config = TrainConfig(epochs=2, batch_size=64, progress=False)
    full = archdsl.to_torch(g)
    fit(full, data, config)
    half = archdsl.to_torch(g)
    save_checkpoint("half.pt", half, fit(half, data, config, stop_after=1))
    state = read_checkpoint("half.pt")
    assert state["epoch"] == 1
    resumed = archdsl.to_torch(archdsl.from_torch(g, state["state_dict"]))
    assert len(fit(resumed, data, config, state=state).history) == 2
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fine_tuning_after_passes_flows_back_into_the_ir(here, capsys):
    data = json.loads(cli(capsys, "train", "tiny.arch", "--weights", "t.pt", "--passes", "prune{macs=0.5}",
                          "--data", "digits", "--epochs", "1", "--lr", "0.01", "-o", "p.pt", "--json", *QUIET))
    assert data["spec"] == "p.arch" and data["macs"] < archdsl.load(TINY).param_count() * 64
    pruned = archdsl.load("p.arch")
    assert {k: v.shape for k, v in pruned.params.items()} == {k: tuple(v.shape) for k, v in weights("p.pt").items()}
    ev = json.loads(cli(capsys, "eval", "p.arch", "--weights", "p.pt", "--data", "digits", "--json"))
    assert ev["top1"] == pytest.approx(data["val_accuracy"])


def test_reset_keeps_all_but_the_named_layers(here, capsys):
    cli(capsys, "train", "tiny.arch", "-D", "classes=12", "--weights", "t.pt", "--reset", "fc", "--data", "digits",
        "--epochs", "0", "-o", "r.pt", *QUIET)
    got, base = weights("r.pt"), weights("t.pt")
    assert got["fc.weight"].shape == (12, 64)
    assert all(torch.equal(got[k], base[k]) for k in base if not k.startswith("fc."))
    assert cli_error(capsys, "train", "tiny.arch", "-D", "classes=12", "--weights", "t.pt", "--reset", "fcc",
                     "--data", "digits", "-o", "r.pt", *QUIET) == (
        "error: --reset 'fcc' names no layer with parameters of model 'tiny'; did you mean 'fc'? Give a layer scope "
        "or a pattern such as 'layer4.*'.\n")
    assert cli_error(capsys, "train", "tiny.arch", "--reset", "fc", "--data", "digits", "-o", "r.pt") == (
        "error: --reset names layers to leave out of --weights, but no --weights were given.\n")
    assert cli_error(capsys, "train", "tiny.arch", "--resume", "t.pt", "--passes", "prune{ratio=0.5}",
                     "--data", "digits", "-o", "r.pt") == (
        "error: --resume continues a run as it was and cannot be combined with --weights, --reset or --passes; "
        "after passes, resume with the spec the first run wrote beside its checkpoint (OUT.arch).\n")
    torch.save(weights("t.pt"), "plain.pt")
    np.savez("plain.npz", **{k: v.numpy() for k, v in weights("t.pt").items()})
    for plain in ("plain.pt", "plain.npz"):
        assert cli_error(capsys, "train", "tiny.arch", "--resume", plain, "--data", "digits", "-o", "r.pt") == (
            f"{plain}: error: This file holds weights but no training state (optimizer, schedule, epoch), so "
            "training cannot resume from it; resume from a checkpoint written by archc train, or start from these "
            "weights with --weights.\n")


def test_training_never_writes_over_a_file_it_reads(here, capsys):
    np.savez("d.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    before = {f: (here / f).read_bytes() for f in ("t.pt", "d.npz", "tiny.arch")}
    refused = "error: -o names a file this command reads, which writing would destroy; choose another output name.\n"
    for argv, out in ((["--data", "d.npz", "--epochs", "0"], "d.npz"),
                      (["--data", "digits", "--weights", "t.pt", "--epochs", "0"], "t.pt"),
                      (["--data", "digits", "--resume", "t.pt"], "t.pt"),
                      (["--data", "digits", "--epochs", "0"], "tiny.arch")):
        assert cli_error(capsys, "train", "tiny.arch", *argv, "-o", out, *QUIET) == f"{out}: {refused}"
    for teacher in ("t.pt", "tiny.arch"):
        assert cli_error(capsys, "distill", "tiny.arch", "--teacher", "tiny.arch", "--teacher-weights", "t.pt",
                         "--data", "digits", "--epochs", "1", "-o", teacher, *QUIET) == f"{teacher}: {refused}"
    assert before == {f: (here / f).read_bytes() for f in before}


def test_distillation_with_hints(here, capsys):
    out = cli(capsys, "distill", "tiny.arch", "-D", "width=4", "--teacher", "tiny.arch", "--teacher-weights", "t.pt",
              "--hint", "bn2:bn2", "--hint-epochs", "1", "--epochs", "2", "--data", "digits", "-o", "s.pt", *QUIET)
    lines = out.splitlines()
    assert lines[0].startswith("teacher tiny (tiny.arch): 19.56K parameters, 313.98K MACs, val accuracy ")
    assert lines[1] == ("student tiny (tiny.arch): 438 parameters, 6.99K MACs; hints bn2:bn2; 1 hint epoch, 2 "
                        "epochs of KD (T=4, alpha=0.9)")
    assert lines[2].startswith("hint 1/1: train loss ") and lines[4].startswith("epoch 2/2: ")
    ckpt = torch.load("s.pt", weights_only=True)
    assert ckpt["meta"]["hints"] == ["bn2:bn2"] and [e["stage"] for e in ckpt["meta"]["history"]] == \
        ["hint", "distill", "distill"]
    ev = json.loads(cli(capsys, "eval", "tiny.arch", "-D", "width=4", "--weights", "s.pt", "--data", "digits",
                        "--json"))
    assert ev["top1"] == pytest.approx(ckpt["meta"]["history"][-1]["val_accuracy"])
    assert "train_hint" in ckpt["meta"]["history"][-1]
    # errors
    base = ["distill", "tiny.arch", "-D", "width=4", "--teacher", "tiny.arch", "--teacher-weights", "t.pt",
            "--data", "digits", "-o", "s.pt"]
    assert cli_error(capsys, *base, "--hint", "bn2") == (
        "error: --hint expects TEACHER_SCOPE:STUDENT_SCOPE, such as --hint layer3:layer2, but got 'bn2'.\n")
    assert cli_error(capsys, *base, "--hint", "bn3:bn2") == (
        "error: The teacher model 'tiny' has no scope 'bn3'; did you mean 'bn2'? A hint names a layer, a block "
        "instance or a stage of each model; archc stats lists the scopes.\n")
    assert cli_error(capsys, *base, "--hint", "bn1:bn2") == (
        "error: The hint bn1:bn2 pairs the teacher's (N, 32, 8, 8) with the student's (N, 8, 4, 4); a hint needs "
        "feature maps of the same height and width (N, C, H, W), or features (N, F), so pick blocks at the same "
        "resolution.\n")
    assert cli_error(capsys, *base, "--hint-epochs", "1") == (
        "error: --hint-epochs trains the hint loss alone, but no --hint was given; add --hint "
        "TEACHER_SCOPE:STUDENT_SCOPE or drop --hint-epochs.\n")


def test_torchrun_with_two_processes_matches_one(here, capsys):
    """DDP over 2 CPU processes (gloo), batch 32 each, against one process with batch 64."""
    args = ["train", "nobn.arch", "--data", "digits", "--epochs", "1", "--batch-size", "64", "--lr", "0.05",
            "--json", *QUIET]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "archdsl.cli", *args, "-o", "ddp.pt"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(proc.stdout)
    one = json.loads(cli(capsys, *args, "-o", "one.pt"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-3)
    a, b = weights("one.pt"), weights("ddp.pt")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


GRID = """
[finetune]
epochs = 1
lr = 0.01

[measure]
runs = 3
warmup = 1

[[sweep]]
family = "prune"
passes = "prune{macs=$x}"
values = [0.75, 0.5]

[[point]]
name = "prune 0.5, no fine-tuning"
passes = "prune{macs=0.5}"
family = "prune, not fine-tuned"
finetune = 0

[[point]]
passes = "no-such-pass"
"""


def test_compress_report_writes_the_table_and_the_plots(here, capsys):
    Path("grid.toml").write_text(GRID)
    out = cli(capsys, "compress-report", "tiny.arch", "--weights", "t.pt", "--data", "digits", "--grid", "grid.toml",
              "-o", "report", "--skip-unavailable", "--save-models", *QUIET)
    assert out.splitlines()[-1] == "wrote report/report.md, report/report.json and 6 plots in report"
    files = sorted(p.name for p in Path("report").iterdir())
    assert files == ["accuracy-latency.png", "accuracy-latency.svg", "accuracy-macs.png", "accuracy-macs.svg",
                     "accuracy-size.png", "accuracy-size.svg", "models", "report.json", "report.md"]
    # one pair of files per point: names keep their dots (macs=0.75 and macs=0.5 are two models)
    assert sorted(p.name for p in Path("report/models").iterdir()) == [
        "prune_0.5_no_fine-tuning.arch", "prune_0.5_no_fine-tuning.pt", "prune_macs_0.5.arch", "prune_macs_0.5.pt",
        "prune_macs_0.75.arch", "prune_macs_0.75.pt"]
    assert weights("report/models/prune_macs_0.5.pt")["conv1.weight"].shape[0] < \
        weights("report/models/prune_macs_0.75.pt")["conv1.weight"].shape[0]
    assert Path("report/accuracy-size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in Path("report/accuracy-latency.svg").read_text()
    report = json.loads(Path("report/report.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["baseline", "prune 0.5, no fine-tuning", "prune{macs=0.75}", "prune{macs=0.5}"]
    assert rows["prune{macs=0.5}"]["macs_ratio"] == pytest.approx(0.5, abs=0.02)
    assert rows["prune{macs=0.5}"]["finetune_epochs"] == 1
    assert rows["prune{macs=0.5}"]["top1"] > rows["prune 0.5, no fine-tuning"]["top1"]
    assert rows["prune 0.5, no fine-tuning"]["top1"] == rows["prune{macs=0.5}"]["top1_passes"]
    assert report["skipped"] == [{"name": "no-such-pass", "passes": "no-such-pass",
                                  "reason": "the pass 'no-such-pass' is not available in this archdsl"}]
    table = Path("report/report.md").read_text()
    assert "| prune{macs=0.5} | prune | `prune{macs=0.5}` |" in table and "Not measured: no-such-pass" in table


def test_saved_models_get_a_file_each_and_never_a_hidden_one():
    from archdsl.train.report import model_stem
    taken = set()
    names = ["prune{ratio=0.25}", "prune{ratio=0.5}", "prune{ratio=0.5}", "../../x", "...", "Prune{ratio=0.5}"]
    assert [model_stem(n, taken) for n in names] == ["prune_ratio_0.25", "prune_ratio_0.5", "prune_ratio_0.5-2",
                                                     "x", "point", "Prune_ratio_0.5-3"]


@pytest.mark.parametrize("text, error", [
    ("[[point]]\npasses = 'dce'\nfinetun = 1\n",
     "grid.toml: error: [[point]] 1 has no key 'finetun'; did you mean 'finetune'? Its keys are passes, name, family, "
     "finetune, after.\n"),
    ("[[point]]\npasses = dce\n",
     "grid.toml:2:10: error: The grid is not valid TOML: Invalid value.\n 2 | passes = dce\n   |          ^\n"),
    ("[finetune]\nepochs = 'two'\n[[point]]\npasses = 'dce'\n",
     "grid.toml: error: The key 'epochs' of [finetune] must be an integer, but it is 'two'.\n"),
    ("[measure]\nruns = 0\n", "grid.toml: error: The key 'runs' of [measure] must be at least 1, but it is 0.\n"),
    ("[finetune]\nlr = nan\n[[point]]\npasses = 'dce'\n",
     "grid.toml: error: The key 'lr' of [finetune] must be a positive finite number, but it is nan.\n"),
    ("[[point]]\npasses = 'dce'\nfinetune = -3\n",
     "grid.toml: error: The key 'finetune' of [[point]] 1 (its fine-tuning epochs) cannot be negative, but it is "
     "-3.\n"),
    ("", "grid.toml: error: The grid has no points; add [[point]] tables with passes = \"...\" or a [[sweep]].\n"),
    ("[[sweep]]\npasses = 'prune{ratio=0.5}'\nvalues = [1]\n",
     "grid.toml: error: The passes of [[sweep]] 1 do not mention $x, which each value replaces.\n"),
    ("[[point]]\npasses = 'no-such-pass'\n",
     "<passes>:1:1: error: There is no pass 'no-such-pass'."),
])
def test_grid_errors(here, capsys, text, error):
    Path("grid.toml").write_text(text)
    err = cli_error(capsys, "compress-report", "tiny.arch", "--weights", "t.pt", "--data", "digits", "--grid",
                    "grid.toml", "-o", "report", *QUIET)
    assert err.startswith(error)


def test_bf16_autocast_and_the_cuda_device(here, capsys):
    data = json.loads(cli(capsys, "train", "tiny.arch", "--data", "digits", "--epochs", "2", "--batch-size", "32",
                          "--precision", "bf16", "-o", "bf.pt", "--json", *QUIET))
    assert data["val_accuracy"] > 0.8
    if torch.cuda.is_available():          # a GPU machine: CUDA with its default bf16 autocast
        data = json.loads(cli(capsys, "train", "tiny.arch", "--data", "digits", "--epochs", "2", "--batch-size",
                              "32", "--device", "cuda", "-o", "cuda.pt", "--json", *QUIET))
        assert data["device"] == "cuda" and data["val_accuracy"] > 0.8
    else:
        assert cli_error(capsys, "train", "tiny.arch", "--data", "digits", "--device", "cuda", "-o", "c.pt") == (
            "error: The CUDA device was asked for, but PyTorch finds no CUDA GPU on this machine; use --device "
            "cpu.\n")
