"""The host CPU: its model name and instruction-set flags, read once from ``/proc/cpuinfo``.

Integer arithmetic depends on them (the ``quantize`` pass chooses its weights' range by them, as
onnxruntime's kernels do) and every benchmark records them. Neither torch nor onnx is imported here:
the core passes use this module. Off Linux, or where the file cannot be read, the name falls back to
``platform`` and the flags are empty.
"""
from __future__ import annotations

import functools
import platform

from .diagnostics import ArchError

# the flags that decide float and int8 speed, in the order benchmarks list them
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
# 8-bit x 8-bit dot products that sum without saturating (onnxruntime's u8 x s8 path is exact with them)
VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")
X86 = ("x86_64", "amd64", "i386", "i686", "x86")
MAX_THREADS = 1024      # more cannot help on any CPU these run on, and 100,000 threads crash the OpenMP runtime


def check_threads(threads, flag: str = "--threads") -> None:
    """A thread count a command may hand to PyTorch or onnxruntime: None (their choice) or 1 to 1024."""
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        bound = "at least 1" if threads < 1 else f"at most {MAX_THREADS}"
        raise ArchError(f"{flag} must be {bound}, but it is {threads}.")


def read(path: str = "/proc/cpuinfo") -> tuple[str, frozenset]:
    """The first processor's model name and flags in a cpuinfo file (every core of a machine reports the
    same); ``("", frozenset())`` where the file cannot be read."""
    name, flags = "", None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key == "flags" and flags is None:
                    flags = frozenset(value.split())
                if name and flags is not None:
                    break
    except OSError:
        pass
    return name, flags or frozenset()


_cpuinfo = functools.lru_cache(maxsize=1)(read)


def flags() -> frozenset:
    """The CPU's feature flags as Linux names them (``avx2``, ``avx512_vnni``, ...); empty if unknown."""
    return _cpuinfo()[1]


def model_name() -> str:
    """The CPU's marketing name, e.g. ``AMD EPYC``; the processor or machine type where Linux does not say."""
    return _cpuinfo()[0] or platform.processor() or platform.machine()


def is_x86() -> bool:
    return platform.machine().lower() in X86


def isa() -> list[str]:
    """Those of :data:`ISA_FLAGS` this CPU has, in that order."""
    have = flags()
    return [f for f in ISA_FLAGS if f in have]


def int8_isa(have: frozenset | None = None) -> str:
    """The fastest int8 instructions the CPU (or the flags ``have``) offers, as the benchmarks name them."""
    have = flags() if have is None else have
    return ("AMX" if "amx_int8" in have else "AVX-512 VNNI" if "avx512_vnni" in have
            else "AVX-VNNI" if "avx_vnni" in have else "AVX2 only" if "avx2" in have else "other")
