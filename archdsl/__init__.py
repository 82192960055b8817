"""archdsl: a compiler for CNN architectures written in the .arch language.

``load`` turns a spec into the shape-checked graph IR; backends turn the IR into
PyTorch modules (``to_torch``) and ONNX models (``to_onnx``); ``from_torch`` brings
a (trained) PyTorch module's weights back into the IR.
"""
from .api import ModelInfo, list_models, load
from .diagnostics import ArchError, Diagnostic, Note, Span
from .ir.graph import Graph

__all__ = ["load", "list_models", "ModelInfo", "ArchError", "Diagnostic", "Note", "Span", "Graph", "to_torch", "to_onnx",
           "from_torch"]
__version__ = "0.1.0"


def to_torch(graph, **kwargs):
    """A ``torch.nn.Module`` computing ``graph`` (imports torch on first use).

    ``load_weights=False`` gives PyTorch's default initialisation instead of the IR's
    weights; ``device="cuda"`` builds it there (default: torch's default device).
    """
    from .backends.torch_module import to_torch as _to_torch
    return _to_torch(graph, **kwargs)


def to_onnx(graph, opset=None, functions=False):
    """An ``onnx.ModelProto`` computing ``graph`` (imports onnx on first use; no PyTorch)."""
    from .backends.onnx_export import to_onnx as _to_onnx
    return _to_onnx(graph, opset=opset, functions=functions)


def from_torch(graph, module_or_state_dict):
    """A new graph: a copy of ``graph`` holding the weights of a PyTorch module (or of its state_dict).

    The module is one made from this graph (``to_torch``, or the generated source of
    ``archc compile --target torch-src``), typically after training: its
    ``state_dict`` keys are the IR's parameter names. Every name must match with the
    same shape, else :class:`ArchError` lists the missing, unexpected and wrong-shaped
    ones; values are converted to each parameter's IR dtype. ``graph`` is unchanged.
    """
    from .backends.weights import update_from_state_dict
    return update_from_state_dict(graph, module_or_state_dict)
