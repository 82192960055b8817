"""archdsl: a compiler for CNN architectures written in the .arch language.

``load`` turns a spec into the shape-checked graph IR; backends turn the IR into
PyTorch modules (``to_torch``) and ONNX models (``to_onnx``).
"""
from .api import load
from .diagnostics import ArchError, Diagnostic, Note, Span
from .ir.graph import Graph

__all__ = ["load", "ArchError", "Diagnostic", "Note", "Span", "Graph", "to_torch"]
__version__ = "0.1.0"


def to_torch(graph, **kwargs):
    """A ``torch.nn.Module`` computing ``graph`` (imports torch on first use)."""
    from .backends.torch_module import to_torch as _to_torch
    return _to_torch(graph, **kwargs)
