"""The machine a benchmark ran on: CPU, ISA flags (int8 speed depends on them), load, versions.

Shared by every benchmark so that each records the same facts, and by their command lines for the
OpenMP wait policy, which must be set before torch is imported.
"""
from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

from .. import cpu


SPIN_MAX = 10 ** 10     # the largest --spin: minutes of polling (libgomp spins 3e10 times under ACTIVE)


def passive_waits(spin: int | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the caller chose a policy, and with ``spin`` also
    ``GOMP_SPINCOUNT``: how many times an idle libgomp worker (PyTorch's OpenMP on Linux) polls for new
    work before it sleeps. Under PASSIVE alone it sleeps at once, and every operator pays a wake-up
    (docs/benchmarks.md, "Where eager mode's time goes"); a bounded spin such as 10,000 (about 0.4 ms)
    keeps the workers awake between the operators of one forward pass and still asleep between rows.
    False if torch was imported already (then the OpenMP runtime has read its environment and the
    settings come too late)."""
    late = "torch" in sys.modules
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if spin is not None:
        os.environ["GOMP_SPINCOUNT"] = str(spin)
    return not late


def waits(m: dict) -> str:
    """The wait settings as a report's header prints them: ``OMP_WAIT_POLICY=PASSIVE``, and
    ``, GOMP_SPINCOUNT=N`` where one was set."""
    spin = m.get("GOMP_SPINCOUNT")
    return f"OMP_WAIT_POLICY={m.get('OMP_WAIT_POLICY')}" + (f", GOMP_SPINCOUNT={spin}" if spin is not None else "")


def loadavg() -> list | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def _base() -> dict:
    import onnx
    import onnxruntime
    import torch
    info = {"cpu": cpu.model_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def machine(threads: int | None, packages=()) -> dict:
    """CPU model and ISA flags, cores, threads, the wait policy, versions (with ``packages``), date, load."""
    from importlib.metadata import PackageNotFoundError, version

    info = _base()
    info["isa"] = cpu.isa()
    info["int8"] = cpu.int8_isa()
    info["threads"] = threads
    info["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY")
    info["GOMP_SPINCOUNT"] = os.environ.get("GOMP_SPINCOUNT")
    for pkg in packages:
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    info["loadavg_start"] = loadavg()
    return info
