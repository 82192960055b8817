"""archdsl: a compiler for CNN architectures written in the .arch language.

``load`` turns a spec into the shape-checked graph IR; backends turn the IR into
PyTorch modules (``to_torch``) and ONNX models (``to_onnx``).
"""
from .api import ModelInfo, list_models, load
from .diagnostics import ArchError, Diagnostic, Note, Span
from .ir.graph import Graph

__all__ = ["load", "list_models", "ModelInfo", "ArchError", "Diagnostic", "Note", "Span", "Graph", "to_torch", "to_onnx"]
__version__ = "0.1.0"


def to_torch(graph, **kwargs):
    """A ``torch.nn.Module`` computing ``graph`` (imports torch on first use)."""
    from .backends.torch_module import to_torch as _to_torch
    return _to_torch(graph, **kwargs)


def to_onnx(graph, opset=None, functions=False):
    """An ``onnx.ModelProto`` computing ``graph`` (imports onnx on first use; no PyTorch)."""
    from .backends.onnx_export import to_onnx as _to_onnx
    return _to_onnx(graph, opset=opset, functions=functions)
