"""``archc run`` and ``archc bench``: what they print and compute (never how fast: no timed assertions)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("tqdm")

import archdsl  # noqa: E402
from archdsl.backends.onnx_export import onnx_bytes  # noqa: E402
from archdsl.bench.suite import LABELS, RATIO_LABELS, format_report  # noqa: E402
from archdsl.bench.timing import percentile, summary  # noqa: E402
from archdsl.cli import main  # noqa: E402
from archdsl.cli.run import top_values  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = Path(__file__).resolve().parent / "specs"
OPS = str(SPECS / "onnx_ops.arch")
STN = str(SPECS / "stn_small.arch")
RESNET = str(ROOT / "zoo_specs" / "resnet.arch")
CUDA = torch.cuda.is_available()


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def reference(path, model, x):
    g = archdsl.load(path, model)
    with torch.no_grad():
        return archdsl.to_torch(g).eval()(torch.from_numpy(x)).numpy()


def tops(out: str) -> list:
    line = next(l for l in out.splitlines() if "top " in l)
    return [(int(i), float(v)) for i, v in re.findall(r"\[(\d+)\] (\S+?)(?:,|$)", line)]


# ---- archc run ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_run_prints_shape_top_values_and_latency(capsys, backend):
    rc, out, err = run_cli(capsys, "run", STN, "--model", "stn_small", "--backend", backend, "--batch", "3",
                           "--runs", "4", "--warmup", "1", "--top", "3")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"model stn_small ({STN}) on {backend}, cpu (")
    assert lines[1] == "input x: (3, 1, 28, 28) (standard normal, seed 0)"
    assert lines[2] == "output: (3, 10) float32"
    assert re.fullmatch(r"latency over 4 runs after 1 warm-up: median [\d.]+ ms, p90 [\d.]+ ms, mean [\d.]+ ms, "
                        r"min [\d.]+ ms, max [\d.]+ ms", lines[4])
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28), dtype=np.float32)
    want = reference(STN, "stn_small", x)[0]
    got = tops(out)
    assert [i for i, _ in got] == list(np.argsort(-want, kind="stable")[:3])
    assert np.allclose([v for _, v in got], np.sort(want)[::-1][:3], atol=1e-4)


def test_run_backends_agree(capsys):
    outs = [run_cli(capsys, "run", RESNET, "--model", "resnet18", "-D", "size=32", "--backend", b, "--runs", "1",
                    "--warmup", "0") for b in ("torch", "onnxruntime")]
    assert all(rc == 0 for rc, _, _ in outs)
    (_, a, _), (_, b, _) = outs
    assert [i for i, _ in tops(a)] == [i for i, _ in tops(b)]
    assert np.allclose([v for _, v in tops(a)], [v for _, v in tops(b)], atol=1e-4)


@pytest.mark.parametrize("with_batch", [False, True])
def test_run_reads_inputs_from_npy(capsys, tmp_path, with_batch):
    x = np.random.default_rng(5).standard_normal((2, 1, 28, 28), dtype=np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x if with_batch else x[0])
    rc, out, err = run_cli(capsys, "run", STN, "--model", "stn_small", "--backend", "onnxruntime",
                           "--input", str(path), "--runs", "1")
    assert rc == 0, err
    assert f"input x: ({2 if with_batch else 1}, 1, 28, 28) ({path})" in out
    want = reference(STN, "stn_small", x if with_batch else x[:1])[0]
    assert [i for i, _ in tops(out)] == list(np.argsort(-want, kind="stable")[:5])


def test_run_input_errors(capsys, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 3, 28, 28), np.float32))
    rc, _, err = run_cli(capsys, "run", STN, "--model", "stn_small", "--input", str(bad))
    assert rc == 1
    assert err.strip() == (f"{bad}: error: This file holds an array of shape (1, 3, 28, 28), but input 'x' of "
                           "model 'stn_small' takes (N, 1, 28, 28).")
    rc, _, err = run_cli(capsys, "run", OPS, "--model", "two_outputs", "--input", str(bad))
    assert rc == 1
    assert err.strip() == "error: Model 'two_outputs' takes 2 inputs (x, y), but 1 --input file was given."
    rc, _, err = run_cli(capsys, "run", STN, "--model", "stn_small", "--input", str(tmp_path / "missing.npy"))
    assert rc == 1 and err.strip() == f"{tmp_path / 'missing.npy'}: error: Cannot read this input file: it does not exist."
    (tmp_path / "text.npy").write_text("hello")
    rc, _, err = run_cli(capsys, "run", STN, "--model", "stn_small", "--input", str(tmp_path / "text.npy"))
    assert rc == 1 and err.strip() == (f"{tmp_path / 'text.npy'}: error: Cannot read this file: it is not a NumPy "
                                       "array file, and reading it as one would mean unpickling it, which archdsl "
                                       "never does; save inputs with numpy.save (.npy) or numpy.savez (.npz).")
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((2, 1, 28, 28), np.float32))
    rc, _, err = run_cli(capsys, "run", STN, "--model", "stn_small", "--input", str(good), "--batch", "3")
    assert rc == 1
    assert err.strip() == f"{good}: error: This file holds a batch of 2, but --batch 3 was asked for."
    rc, _, err = run_cli(capsys, "run", STN, "--model", "stn_small", "--batch", "0")
    assert rc == 1 and err.strip() == "error: --batch must be at least 1, but it is 0."


@pytest.mark.parametrize("backend,detail", [("torch", "PyTorch"), ("onnxruntime", "CPUExecutionProvider")])
def test_run_threads(capsys, backend, detail):
    saved = torch.get_num_threads()
    try:
        rc, out, err = run_cli(capsys, "run", STN, "--model", "stn_small", "--backend", backend, "--threads", "1",
                               "--runs", "1")
    finally:
        torch.set_num_threads(saved)
    assert rc == 0, err
    assert re.search(rf"\(.*{detail}.*, 1 thread\)$", out.splitlines()[0])
    rc, _, err = run_cli(capsys, "run", STN, "--model", "stn_small", "--threads", "0")
    assert rc == 1 and err.strip() == "error: --threads must be at least 1, but it is 0."


def test_run_several_outputs(capsys):
    rc, out, err = run_cli(capsys, "run", OPS, "--model", "two_outputs", "--backend", "onnxruntime", "--runs", "1")
    assert rc == 0, err
    assert "output 0: (1, 4) float32" in out and "output 1: (1, 4, 6, 6) float32" in out
    assert "output 2: (1, 3, 8, 8) float32" in out
    assert "input y: (1, 3, 8, 8)" in out


@pytest.mark.skipif(CUDA, reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_run_cuda_without_gpu_is_a_clear_error(capsys, backend):
    rc, _, err = run_cli(capsys, "run", STN, "--model", "stn_small", "--backend", backend, "--device", "cuda")
    assert rc == 1
    if backend == "torch" or "CUDAExecutionProvider" not in ort.get_available_providers():
        assert err.startswith("error: The CUDA device was asked for, but ")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_run_on_cuda(capsys):
    rc, out, err = run_cli(capsys, "run", STN, "--model", "stn_small", "--device", "cuda", "--runs", "2")
    assert rc == 0, err
    assert "on torch, cuda" in out and "output: (1, 10) float32" in out


# ---- archc bench -------------------------------------------------------------------------------

def test_bench_json_without_twin(capsys):
    saved = torch.get_num_threads()
    try:
        rc, out, err = run_cli(capsys, "bench", STN, "--model", "stn_small", "--runs", "2", "--warmup", "0",
                               "--compile-repeat", "1", "--json", "--batch", "2", "--threads", "1")
    finally:
        torch.set_num_threads(saved)
    assert rc == 0, err
    res = json.loads(out)
    assert res["model"] == "stn_small" and res["batch"] == 2 and res["device"] == "cpu" and res["opset"] == 20
    assert res["threads"] == 1 and all(st["detail"].endswith(", 1 thread") for st in res["latency"].values())
    assert res["input_shapes"] == [[2, 1, 28, 28]]
    assert {"text_to_ir", "init_weights", "ir_to_torch", "ir_to_onnx", "onnxruntime_session"} <= set(res["compile_ms"])
    assert {"torch", "onnxruntime"} <= set(res["latency"])
    for st in res["latency"].values():
        assert st["runs"] == 2 and 0 < st["min_ms"] <= st["median_ms"] <= st["p90_ms"] <= st["max_ms"]
    assert res["latency"]["torch"]["max_abs_diff_vs_torch"] is None
    assert res["latency"]["onnxruntime"]["max_abs_diff_vs_torch"] < 1e-4
    assert res["skipped"]["torchvision"] == "torchvision has no model named 'stn_small'"
    assert "onnxruntime_latency_vs_torch" in res["ratios"]
    assert res["machine"]["cores"] >= 1 and res["machine"]["cpu"]
    assert "isa" in res["machine"] and res["machine"]["OMP_WAIT_POLICY"] == os.environ["OMP_WAIT_POLICY"]
    assert "archc bench" in err            # the progress bar, on standard error


def test_every_onnxruntime_timing_session_lets_idle_threads_sleep():
    """The benchmarks and `archc run` time onnxruntime on shared machines: no spinning workers."""
    from archdsl.bench.runners import OrtRunner
    from archdsl.cli.eval import ort_session
    model = onnx_bytes(archdsl.load(STN, model="stn_small"))
    for session in (OrtRunner(model, "cpu", threads=2).session, ort_session(model, "cpu", 2)):
        opts = session.get_session_options()
        assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
        for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            assert opts.get_session_config_entry(key) == "0"


def test_bench_report_names_the_isa_and_the_wait_policy(capsys, monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    rc, out, err = run_cli(capsys, "bench", STN, "--model", "stn_small", "--runs", "1", "--warmup", "0",
                           "--compile-repeat", "1", "--no-progress", "--no-twin")
    assert rc == 0, err
    machine_lines = out.splitlines()[1:3]
    assert machine_lines[1].startswith("ISA ") and "(int8: " in machine_lines[1]
    if os.environ["OMP_WAIT_POLICY"] == "PASSIVE":
        assert "idle threads sleep (OMP_WAIT_POLICY=PASSIVE, onnxruntime allow_spinning=0)" in machine_lines[1]


def test_spin_sets_gomp_spincount_and_the_reports_name_it(capsys, monkeypatch):
    monkeypatch.setenv("GOMP_SPINCOUNT", "1")          # restored (removed) after the test
    rc, out, err = run_cli(capsys, "run", STN, "--model", "stn_small", "--runs", "1", "--warmup", "0",
                           "--threads", "1", "--spin", "5000")
    assert rc == 0, err
    assert os.environ["GOMP_SPINCOUNT"] == "5000"
    assert re.search(r"on torch, cpu \(PyTorch \S+, 1 thread, GOMP_SPINCOUNT=5000\)$", out.splitlines()[0])
    rc, out, err = run_cli(capsys, "bench", STN, "--model", "stn_small", "--runs", "1", "--warmup", "0",
                           "--compile-repeat", "1", "--no-progress", "--no-twin", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["machine"]["GOMP_SPINCOUNT"] == "5000"
    assert all(st["detail"].endswith("GOMP_SPINCOUNT=5000") for k, st in res["latency"].items() if k == "torch")
    from archdsl.bench.host import waits
    assert waits(res["machine"]) == f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, GOMP_SPINCOUNT=5000"
    assert waits({"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}) == "OMP_WAIT_POLICY=PASSIVE"


@pytest.mark.parametrize("command", ["run", "bench", "bench-prune", "bench-quant"])
@pytest.mark.parametrize("value, message", [
    ("-1", "a spin count is from 0 to 10,000,000,000, but it is -1"),
    ("1e4", "expected a whole number of spins, not '1e4'"),
])
def test_spin_refuses_what_is_not_a_spin_count(capsys, command, value, message):
    argv = [command] + ([STN] if command in ("run", "bench") else []) + ["--spin", value]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"archc {command}: error: argument --spin: {message}"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir() or (os.cpu_count() or 1) < 2,
                    reason="reads the worker threads' CPU time from /proc; needs two cores")
def test_spin_reaches_pytorchs_openmp_runtime(tmp_path):
    """With a long spin an idle worker keeps polling through the gaps between operators (CPU time it burns);
    with none it sleeps at once. The setting must reach libgomp, which reads it when torch loads."""
    import subprocess
    import sys
    script = tmp_path / "spin.py"
    script.write_text(
        "import glob, os, sys, time\n"
        "from archdsl.bench.host import passive_waits\n"
        "passive_waits(int(sys.argv[1]))\n"
        "import torch\n"
        "torch.set_num_threads(2)\n"
        "x = torch.randn(64, 56, 56)\n"
        "def workers():\n"
        "    me, t = os.getpid(), 0\n"
        "    for d in glob.glob(f'/proc/{me}/task/*'):\n"
        "        if d.rsplit('/', 1)[1] != str(me):\n"
        "            f = open(d + '/stat').read().rsplit(')', 1)[1].split()\n"
        "            t += int(f[11]) + int(f[12])\n"
        "    return t / os.sysconf('SC_CLK_TCK')\n"
        "torch.relu(x)\n"
        "c = workers()\n"
        "for _ in range(20):\n"
        "    torch.relu(x)\n"
        "    time.sleep(0.02)\n"
        "print(workers() - c)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    burnt = {}
    for spins in (0, 10 ** 10):
        out = subprocess.run([sys.executable, str(script), str(spins)], env=env, capture_output=True, text=True,
                             cwd=ROOT, check=True).stdout
        burnt[spins] = float(out.split()[-1])
    assert burnt[0] < 0.1 and burnt[10 ** 10] > 0.2, burnt    # 20 gaps of 20 ms: about 0 s against 0.4 s


def test_bench_with_torchvision_twin(capsys):
    rc, out, err = run_cli(capsys, "bench", RESNET, "--model", "resnet18", "-D", "size=32", "--runs", "1",
                           "--warmup", "0", "--compile-repeat", "1", "--no-progress", "--json")
    assert rc == 0, err
    assert err == ""
    res = json.loads(out)
    assert res["twin"] == {"name": "resnet18",
                           "note": "same parameter names and shapes; the spec's weights are loaded into it"}
    r, c, lat = res["ratios"], res["compile_ms"], res["latency"]
    assert {"torch", "onnxruntime", "torchvision", "torchvision_onnx_export"} <= set(lat)
    assert {"torch_onnx_export", "twin_onnxruntime_session"} <= set(c)
    assert r["onnx_emit_speedup_vs_torch_onnx_export"] == pytest.approx(c["torch_onnx_export"] / c["ir_to_onnx"])
    assert r["onnxruntime_latency_vs_exported_twin"] == pytest.approx(
        lat["onnxruntime"]["median_ms"] / lat["torchvision_onnx_export"]["median_ms"])
    assert r["torch_latency_vs_torchvision"] == pytest.approx(
        lat["torch"]["median_ms"] / lat["torchvision"]["median_ms"])
    # the twin runs the spec's weights: every backend computes the same function
    for key, st in lat.items():
        if key != "torch":
            assert st["max_abs_diff_vs_torch"] < 1e-4, key
    text = format_report(res)
    assert text.startswith("archc bench: resnet18 (")
    for key in list(c) + list(lat):
        assert LABELS[key] in text, key
    for key in r:
        assert RATIO_LABELS[key] in text, key
    assert "torchvision twin resnet18: same parameter names and shapes" in text


def test_bench_channels_last_runs_every_pytorch_row_in_nhwc_and_they_agree(capsys):
    rc, out, err = run_cli(capsys, "bench", RESNET, "--model", "resnet18", "-D", "size=32", "--passes", "fold-bn",
                           "--runs", "1", "--warmup", "0", "--compile-repeat", "1", "--no-progress", "--json",
                           "--channels-last")
    assert rc == 0, err
    lat = json.loads(out)["latency"]
    for key in ("torch", "torch_source", "torch_no_passes", "torchvision"):
        assert lat[key]["detail"].endswith(", channels-last"), key
    assert "channels-last" not in lat["onnxruntime"]["detail"]
    for key, st in lat.items():
        if key != "torch":
            assert st["max_abs_diff_vs_torch"] < 1e-4, key


def test_bench_passes_measures_both_graphs(capsys):
    pipeline = pytest.importorskip("archdsl.passes.pipeline")
    del pipeline
    rc, out, err = run_cli(capsys, "bench", RESNET, "--model", "resnet18", "-D", "size=32", "--passes", "fold-bn",
                           "--runs", "1", "--warmup", "0", "--compile-repeat", "1", "--no-progress", "--json",
                           "--no-twin")
    assert rc == 0, err
    res = json.loads(out)
    assert res["passes"] == "fold-bn" and "passes" in res["compile_ms"]
    assert {"torch", "onnxruntime", "torch_no_passes", "onnxruntime_no_passes"} <= set(res["latency"])
    assert {"passes_speedup_torch", "passes_speedup_onnxruntime"} <= set(res["ratios"])
    # folding batch norm keeps the function (up to rounding)
    assert res["latency"]["torch_no_passes"]["max_abs_diff_vs_torch"] < 1e-4
    assert res["skipped"]["torchvision"] == "--no-twin"


def test_bench_errors(capsys):
    rc, _, err = run_cli(capsys, "bench", STN, "--model", "stn_small", "--runs", "0", "--no-progress")
    assert rc == 1 and err.strip() == "error: --runs must be at least 1, but it is 0."
    rc, _, err = run_cli(capsys, "bench", STN, "--model", "stn_small", "--opset", "19", "--no-progress",
                         "--runs", "1", "--compile-repeat", "1", "--warmup", "0")
    assert rc == 1 and "error: 'affine_grid' needs ONNX opset 20 or newer" in err


# ---- statistics ------------------------------------------------------------------------------

def test_statistics():
    assert percentile([4, 1, 3, 2], 0.5) == 2.5
    assert percentile(range(11), 0.9) == 9.0
    assert percentile([7], 0.9) == 7
    s = summary([0.001, 0.003, 0.002])
    assert s == {"median_ms": 2.0, "p90_ms": pytest.approx(2.8), "mean_ms": pytest.approx(2.0), "min_ms": 1.0,
                 "max_ms": 3.0, "runs": 3}


def test_top_values():
    a = np.array([[0.1, 0.5, -1.0, 0.5], [9, 9, 9, 9]], np.float32)
    assert top_values(a, 3) == [(1, 0.5), (3, 0.5), (0, pytest.approx(0.1))]
    assert top_values(a, 10) == top_values(a, 4)


# ---- every zoo model through `archc run` ----------------------------------------------------------

def _zoo_runs():
    from zoo import ZOO, zoo_models
    out = []
    for file, model in zoo_models():
        (m,) = [m for m in archdsl.list_models(ZOO / file) if m.name == model]
        out.append((ZOO / file, model, "size" in m.params))
    return out


@pytest.mark.parametrize("path,model,sized", _zoo_runs(), ids=lambda x: getattr(x, "name", x))
def test_run_every_zoo_model_on_both_backends(capsys, path, model, sized):
    from zoo import small_size
    size = ["-D", f"size={small_size(path)}"] if sized else []
    outputs = []
    for backend in ("torch", "onnxruntime"):
        rc, out, err = run_cli(capsys, "run", str(path), "--model", model, *size, "--backend", backend,
                               "--runs", "1", "--warmup", "0", "--top", "3")
        assert rc == 0, err
        assert out.splitlines()[2].startswith("output: (1, ")
        outputs.append(tops(out))
    (i_t, v_t), (i_o, v_o) = outputs[0][0], outputs[1][0]
    assert i_t == i_o and abs(v_t - v_o) <= 1e-4 * max(1.0, abs(v_t))


def test_bench_prune_reports_an_anchor_that_fails_instead_of_crashing():
    from archdsl.bench.prune import format_markdown
    machine = {"cpu": "cpu", "cores": 2, "isa": [], "threads": 2, "OMP_WAIT_POLICY": "PASSIVE", "torch": "t",
               "torchvision": "v", "torch-pruning": "p", "onnxruntime": "o", "date": "d", "date_end": "e",
               "loadavg_start": None, "loadavg_end": None}
    row = {"model": "shufflenet_v2_x1_0", "archdsl": {"macs_ratio": 0.47, "params_ratio": 0.44},
           "torch-pruning": {"failed": "ZeroDivisionError: integer division or modulo by zero"}, "latency": {}}
    text = format_markdown({"machine": machine, "batches": [1], "runs": 1, "warmup": 0, "passes": "prune",
                            "rows": [row]})
    assert "| shufflenet_v2_x1_0 | torch-pruning | fails: ZeroDivisionError: integer division or modulo by zero |" \
        in text
    assert "| shufflenet_v2_x1_0 | archdsl | 0.47 | 0.44 |" in text


def test_the_twin_of_a_model_whose_torchvision_module_checks_state_dict_versions():
    """torchvision's MNASNet refuses a state dict without its version metadata: the twin gets the spec's
    weights with torchvision's own metadata, and computes the spec's outputs."""
    from archdsl.bench.twins import find_twin
    from zoo import load_small
    g = load_small("mnasnet.arch", "mnasnet0_5")
    twin, note = find_twin(g)
    assert twin is not None and note.startswith("same parameter names"), note
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (twin(x) - archdsl.to_torch(g).eval()(x)).abs().max().item() <= 1e-5


SMALL_CNN = """model m() {
    input x: [8, 16, 16]
    output x -> conv(32, 3, padding=1) -> bn -> relu -> conv(32, 3, padding=1) -> relu
        -> adaptive_avgpool(1) -> flatten -> linear(10)
}
"""


def test_the_lowrank_bench_times_eager_in_both_memory_orders_and_they_compute_the_same():
    from archdsl.bench.lowrank import BACKENDS, measure
    from archdsl.passes.pipeline import run_pipeline
    from archdsl.backends.onnx_export import onnx_bytes
    g = archdsl.load(SMALL_CNN)
    lr = run_pipeline(g, "lowrank{ratio=0.5,min_gain=1.0}").graph
    built = {k: (v, archdsl.to_torch(v).eval(), onnx_bytes(v)) for k, v in (("base", g), ("lowrank", lr))}
    row = {"model": "m", "variants": {"lowrank": {"macs_ratio": 0.6}}}
    measure(row, built, g, (1, 2), 0, 1, 1, lambda text: None)
    assert set(row["latency"]) == set(BACKENDS)
    for backend in BACKENDS:
        for batch in ("1", "2"):
            st = row["latency"][backend]["lowrank"][batch]
            assert st["median_ms"] > 0
            if backend != "eager":                       # the same network: the same numbers
                assert st["max_abs_diff_vs_eager"] <= 1e-4
            assert row["variants"]["lowrank"]["measured_over_ideal"][backend][batch] == pytest.approx(
                0.6 * row["variants"]["lowrank"]["speedup"][backend][batch])


def test_the_lowrank_bench_times_only_the_backends_asked_for_and_checks_them_against_eager():
    from archdsl.bench.lowrank import measure
    from archdsl.passes.pipeline import run_pipeline
    from archdsl.backends.onnx_export import onnx_bytes
    g = archdsl.load(SMALL_CNN)
    lr = run_pipeline(g, "lowrank{ratio=0.5,min_gain=1.0}").graph
    built = {k: (v, archdsl.to_torch(v).eval(), onnx_bytes(v)) for k, v in (("base", g), ("lowrank", lr))}
    row = {"model": "m", "variants": {"lowrank": {"macs_ratio": 0.6}}}
    measure(row, built, g, (1,), 0, 1, 1, lambda text: None, backends=("onnxruntime",))
    assert list(row["latency"]) == ["onnxruntime"]
    assert row["latency"]["onnxruntime"]["lowrank"]["1"]["max_abs_diff_vs_eager"] <= 1e-4
    assert list(row["variants"]["lowrank"]["speedup"]) == ["onnxruntime"]


def test_a_channels_last_runner_converts_the_weights_and_the_inputs_and_agrees():
    from archdsl.bench.runners import TorchRunner, random_inputs
    g = archdsl.load(SMALL_CNN)
    x = random_inputs(g, 2)
    plain, nhwc = TorchRunner(archdsl.to_torch(g)), TorchRunner(archdsl.to_torch(g), channels_last=True)
    for r in (plain, nhwc):
        r.prepare(x)
        r.step()
    assert nhwc._inputs[0].is_contiguous(memory_format=torch.channels_last)
    conv = next(m for m in nhwc.module.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and "channels-last" in nhwc.detail
    assert np.abs(plain.outputs()[0] - nhwc.outputs()[0]).max() <= 1e-5


def test_the_lowrank_bench_plot_is_deterministic(tmp_path):
    pytest.importorskip("matplotlib")
    from archdsl.bench.lowrank import plot
    variants = {k: {"passes": k, "macs_ratio": 0.5,
                    "speedup": {"eager": {"1": s, "8": s - 0.2}, "onnxruntime": {"1": s + 0.1, "8": s}}}
                for k, s in (("lowrank", 1.8), ("lowrank-macs", 1.5), ("uniform", 1.3), ("tltorch", 0.6))}
    res = {"batches": [1, 8], "backends": ["eager", "onnxruntime"], "target": 0.5,
           "rows": [{"model": "vgg16", "variants": variants}]}
    plot(res, tmp_path / "a.svg")
    plot(res, tmp_path / "b.svg")
    a = (tmp_path / "a.svg").read_bytes()
    assert a == (tmp_path / "b.svg").read_bytes() and b"goal for VGG-16" in a and b"ideal (2.00x" in a


def test_the_prune_bench_times_channels_last_beside_nchw_and_onnxruntime():
    from archdsl.backends.onnx_export import onnx_bytes
    from archdsl.bench.prune import BACKENDS, format_markdown, measure, ort_runner
    from archdsl.bench.runners import TorchRunner
    from archdsl.passes.pipeline import run_pipeline
    g = archdsl.load(SMALL_CNN)
    pruned = run_pipeline(g, "prune{ratio=0.5}").graph
    graphs = {"base": g, "archdsl": pruned}
    runners = {"eager": {k: TorchRunner(archdsl.to_torch(v)) for k, v in graphs.items()},
               "eager channels-last": {k: TorchRunner(archdsl.to_torch(v), channels_last=True)
                                       for k, v in graphs.items()},
               "onnxruntime": {k: ort_runner(onnx_bytes(v), 1, k) for k, v in graphs.items()}}
    row = {"model": "m", "archdsl": {"macs_ratio": 0.3, "params_ratio": 0.3}, "torch-pruning": {"failed": "x"}}
    measure(row, runners, g, (1,), 0, 1)
    for backend in BACKENDS:
        assert row["archdsl"]["measured_over_ideal"][backend]["1"] == pytest.approx(
            0.3 * row["archdsl"]["speedup"][backend]["1"])
        if backend != "eager":                    # the same network as eager NCHW computes the same
            assert row["latency"][backend]["archdsl"]["1"]["max_rel_diff"] <= 1e-4
    text = format_markdown({"machine": {"cpu": "c", "cores": 2, "isa": [], "threads": 1, "OMP_WAIT_POLICY": "P",
                                        "torch": "t", "torchvision": "v", "torch-pruning": "p", "onnxruntime": "o",
                                        "date": "d", "date_end": "e", "loadavg_start": None, "loadavg_end": None},
                            "batches": [1], "backends": list(BACKENDS), "runs": 1, "warmup": 0, "passes": "prune",
                            "rows": [row]})
    assert "eager channels-last speed-up b1" in text and "| m | 1 | eager channels-last |" in text


def test_the_prune_bench_checks_onnxruntime_alone_against_untimed_eager_runs():
    from archdsl.backends.onnx_export import onnx_bytes
    from archdsl.bench.prune import measure, ort_runner
    from archdsl.bench.runners import TorchRunner
    from archdsl.passes.pipeline import run_pipeline
    g = archdsl.load(SMALL_CNN)
    graphs = {"base": g, "archdsl": run_pipeline(g, "prune{ratio=0.5}").graph}
    eager = {k: TorchRunner(archdsl.to_torch(v)) for k, v in graphs.items()}
    runners = {"onnxruntime": {k: ort_runner(onnx_bytes(v), 1, k) for k, v in graphs.items()}}
    row = {"model": "m", "archdsl": {"macs_ratio": 0.3, "params_ratio": 0.3}, "torch-pruning": {"failed": "x"}}
    measure(row, runners, g, (1,), 0, 1, references=eager)
    assert list(row["latency"]) == ["onnxruntime"]
    for name in graphs:
        assert row["latency"]["onnxruntime"][name]["1"]["max_rel_diff"] <= 1e-4
    # a wrong reference shows: the pruned network's outputs against the unpruned one's
    measure(row, runners, g, (1,), 0, 1, references={"base": eager["base"], "archdsl": eager["base"]})
    assert row["latency"]["onnxruntime"]["archdsl"]["1"]["max_rel_diff"] > 1e-3


def test_bench_prune_refuses_an_unknown_backend_with_a_diagnostic(capsys):
    rc, out, err = run_cli(capsys, "bench-prune", "--backends", "eager,gpu")
    assert rc == 1 and out == ""
    assert err.strip() == ("error: --backends takes some of eager, eager channels-last, onnxruntime, separated by "
                           "commas, but got 'eager,gpu'.")
