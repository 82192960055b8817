"""`archc check`, `stats`, `ir`: outputs, JSON and exit codes."""
import json
import subprocess
import sys

from archdsl.cli import main

RESNET = "zoo_specs/resnet.arch"


def test_check_reports_the_model(capsys):
    assert main(["check", RESNET, "--model", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == ("zoo_specs/resnet.arch: model 'resnet18' is well-formed: 70 nodes, 11.69M parameters, "
                           "output (N, 1000)")


def test_stats_json_has_totals_and_rows(capsys):
    assert main(["stats", RESNET, "--model", "resnet18", "--json", "-D", "num_classes=10"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "resnet18" and data["outputs"] == [["N", 10]]
    assert data["params"] == sum(r["params"] for r in data["layers"])
    assert data["macs"] == sum(r["macs"] for r in data["layers"])
    assert data["nodes"] == len(data["layers"])
    fc = next(r for r in data["layers"] if r["scope"] == "fc")
    assert fc == {"scope": "fc", "op": "linear", "shape": ["N", 10], "params": 5130, "macs": 5120}


def test_stats_table(capsys):
    assert main(["stats", RESNET, "--model", "resnet50"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["scope", "op", "output", "shape", "params", "MACs"]
    assert out[-3] == ("resnet50: 25,557,032 parameters (25.56M), 4,089,184,256 MACs (4.09G) per sample, "
                       "176 nodes")
    assert out[-2] == "parameters: 25,557,032 trainable, 53,173 in buffers (running statistics); 97.70 MiB"
    assert out[-1].startswith("activations per sample: ")


def test_ir_saves_json_and_npz(tmp_path):
    assert main(["ir", RESNET, "--model", "resnet18", "-o", str(tmp_path / "g.json")]) == 0
    assert (tmp_path / "g.json").exists() and (tmp_path / "g.npz").exists()


def test_errors_exit_1_without_traceback(tmp_path):
    bad = tmp_path / "bad.arch"
    bad.write_text("model m() {\n  input x: [3, 8, 8]\n  output x -> cnov(4, 3)\n}\n")
    proc = subprocess.run([sys.executable, "-m", "archdsl.cli", "check", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0].endswith("bad.arch:3:15: error: Unknown layer 'cnov'; did you mean 'conv'?")


def test_non_arch_files_are_refused_unread(tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT\n")
    assert main(["check", str(secret)]) == 1
    err = capsys.readouterr().err
    assert "Only .arch spec files can be compiled" in err and "TOP-SECRET" not in err


def test_bench_frontend_json(capsys):
    assert main(["bench-frontend", "--models", "resnet.arch:resnet152,densenet.arch:densenet201", "--blocks", "2,4",
                 "--json", "--no-progress"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["spec"] for r in rows] == ["resnet.arch:resnet152", "densenet.arch:densenet201",
                                         "generated(blocks=2)", "generated(blocks=4)"]
    assert [r["nodes"] for r in rows] == [516, 708, 7 * 2 + 5, 7 * 4 + 5]
    assert all(r["ms"] > 0 for r in rows)


def test_bench_frontend_rejects_bad_sizes(capsys):
    assert main(["bench-frontend", "--blocks", "2,x"]) == 1
    assert "--blocks expects comma-separated ints" in capsys.readouterr().err
    assert main(["bench-frontend", "--models", "resnet152"]) == 1
    assert capsys.readouterr().err.strip() == ("error: --models expects comma-separated FILE.arch:MODEL pairs, "
                                               "such as resnet.arch:resnet152, but got 'resnet152'.")
