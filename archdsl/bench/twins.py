"""torchvision twins: the torchvision model a zoo model reproduces, if any.

A model is a twin candidate when its name is a torchvision classification model
(``resnet50``, ``vgg16_bn``, ``densenet121``...). It counts as a twin only if the two agree:
the same parameter and buffer names and shapes (then the IR's weights are loaded into it, so
both compute the same function), or else at least the same number of parameters.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph

# constructor arguments that make torchvision's model the plain inference network
_KWARGS = {"googlenet": {"aux_logits": False, "init_weights": False},
           "inception_v3": {"aux_logits": False, "init_weights": False}}


def find_twin(graph: Graph):
    """``(module, note)`` for the model's torchvision twin, or ``(None, reason)``."""
    import torch
    import torchvision
    name = graph.name
    if name not in torchvision.models.list_models(module=torchvision.models):
        return None, f"torchvision has no model named '{name}'"
    num_classes = graph.data(graph.outputs[0])["shape"][-1]
    try:
        twin = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **_KWARGS.get(name, {}))
    except Exception as err:        # torchvision refuses this configuration
        return None, f"torchvision's {name} cannot be built with {num_classes} classes ({err})"
    twin.eval()
    state = twin.state_dict()
    ours = {k: tuple(p.shape) for k, p in graph.params.items()}
    theirs = {k: tuple(v.shape) for k, v in state.items()}
    if ours == theirs:
        values = type(state)((k, torch.from_numpy(np.array(p.value))) for k, p in graph.params.items())
        values._metadata = getattr(state, "_metadata", None)     # versions some modules check (MNASNet)
        twin.load_state_dict(values)
        return twin, "same parameter names and shapes; the spec's weights are loaded into it"
    n_ours = graph.param_count()
    n_theirs = sum(p.numel() for p in twin.parameters())
    if n_ours == n_theirs:
        return twin, "same parameter count, different names; it runs with its own random weights"
    return None, f"torchvision's {name} has {n_theirs} parameters, the spec {n_ours}"
