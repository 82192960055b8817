"""One forward pass per backend, on CPU or CUDA, with inputs staged on the device first.

A runner's ``step()`` runs the model once on the staged inputs and returns only when the
device is done (``torch.cuda.synchronize``; onnxruntime's ``run`` is synchronous), so wall
time around it is the latency. Outputs stay on the device until ``outputs()`` is asked for.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cpu import check_threads
from ..data import PICKLED, is_real
from ..diagnostics import ArchError, Span
from ..ir.graph import Graph

DEVICES = ("cpu", "cuda")


def _fmt(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


@dataclass(frozen=True)
class Signature:
    """What running a model needs to know: its name and its inputs' names and shapes (batch ``"N"``)."""
    name: str
    inputs: tuple          # ((name, shape), ...)


def signature(model) -> Signature:
    """The :class:`Signature` of a graph (a signature is returned as it is)."""
    if isinstance(model, Signature):
        return model
    return Signature(model.name, tuple((model.data(nid)["attrs"].get("name", f"input{i}"), model.data(nid)["shape"])
                                       for i, nid in enumerate(model.inputs)))


def input_shapes(model, batch: int) -> list:
    return [(batch, *shape[1:]) for _, shape in signature(model).inputs]


def input_names(model) -> list:
    return [name for name, _ in signature(model).inputs]


def random_inputs(model, batch: int, seed: int = 0) -> list:
    """Standard normal float32 inputs of the model's shapes with batch size ``batch``."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for shape in input_shapes(model, batch)]


def _read_array(path, name: str):
    """One array from ``path``: a ``.npy``, or an ``.npz`` holding it under the input's name (or alone)."""
    here = Span.of_file(path)
    try:
        loaded = np.load(Path(path), allow_pickle=False)
    except FileNotFoundError:
        raise ArchError("Cannot read this input file: it does not exist.", here) from None
    except Exception as err:  # noqa: BLE001 - OSError, ValueError, BadZipFile: not a NumPy file
        if isinstance(err, ValueError) and "pickle" in str(err):
            raise ArchError(f"Cannot read this file: {PICKLED}; save inputs with numpy.save (.npy) or numpy.savez "
                            "(.npz).", here) from None
        raise ArchError(f"Cannot read this file as a NumPy array ({type(err).__name__}: {err}); save inputs "
                        "with numpy.save (.npy) or numpy.savez (.npz).", here) from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.files)
            if name not in keys and len(keys) != 1:
                raise ArchError(f"This .npz holds {len(keys)} arrays ({', '.join(keys[:8])}) and none is named "
                                f"'{name}', the model's input; name it so, or give a .npy file.", here)
            key = name if name in keys else keys[0]
            try:
                loaded = loaded[key]
            except ValueError:
                loaded = None           # a pickled member: refused below with the others
            if not isinstance(loaded, np.ndarray):
                raise ArchError(f"Cannot read this file: its member '{key}' is not a NumPy array (.npy); save "
                                "inputs with numpy.save (.npy) or numpy.savez (.npz).", here) from None
    return loaded


def load_inputs(paths, model, batch: int | None) -> list:
    """Inputs read from ``.npy`` (or ``.npz``) files, one per model input, checked against the model's
    shapes.

    An array without the batch dimension is one sample; ``batch`` (if given) must agree with
    the arrays' own batch size.
    """
    sig = signature(model)
    names = [n for n, _ in sig.inputs]
    if len(paths) != len(names):
        raise ArchError(f"Model '{sig.name}' takes {len(names)} input{'s' if len(names) != 1 else ''} "
                        f"({', '.join(names)}), but {len(paths)} --input file{'s were' if len(paths) != 1 else ' was'} "
                        "given.")
    out = []
    for path, (name, want) in zip(paths, sig.inputs):
        array = _read_array(path, name)
        here = Span.of_file(path)
        if not is_real(array.dtype):
            raise ArchError(f"This file holds {array.dtype} data; input '{name}' takes real numbers.", here)
        if array.ndim == len(want) - 1:
            array = array[None]
        if array.ndim != len(want) or tuple(array.shape[1:]) != tuple(want[1:]):
            raise ArchError(f"This file holds an array of shape {_fmt(array.shape)}, but input '{name}' of model "
                            f"'{sig.name}' takes {_fmt(want)}.", here)
        if array.shape[0] == 0:
            raise ArchError("This file holds no samples (a batch of 0); give at least one.", here)
        if batch is not None and array.shape[0] != batch:
            raise ArchError(f"This file holds a batch of {array.shape[0]}, but --batch {batch} was asked for.", here)
        out.append(np.ascontiguousarray(array, dtype=np.float32))
    return out


def check_torch_device(device: str) -> None:
    if device not in DEVICES:
        raise ArchError(f"Unknown device '{device}'; the devices are {', '.join(DEVICES)}.")
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ArchError("The CUDA device was asked for, but PyTorch finds no CUDA GPU on this machine.")


def ort_providers(device: str) -> list:
    import onnxruntime as ort
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ArchError("The CUDA device was asked for, but this onnxruntime has no CUDAExecutionProvider "
                            "(install onnxruntime-gpu).")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


# The CPU backends the compression benchmarks time side by side: PyTorch eager in its default NCHW memory
# order and in channels-last (the weights and inputs NHWC, the order oneDNN's CPU convolutions compute in),
# and onnxruntime.
CPU_BACKENDS = ("eager", "eager channels-last", "onnxruntime")


def cpu_backends(text: str) -> tuple:
    """The backends a comma-separated ``--backends`` value names, in its order."""
    backends = tuple(s.strip() for s in text.split(",") if s.strip())
    if not backends or any(be not in CPU_BACKENDS for be in backends):
        raise ArchError(f"--backends takes some of {', '.join(CPU_BACKENDS)}, separated by commas, but got '{text}'.")
    return backends


class TorchRunner:
    """A ``torch.nn.Module`` in eval mode under ``torch.inference_mode``."""

    def __init__(self, module, device: str = "cpu", label: str = "torch", threads: int | None = None,
                 exported: bool = False, channels_last: bool = False):
        """``channels_last``: the module's 4-D weights and its 4-D inputs in NHWC memory order (the
        convolution kernels then compute in NHWC: ``module`` itself is converted, in place)."""
        import torch
        check_torch_device(device)
        if threads:
            torch.set_num_threads(threads)
        self.torch, self.device, self.label, self.channels_last = torch, device, label, channels_last
        # an exported program is already in inference form and refuses eval()
        self.module = module.to(device) if exported else module.eval().to(device)
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self._inputs, self._out = [], None

    @property
    def detail(self) -> str:
        layout = ", channels-last" if self.channels_last else ""
        if self.device == "cuda":
            return f"PyTorch {self.torch.__version__}, {self.torch.cuda.get_device_name()}{layout}"
        spin = os.environ.get("GOMP_SPINCOUNT")
        return (f"PyTorch {self.torch.__version__}, {_threads(self.torch.get_num_threads())}{layout}"
                + (f", GOMP_SPINCOUNT={spin}" if spin is not None else ""))

    def prepare(self, inputs) -> None:
        self._inputs = [self.torch.from_numpy(x).to(self.device) for x in inputs]
        if self.channels_last:
            self._inputs = [x.contiguous(memory_format=self.torch.channels_last) if x.dim() == 4 else x
                            for x in self._inputs]

    def step(self):
        """One forward pass; returns the module's output."""
        with self.torch.inference_mode():
            self._out = self.module(*self._inputs)
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        return self._out

    def outputs(self) -> list:
        outs = self._out if isinstance(self._out, (tuple, list)) else [self._out]
        return [o.detach().float().cpu().numpy() for o in outs]


def quiet_session(model_bytes: bytes, threads: int | None, providers: list | None = None):
    """An onnxruntime session for timing on a shared machine: ``threads`` intra-op threads (None: onnxruntime's
    choice), one inter-op thread, and no spinning while waiting (a spinning pool turns milliseconds into
    seconds under load)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or 0
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, opts, providers=providers or ["CPUExecutionProvider"])


class OrtRunner:
    """A :func:`quiet_session`; on CUDA, inputs and outputs are bound to the GPU (no copies timed)."""

    def __init__(self, model_bytes: bytes, device: str = "cpu", label: str = "onnxruntime",
                 threads: int | None = None):
        import onnxruntime as ort
        self.ort, self.device, self.label = ort, device, label
        self.threads = threads or os.cpu_count()
        self.session = quiet_session(model_bytes, threads, ort_providers(device))
        self._feeds, self._binding, self._out = {}, None, None

    @property
    def detail(self) -> str:
        provider = self.session.get_providers()[0]
        return f"onnxruntime {self.ort.__version__}, {provider}" + \
            (f", {_threads(self.threads)}" if provider == "CPUExecutionProvider" else "")

    def prepare(self, inputs) -> None:
        names = [i.name for i in self.session.get_inputs()]
        self._feeds = dict(zip(names, inputs))
        if self.device == "cuda":
            b = self.session.io_binding()
            for name, x in self._feeds.items():
                b.bind_ortvalue_input(name, self.ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
            for o in self.session.get_outputs():
                b.bind_output(o.name, "cuda")
            self._binding = b

    def step(self) -> None:
        if self._binding is not None:
            self.session.run_with_iobinding(self._binding)
        else:
            self._out = self.session.run(None, self._feeds)

    def outputs(self) -> list:
        if self._binding is not None:
            return self._binding.copy_outputs_to_cpu()
        return list(self._out)


def make_runner(backend: str, graph: Graph, device: str, opset: int | None = None, threads: int | None = None):
    """The runner for ``archc run``: ``torch`` (archdsl.to_torch) or ``onnxruntime`` (archdsl's ONNX)."""
    check_threads(threads)
    if backend == "torch":
        check_torch_device(device)
        from ..backends.torch_module import to_torch
        return TorchRunner(to_torch(graph), device, "torch", threads)
    if backend == "onnxruntime":
        ort_providers(device)       # fail before compiling when CUDA is missing
        from ..backends.onnx_export import onnx_bytes
        return OrtRunner(onnx_bytes(graph, opset), device, "onnxruntime", threads)
    raise ArchError(f"Unknown backend '{backend}'; the backends are torch, onnxruntime.")
