"""The files the commands read and write: output paths, saved IRs as inputs, compiled models as inputs,
and the small workflow commands (``--version``, ``models``, ``stats --depth``).

Every problem is a file-level diagnostic naming the file (``FILE: error: ...``), never a traceback.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import archdsl
from archdsl.cli import main
from archdsl.ir.stats import layer_stats, memory, rollup

SPEC = """model m(n: int = 8) {
    input x: [3, 16, 16]
    h = x -> stem: [conv(n, 3, padding=1, bias=false) -> bn -> relu]
    output h -> head: [adaptive_avgpool(1) -> flatten -> linear(10)]
}
"""


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "m.arch"
    path.write_text(SPEC)
    return path


# ---- output paths ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["compile", "--target", "onnx"], ["compile", "--target", "torch-src"],
                                     ["compile", "--target", "arch"], ["viz"]])
def test_output_into_a_missing_directory_is_an_error_naming_it(capsys, spec, tmp_path, command):
    out = tmp_path / "missing" / ("x.arch" if "arch" in command else "x.onnx")
    rc, _, err = cli(capsys, command[0], spec, *command[1:], "-o", out)
    assert rc == 1
    assert err.strip() == (f"{out}: error: Cannot write here: the directory '{out.parent}' does not exist; create "
                           "it first or give -o a path in an existing directory.")


def test_output_onto_a_directory_is_an_error(capsys, spec, tmp_path):
    rc, _, err = cli(capsys, "compile", spec, "--target", "onnx", "-o", tmp_path)
    assert rc == 1
    assert err.strip() == (f"{tmp_path}: error: -o names a directory; give the name of a file to write, such as "
                           f"{tmp_path / 'model.out'}.")


def test_output_over_the_input_is_refused_and_the_spec_survives(capsys, spec):
    rc, _, err = cli(capsys, "compile", spec, "--target", "arch", "-o", spec)
    assert rc == 1
    assert err.strip() == (f"{spec}: error: -o names a file this command reads, which writing would destroy; "
                           "choose another output name.")
    assert spec.read_text() == SPEC


def test_weights_written_beside_the_source_never_replace_the_weights_read(capsys, spec, tmp_path):
    import torch
    weights = tmp_path / "model.pt"
    g = archdsl.load(spec)
    torch.save(archdsl.to_torch(g).state_dict(), weights)
    before = weights.read_bytes()
    rc, _, err = cli(capsys, "compile", spec, "--target", "torch-src", "--weights", weights,
                     "-o", tmp_path / "model.py")
    assert rc == 1
    assert err.strip() == (f"{weights}: error: The weights file beside model.py names a file this command "
                           "reads, which writing would destroy; choose another output name.")
    assert weights.read_bytes() == before and not (tmp_path / "model.py").exists()


def test_names_the_file_system_refuses_are_diagnostics_not_tracebacks(capsys, spec, monkeypatch):
    from archdsl.files import shown
    monkeypatch.chdir(spec.parent)
    long = "a" * 300            # over the 255 bytes a name may have
    rc, _, err = cli(capsys, "ir", spec, "-o", long + ".json")
    assert (rc, err.strip()) == (1, f"{shown(long + '.json')}: error: Cannot write this file: File name too long.")
    rc, _, err = cli(capsys, "run", long + ".onnx")
    assert (rc, err.strip()) == (1, f"{shown(long + '.onnx')}: error: This file cannot be used: File name too long.")
    assert shown(long + ".onnx").endswith("aaa.onnx") and len(shown(long + ".onnx")) == 120


def test_running_out_of_memory_is_a_diagnostic(capsys, spec):
    rc, _, err = cli(capsys, "run", spec, "--batch", 10 ** 12)
    assert rc == 1
    assert err.startswith("error: The command ran out of memory (Unable to allocate ")
    assert err.strip().endswith("); give it a smaller --batch, input or model.")


def test_ir_output_must_be_json_so_the_tensors_do_not_overwrite_it(capsys, spec, tmp_path):
    rc, _, err = cli(capsys, "ir", spec, "-o", tmp_path / "g.npz")
    assert rc == 1
    assert err.strip() == f"{tmp_path / 'g.npz'}: error: -o must name a file ending in .json, but it ends in '.npz'."
    assert not list(tmp_path.glob("g.*"))


@pytest.mark.parametrize("name,target,words", [("m.onnx", "onnx", "ONNX"), ("m.py", "torch-src", "PyTorch source"),
                                               ("m.pt", "torch", "a saved PyTorch module")])
def test_opt_sends_a_generated_output_name_to_compile(capsys, spec, tmp_path, name, target, words):
    rc, out, err = cli(capsys, "opt", spec, "--passes", "fold-bn", "-o", tmp_path / name)
    assert rc == 1 and out == ""
    assert err.strip() == (f"{tmp_path / name}: error: archc opt writes the optimised IR (.json) or, with --emit "
                           f"arch, a spec (.arch), not {words}; to run the passes and write {words}, give archc "
                           f"compile the same arguments and --target {target}.")
    assert not (tmp_path / name).exists()


# ---- a saved IR wherever a spec goes ---------------------------------------------------------------

@pytest.fixture
def saved(capsys, spec, tmp_path):
    out = tmp_path / "g.json"
    rc, stdout, _ = cli(capsys, "ir", spec, "-D", "n=6", "-o", out)
    assert rc == 0 and stdout.strip() == f"wrote {out} and {out.with_suffix('.npz')}"
    return out


def test_a_saved_ir_is_accepted_by_check_stats_compile_and_run(capsys, saved, tmp_path, spec):
    rc, out, _ = cli(capsys, "check", saved)
    assert rc == 0 and out.startswith(f"{saved}: model 'm' is well-formed")
    rc, out, _ = cli(capsys, "stats", saved, "--json")
    assert rc == 0 and json.loads(out)["params"] == archdsl.load(spec, n=6).param_count()
    rc, _, _ = cli(capsys, "compile", saved, "--target", "onnx", "-o", tmp_path / "g.onnx")
    assert rc == 0 and (tmp_path / "g.onnx").stat().st_size > 0
    rc, out, _ = cli(capsys, "run", saved, "--runs", "1", "--warmup", "0")
    assert rc == 0 and "output: (1, 10)" in out


def test_a_saved_ir_keeps_its_weights_through_compile(capsys, saved, tmp_path):
    """The IR's own tensors (here: changed after saving) are what the compiled model holds."""
    import onnx
    from onnx import numpy_helper
    from archdsl.ir.serialize import load
    g = load(saved)
    name = next(n for n in g.params if n.endswith("weight") and "stem" in n)
    arrays = dict(np.load(saved.with_suffix(".npz")))
    arrays[name] = np.full_like(arrays[name], 0.25)
    np.savez(saved.with_suffix(".npz"), **arrays)
    assert cli(capsys, "compile", saved, "--target", "onnx", "-o", tmp_path / "w.onnx")[0] == 0
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(tmp_path / "w.onnx").graph.initializer}
    assert any(v.shape == arrays[name].shape and np.all(v == 0.25) for v in inits.values())


def test_model_and_defines_do_not_apply_to_a_saved_ir(capsys, saved):
    rc, _, err = cli(capsys, "check", saved, "-D", "n=3")
    assert rc == 1
    assert err.strip() == (f"{saved}: error: -D applies to specs, but this is a saved IR, which holds one model "
                           "with its parameters already bound; leave it out or give the .arch spec.")


def _tamper(saved: Path, edit) -> Path:
    data = json.loads(saved.read_text())
    edit(data)
    out = saved.with_name("t.json")
    out.write_text(json.dumps(data))
    shutil.copy(saved.with_suffix(".npz"), out.with_suffix(".npz"))
    return out


def _cycle(d):
    d["nodes"][1]["inputs"] = [d["nodes"][2]["id"]]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["nodes"][1].pop("op"), "error: This saved IR is damaged or not an IR file: a required field 'op' "
                                        "is missing. Save it again with `archc ir -o FILE.json`."),
    (lambda d: d["nodes"][1].update(inputs=[999]), "error: This saved IR is damaged or not an IR file: node 1 "
                                                   "reads node 999, which is not a node id. Save it again with `archc "
                                                   "ir -o FILE.json`."),
    (lambda d: d["nodes"][1].update(inputs=["0"]), "error: This saved IR is damaged or not an IR file: node 1 "
                                                   "reads node '0', which is not a node id. Save it again with `archc "
                                                   "ir -o FILE.json`."),
    (lambda d: d.update(outputs=[True]), "error: This saved IR is damaged or not an IR file: the model's outputs "
                                         "name node True, which is not a node id. Save it again with `archc ir -o "
                                         "FILE.json`."),
    (lambda d: d.update(next=1), "error: This saved IR is damaged or not an IR file: 'next' is 1, but it must be an "
                                 "integer above every node id. Save it again with `archc ir -o FILE.json`."),
    (lambda d: d["params"][0].update(trainable="yes"), "error: This saved IR is damaged or not an IR file: parameter "
                                                       "stem.0.weight has 'trainable' 'yes', which must be true or "
                                                       "false. Save it again with `archc ir -o FILE.json`."),
    (lambda d: d["params"][0].update(seed="x"), "error: This saved IR is damaged or not an IR file: parameter "
                                                "stem.0.weight has the seed 'x', which must be an integer. Save it "
                                                "again with `archc ir -o FILE.json`."),
    (lambda d: d["nodes"][0]["shape"].__setitem__(1, -3), "error: This saved IR is damaged or not an IR file: node "
                                                          "0 has the shape ('N', -3, 16, 16), whose dimensions are "
                                                          "not positive integers. Save it again with `archc ir -o "
                                                          "FILE.json`."),
    (lambda d: d.update(format="archdsl-ir/9"), "error: This file is not a saved archdsl IR: its format is "
                                                "'archdsl-ir/9', and this version reads archdsl-ir/1 and "
                                                "archdsl-ir/2."),
])
def test_a_tampered_ir_gives_one_diagnostic(capsys, saved, edit, message):
    bad = _tamper(saved, edit)
    rc, _, err = cli(capsys, "check", bad)
    assert rc == 1
    assert err.strip() == f"{bad}: {message}"


def test_a_cycle_in_a_saved_ir_is_found_by_verify_and_the_file_is_named(capsys, saved):
    bad = _tamper(saved, _cycle)
    rc, _, err = cli(capsys, "check", bad)
    assert rc == 1
    assert "error: The graph has a cycle" in err
    assert err.strip().endswith(f"{bad}: note: the graph was loaded from this saved IR, which is damaged")


def test_the_tensors_must_all_be_there_and_belong_to_the_ir(capsys, saved):
    npz = saved.with_suffix(".npz")
    arrays = dict(np.load(npz))
    name = sorted(arrays)[0]
    for change, message in (
            (lambda a: a.pop(name), f"{npz}: error: The tensors file has no values for the parameters: {name}; "
                                    "it and 'g.json' do not belong together. Save the IR again with `archc ir -o "
                                    "FILE.json`."),
            (lambda a: a.update(extra=np.zeros(3)), f"{npz}: error: The tensors file holds tensors that no "
                                                    "parameter of the IR has: extra; it and 'g.json' do not belong "
                                                    "together. Save the IR again with `archc ir -o FILE.json`.")):
        changed = dict(arrays)
        change(changed)
        np.savez(npz, **changed)
        rc, _, err = cli(capsys, "run", saved)
        assert (rc, err.strip()) == (1, message)
    npz.unlink()
    rc, _, err = cli(capsys, "run", saved)
    assert (rc, err.strip()) == (1, f"{saved}: error: The tensors of this IR are missing: 'g.npz' is not beside it, "
                                    "and without it every weight would be a fresh initial value. Put the .npz that "
                                    "`archc ir -o` wrote beside 'g.json'.")


def test_a_nan_attribute_in_a_saved_ir_is_refused_at_its_layer(capsys, saved):
    bad = _tamper(saved, lambda d: next(n for n in d["nodes"] if n["op"] == "bn")["attrs"].update(eps=float("nan")))
    rc, _, err = cli(capsys, "check", bad)
    assert rc == 1
    assert ": error: Node @stem.1 (bn) has attribute eps=nan, which is NaN." in err.splitlines()[0]
    assert err.strip().endswith(f"{bad}: note: the graph was loaded from this saved IR, which is damaged")


def test_nodes_without_a_source_location_are_located_in_the_saved_file(capsys, saved, tmp_path):
    def no_spans(d):
        for n in d["nodes"]:
            n["span"] = None
    bad = _tamper(saved, no_spans)
    rc, _, err = cli(capsys, "opt", bad, "--passes", "lowrank{ratio=0.5,min_gain=0}", "-o", tmp_path / "f.json")
    assert rc == 0, err
    from archdsl.ir.serialize import load_checked
    g = load_checked(tmp_path / "f.json")
    assert {g.data(n)["span"].file for n in g.node_ids()} == {str(bad)}


def test_truncated_json_and_tensors(capsys, saved):
    text = saved.read_text()
    saved.write_text(text[: len(text) // 2])
    rc, _, err = cli(capsys, "check", saved)
    assert rc == 1 and err.startswith(f"{saved}:") and "error: This saved IR is not valid JSON" in err
    saved.write_text(text)
    npz = saved.with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[:100])
    rc, _, err = cli(capsys, "check", saved)
    assert rc == 1
    assert err.strip().startswith(f"{npz}: error: Cannot read the tensors of this IR: BadZipFile")


# ---- compiled models as inputs -------------------------------------------------------------------

@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("compiled")
    spec = d / "m.arch"
    spec.write_text(SPEC)
    for target, name in (("onnx", "m.onnx"), ("torch", "m.pt2")):
        assert main(["compile", str(spec), "--target", target, "-o", str(d / name)]) == 0
    return d


def test_run_takes_a_compiled_onnx_and_pt2_and_both_agree_with_the_spec(capsys, compiled):
    tops = {}
    for name in ("m.arch", "m.onnx", "m.pt2"):
        rc, out, err = cli(capsys, "run", compiled / name, "--runs", "1", "--warmup", "0", "--top", "3")
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[1] == "input x: (1, 3, 16, 16) (standard normal, seed 0)"
        tops[name] = [float(t.split("] ")[1]) for t in lines[3].split(": ", 1)[1].split(", ")]
    assert np.allclose(tops["m.onnx"], tops["m.arch"], atol=1e-5)
    assert np.allclose(tops["m.pt2"], tops["m.arch"], atol=1e-5)


def test_a_compiled_model_runs_only_on_its_own_runtime(capsys, compiled):
    rc, _, err = cli(capsys, "run", compiled / "m.pt2", "--backend", "onnxruntime")
    assert rc == 1
    assert err.strip() == (f"{compiled / 'm.pt2'}: error: A .pt2 file runs on torch, not on onnxruntime; leave "
                           "--backend out, or give the spec to run it on either backend.")


def test_a_broken_compiled_model_is_a_diagnostic(capsys, tmp_path):
    bad = tmp_path / "x.pt2"
    bad.write_text("not a model")
    rc, _, err = cli(capsys, "run", bad)
    assert rc == 1
    assert err.strip() == (f"{bad}: error: This is not a torch.export program: a .pt2 file is a zip archive, and "
                           "this one is not; compile one with archc compile --target torch.")
    bad = tmp_path / "x.onnx"
    bad.write_text("not a model")
    rc, _, err = cli(capsys, "run", bad)
    assert rc == 1 and err.startswith(f"{bad}: error: onnxruntime cannot load this model:")


def test_bench_times_a_compiled_model(capsys, compiled):
    rc, out, err = cli(capsys, "bench", compiled / "m.onnx", "--runs", "2", "--warmup", "0", "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["runtime"] == "onnxruntime" and result["latency"]["runs"] == 2
    assert "isa" in result["machine"] and "int8" in result["machine"]


def test_bench_checks_its_numbers_for_a_compiled_model_too(capsys, compiled):
    for argv, message in ((["--batch", "0"], "error: --batch must be at least 1, but it is 0."),
                          (["--runs", "-3"], "error: --runs must be at least 1, but it is -3."),
                          (["--warmup", "-5"], "error: --warmup cannot be negative, but it is -5.")):
        rc, out, err = cli(capsys, "bench", compiled / "m.onnx", *argv, "--json")
        assert (rc, out, err.strip()) == (1, "", message)


def test_an_onnx_model_that_takes_other_than_float_is_refused(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper
    x, y = (helper.make_tensor_value_info(n, TensorProto.INT64, [1, 3]) for n in "xy")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "ints", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "ints.onnx")
    for command in ("run", "bench"):
        rc, _, err = cli(capsys, command, tmp_path / "ints.onnx")
        assert (rc, err.strip()) == (1, f"{tmp_path / 'ints.onnx'}: error: Input 'x' takes tensor(int64), but archc "
                                        "runs models on float32 tensors (images); run this model through "
                                        "onnxruntime with inputs of your own.")


def test_run_refuses_inputs_it_cannot_feed(capsys, spec, tmp_path):
    import zipfile
    np.save(tmp_path / "empty.npy", np.zeros((0, 3, 16, 16), np.float32))
    np.save(tmp_path / "c.npy", np.zeros((1, 3, 16, 16), np.complex64))
    with zipfile.ZipFile(tmp_path / "member.npz", "w") as z:
        z.writestr("x.npy", b"garbage")
    for name, message in (("empty.npy", "This file holds no samples (a batch of 0); give at least one."),
                          ("c.npy", "This file holds complex64 data; input 'x' takes real numbers."),
                          ("member.npz", "Cannot read this file: its member 'x' is not a NumPy array (.npy); save "
                                         "inputs with numpy.save (.npy) or numpy.savez (.npz).")):
        rc, _, err = cli(capsys, "run", spec, "--input", tmp_path / name)
        assert (rc, err.strip()) == (1, f"{tmp_path / name}: error: {message}")


def test_run_reads_an_npz_input(capsys, spec, tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    rc, out, err = cli(capsys, "run", spec, "--input", tmp_path / "x.npz", "--runs", "1")
    assert rc == 0, err
    assert f"input x: (2, 3, 16, 16) ({tmp_path / 'x.npz'})" in out
    np.savez(tmp_path / "two.npz", a=x, b=x)
    rc, _, err = cli(capsys, "run", spec, "--input", tmp_path / "two.npz")
    assert rc == 1
    assert err.strip() == (f"{tmp_path / 'two.npz'}: error: This .npz holds 2 arrays (a, b) and none is named "
                           "'x', the model's input; name it so, or give a .npy file.")


# ---- small workflow commands -----------------------------------------------------------------------

def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"archc (archdsl) {archdsl.__version__}"


def test_models_lists_the_models_and_what_they_need(capsys, tmp_path):
    path = tmp_path / "two.arch"
    path.write_text(SPEC + "model g(width: int) { input x: [3, 8, 8]  output x -> conv(width, 1) }\n"
                    "model g8 = g(8)\n")
    rc, out, _ = cli(capsys, "models", path)
    assert rc == 0
    assert out.splitlines() == ["m   (n?)", "g   (width)  (needs width: give them with -D)", "g8  (width?)",
                                f"3 models in {path}; compile one with --model NAME"]


def test_stats_depth_rolls_up_scopes_and_keeps_the_totals(capsys, spec):
    g = archdsl.load(spec)
    rows = layer_stats(g)
    top = rollup(g, rows, 1)
    assert [r.scope for r in top] == ["x", "stem", "head"]
    assert sum(r.params for r in top) == sum(r.params for r in rows) == g.param_count()
    assert sum(r.macs for r in top) == sum(r.macs for r in rows) > 0
    assert top[1].shape == ("N", 8, 16, 16) and top[2].shape == ("N", 10)
    rc, out, _ = cli(capsys, "stats", spec, "--depth", "1")
    assert rc == 0 and [line.split()[0] for line in out.splitlines()[2:5]] == ["x", "stem", "head"]


def test_memory_counts_every_output_and_the_peak_of_live_tensors(spec):
    g = archdsl.load(spec)
    m = memory(g)
    outputs = [n for n in g.nodes() if n.op != "input"]
    assert m["activations"] == sum(4 * int(np.prod(n.shape[1:])) for n in outputs)
    # conv -> bn -> relu at 8x16x16 (2048 floats each): the peak holds the input (768 floats) and two of them
    assert m["peak"] == 4 * (3 * 16 * 16 + 2 * 8 * 16 * 16)
    assert m["trainable"] == g.param_count()
    assert m["buffers"] == 8 + 8 + 1          # running mean, running var, num_batches_tracked
