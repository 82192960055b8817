"""Writing a picture: DOT text as is, or laid out by Graphviz's ``dot`` program as SVG, PNG or PDF."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..diagnostics import ArchError

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot", ".html": "html",
           ".htm": "html"}
TIMEOUT_S = 600


def output_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ArchError(f"Cannot tell the picture format from '{path.name}'; name the output file "
                        f".svg, .png, .pdf, .dot or .html.")
    return fmt


def dot_binary() -> str:
    exe = shutil.which("dot")
    if exe is None:
        raise ArchError("Drawing SVG, PNG or PDF needs Graphviz's 'dot' program, which is not installed "
                        "(on Debian: apt-get install graphviz); .dot and .html output work without it.")
    return exe


def run_dot(dot_text: str, fmt: str) -> bytes:
    """Lay out and draw ``dot_text`` with the ``dot`` program; its output as bytes."""
    try:
        proc = subprocess.run([dot_binary(), f"-T{fmt}"], input=dot_text.encode(), capture_output=True,
                              timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ArchError(f"Graphviz took more than {TIMEOUT_S} s to lay out the picture; draw it with a smaller "
                        "--depth.") from None
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ArchError(f"Graphviz's dot failed (exit {proc.returncode}): {msg[-1] if msg else 'no message'}")
    return proc.stdout


def write(path: Path, fmt: str, dot_text: str) -> None:
    data = dot_text.encode() if fmt == "dot" else run_dot(dot_text, fmt)
    try:
        path.write_bytes(data)
    except OSError as err:
        raise ArchError(f"Cannot write '{path}': {err.strerror}.") from None
