"""`--weights`: a state_dict loaded into the IR by name, and its errors."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import archdsl
from archdsl import ArchError
from archdsl.backends.torch_source import build_module
from archdsl.backends.weights import load_weights
from archdsl.cli import main

RESNET = Path(__file__).resolve().parent.parent / "zoo_specs" / "resnet.arch"
SMALL = """
model tiny(num_classes: int = 3) {
    input x: [2, 8, 8]
    output x -> conv1: conv(4, 3, padding=1) -> bn1: bn -> relu -> adaptive_avgpool(1) -> flatten
             -> fc: linear(num_classes)
}
"""


def test_torchvision_weights_flow_into_the_ir_and_the_generated_module(tmp_path):
    twin = torchvision.models.resnet18().eval()
    torch.save(twin.state_dict(), tmp_path / "ckpt.pt")
    g = archdsl.load(RESNET, "resnet18", size=64)
    load_weights(g, tmp_path / "ckpt.pt")
    assert np.array_equal(g.params["layer2.0.downsample.0.weight"].value,
                          twin.state_dict()["layer2.0.downsample.0.weight"].numpy())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (build_module(g).eval()(x) - twin(x)).abs().max().item() <= 1e-5


def test_a_checkpoint_dict_is_accepted_and_the_cli_compiles_with_it(tmp_path):
    g = archdsl.load(SMALL)
    ref = archdsl.to_torch(g)
    state = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in ref.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pt")
    spec = tmp_path / "tiny.arch"
    spec.write_text(SMALL)
    out = tmp_path / "model.py"
    assert main(["compile", str(spec), "--target", "torch-src", "--weights", str(tmp_path / "ckpt.pt"),
                 "-o", str(out)]) == 0
    load_weights(g, tmp_path / "ckpt.pt")
    assert torch.equal(torch.from_numpy(g.params["fc.weight"].value), state["fc.weight"])


def test_safetensors_and_npz_weights_reach_every_backend_as_a_pt_file_does(tmp_path, capsys):
    from safetensors.torch import save_file
    g = archdsl.load(SMALL)
    gen = torch.Generator().manual_seed(3)
    state = {k: (torch.randn(v.shape, generator=gen).abs() + 0.1 if "running_var" in k
                 else torch.randn(v.shape, generator=gen)).to(v.dtype) if v.is_floating_point() else v
             for k, v in archdsl.to_torch(g).state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    arrays = {k: v.numpy() for k, v in state.items()}
    arrays["fc.weight"] = arrays["fc.weight"].astype(">f4")           # big-endian, as another machine may write
    np.savez(tmp_path / "w.npz", **arrays)
    spec = tmp_path / "tiny.arch"
    spec.write_text(SMALL)
    for kind in ("pt", "safetensors", "npz"):
        assert main(["compile", str(spec), "--target", "onnx", "--weights", str(tmp_path / f"w.{kind}"),
                     "-o", str(tmp_path / f"{kind}.onnx")]) == 0, capsys.readouterr().err
    assert (tmp_path / "pt.onnx").read_bytes() == (tmp_path / "safetensors.onnx").read_bytes()
    assert (tmp_path / "pt.onnx").read_bytes() == (tmp_path / "npz.onnx").read_bytes()
    np.savez(tmp_path / "text.npz", **{**arrays, "fc.bias": np.array(["a", "b", "c"])})
    with pytest.raises(ArchError) as info:
        load_weights(g, tmp_path / "text.npz")
    assert info.value.message == (f"The weights file '{tmp_path / 'text.npz'}' holds <U1 values in 'fc.bias'; "
                                  "weights are numbers.")
    np.savez(tmp_path / "objects.npz", a=np.array([{}], dtype=object))
    with pytest.raises(ArchError) as info:
        load_weights(g, tmp_path / "objects.npz")
    assert str(info.value).splitlines()[0] == (
        f"{tmp_path / 'objects.npz'}: error: Cannot read the --weights file as an .npz archive: a member holds "
        "Python objects (an object array), and reading them would mean unpickling, which archdsl never does; "
        "write it with numpy.savez.")
    fresh = archdsl.to_onnx(g)
    assert fresh.SerializeToString() != (tmp_path / "pt.onnx").read_bytes()      # the weights did arrive
    load_weights(g, tmp_path / "w.safetensors")
    assert torch.equal(torch.from_numpy(g.params["fc.weight"].value), state["fc.weight"])
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:50])
    with pytest.raises(ArchError) as info:
        load_weights(g, tmp_path / "cut.safetensors")
    assert info.value.message.startswith(f"Cannot read the weights file '{tmp_path / 'cut.safetensors'}' as "
                                         "safetensors: ")
    assert info.value.message.endswith("; write it with safetensors.torch.save_file.")


def mismatched(tmp_path):
    g = archdsl.load(SMALL)
    state = {k: torch.zeros(p.shape) for k, p in g.params.items()}
    del state["fc.bias"], state["bn1.running_var"]
    state["head.weight"] = torch.zeros(3)
    state["conv1.weight"] = torch.zeros(4, 3, 3, 3)
    del state["bn1.num_batches_tracked"]           # optional, as in PyTorch
    torch.save(state, tmp_path / "bad.pt")
    return g, tmp_path / "bad.pt"


def test_mismatched_names_are_listed_in_one_error(tmp_path):
    g, path = mismatched(tmp_path)
    with pytest.raises(ArchError) as info:
        load_weights(g, path)
    assert str(info.value).splitlines() == [
        f"error: The weights in '{path}' do not match model 'tiny' (2 missing, 1 unexpected, 1 wrong-shaped names).",
        "note: missing from the file: bn1.running_var, fc.bias",
        "note: not in the model: head.weight",
        "note: wrong shape: conv1.weight is (4, 3, 3, 3) in the file but (4, 2, 3, 3) in the model",
    ]


def test_long_lists_are_cut_to_a_few_and_a_count(tmp_path):
    g = archdsl.load(RESNET, "resnet18")
    torch.save({"other": torch.zeros(1)}, tmp_path / "empty.pt")
    with pytest.raises(ArchError) as info:
        load_weights(g, tmp_path / "empty.pt")
    notes = [n.message for n in info.value.notes]
    assert notes[0] == ("missing from the file: conv1.weight, bn1.weight, bn1.bias, bn1.running_mean, "
                        "bn1.running_var and 97 more")


def test_the_cli_reports_a_mismatch_without_a_traceback(tmp_path, capsys):
    _, path = mismatched(tmp_path)
    spec = tmp_path / "tiny.arch"
    spec.write_text(SMALL)
    assert main(["compile", str(spec), "--target", "torch-src", "--weights", str(path),
                 "-o", str(tmp_path / "m.py")]) == 1
    err = capsys.readouterr().err
    assert "do not match model 'tiny'" in err and "Traceback" not in err
    assert not (tmp_path / "m.py").exists()


class Payload:
    def __reduce__(self):
        return (print, ("side effect",))


def test_files_that_are_not_plain_state_dicts_are_refused(tmp_path):
    g = archdsl.load(SMALL)
    torch.save({"state_dict": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ArchError) as info:
        load_weights(g, tmp_path / "evil.pt")
    assert info.value.message == (f"Cannot read the weights file '{tmp_path / 'evil.pt'}' as a PyTorch state_dict: "
                                  "it holds Python objects other than tensors, which archdsl does not load "
                                  "(torch.load with weights_only=True).")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ArchError, match=r"^error: Cannot read the weights file '.*junk\.pt' as a PyTorch "):
        load_weights(g, tmp_path / "junk.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ArchError, match=r"holds list, not a state_dict"):
        load_weights(g, tmp_path / "list.pt")
    with pytest.raises(ArchError, match=r"^error: Cannot read the weights file '.*missing\.pt': there is no such file\.$"):
        load_weights(g, tmp_path / "missing.pt")


def test_files_of_other_kinds_are_named_for_what_they_are(tmp_path):
    g = archdsl.load(SMALL)
    torch.save(archdsl.to_torch(g).state_dict(), tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:300])
    np.savez(tmp_path / "w.npz", a=np.zeros(2))
    (tmp_path / "w.pt").write_bytes((tmp_path / "w.npz").read_bytes())
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "folder.pt").mkdir()
    fix = ("; give a .pt file written by torch.save (a dict from parameter names to tensors) or archc train, a "
           ".safetensors file, or an .npz archive.")
    for name, why in (("junk.pt", "it is neither the zip archive nor the pickle that torch.save writes"),
                      ("cut.pt", "it is a damaged or truncated zip archive"),
                      ("w.pt", "it is a NumPy .npz archive, which is read by name only when the file name ends "
                                "in .npz"),
                      ("empty.pt", "the file is empty")):
        if name == "junk.pt":
            (tmp_path / name).write_text("model m() {}")
        with pytest.raises(ArchError) as info:
            load_weights(g, tmp_path / name)
        assert info.value.message == (f"Cannot read the weights file '{tmp_path / name}' as a PyTorch state_dict: "
                                      f"{why}{fix}")
    state = archdsl.to_torch(g).state_dict()
    name = next(iter(state))
    torch.save({**state, name: state[name].to(torch.complex64)}, tmp_path / "complex.pt")
    with pytest.raises(ArchError) as info:
        load_weights(g, tmp_path / "complex.pt")
    assert info.value.message == (f"The weights file '{tmp_path / 'complex.pt'}' holds complex values in '{name}' "
                                  "(torch.complex64); weights are real numbers, and archdsl does not drop an "
                                  "imaginary part.")
    with pytest.raises(ArchError) as info:
        load_weights(g, tmp_path / "folder.pt")
    assert info.value.message == (f"Cannot read the weights file '{tmp_path / 'folder.pt'}': it is a directory; "
                                  "give a .pt file written by torch.save or archc train, a .safetensors file, or an "
                                  ".npz archive of arrays by parameter name.")


# ---- archdsl.from_torch: a trained module's weights back into the IR ----------------------------

def trained(g, steps=3, seed=0):
    """``to_torch(g)`` after a few SGD steps in train mode (batch norm updates its statistics)."""
    torch.manual_seed(seed)
    model = archdsl.to_torch(g).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(steps):
        x, y = torch.randn(8, 2, 8, 8), torch.randint(0, 3, (8,))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_trained_weights_flow_back_and_the_original_graph_is_unchanged():
    g = archdsl.load(SMALL)
    before = {k: p.value.copy() for k, p in g.params.items()}
    model = trained(g)
    new = archdsl.from_torch(g, model)
    assert new is not g and list(new.params) == list(g.params)
    assert all(np.array_equal(g.params[k].value, v) for k, v in before.items())       # untouched
    changed = [k for k in before if not np.array_equal(new.params[k].value, before[k])]
    assert sorted(changed) == sorted(before)         # every parameter and buffer moved, counters included
    assert int(new.params["bn1.num_batches_tracked"].value) == 3
    x = torch.randn(4, 2, 8, 8)
    with torch.no_grad():
        want = model(x)
        assert torch.equal(archdsl.to_torch(new).eval()(x), want)
        assert torch.equal(build_module(new).eval()(x), want)
        assert not torch.equal(archdsl.to_torch(g).eval()(x), want)


def test_from_torch_takes_a_state_dict_and_converts_dtypes():
    g = archdsl.load(SMALL)
    state = {k: v.double() if v.is_floating_point() else v for k, v in trained(g).state_dict().items()}
    new = archdsl.from_torch(g, state)
    assert {p.value.dtype for p in new.params.values()} == {np.dtype("float32"), np.dtype("int64")}
    assert np.array_equal(new.params["fc.weight"].value, state["fc.weight"].float().numpy())


def test_from_torch_lists_what_does_not_match():
    g = archdsl.load(SMALL)
    state = archdsl.to_torch(g).state_dict()
    del state["fc.bias"], state["bn1.running_var"]
    state["head.weight"] = torch.zeros(3)
    state["conv1.weight"] = torch.zeros(4, 3, 3, 3)
    with pytest.raises(ArchError) as info:
        archdsl.from_torch(g, state)
    assert str(info.value).splitlines() == [
        "error: The tensors of the state_dict do not match model 'tiny' (2 missing, 1 unexpected, "
        "1 wrong-shaped names).",
        "note: missing from the state_dict: bn1.running_var, fc.bias",
        "note: not in the model: head.weight",
        "note: wrong shape: conv1.weight is (4, 3, 3, 3) in the state_dict but (4, 2, 3, 3) in the model",
    ]
    with pytest.raises(ArchError, match=r"^error: from_torch takes a torch.nn.Module or its state_dict, not list"):
        archdsl.from_torch(g, [1, 2])
    with pytest.raises(ArchError, match=r"maps 'fc.bias' to ndarray, not a tensor; pass module.state_dict\(\)\.$"):
        archdsl.from_torch(g, {**archdsl.to_torch(g).state_dict(), "fc.bias": np.zeros(3)})
