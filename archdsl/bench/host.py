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


def passive_waits() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the caller chose a policy; False if torch was imported already
    (then the OpenMP runtime has read its environment and the setting comes too late)."""
    late = "torch" in sys.modules
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return not late


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
    for pkg in packages:
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    info["loadavg_start"] = loadavg()
    return info
