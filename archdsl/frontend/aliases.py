"""Other spellings of the built-in ops: torch.nn class names and common names, for did-you-mean hints.

A spec written by someone who knows PyTorch often says ``BatchNorm2d`` or ``ReLU``; a
string-similarity match finds nothing for those (or the wrong op: ``global_avgpool``
looks like ``avgpool``). :func:`suggest` answers such a name with the archdsl way of
writing it and what it stands for: "; did you mean 'bn'? (torch.nn.BatchNorm2d is 'bn'
here)". Names are compared without case and without '_': ``batch_norm``, ``BatchNorm``
and ``batchnorm2d`` are one key.
"""
from __future__ import annotations

# key (lower case, no '_') -> (the op, what the name stands for, how to write it here)
_TABLE = {
    "batchnorm2d": ("bn", "torch.nn.BatchNorm2d", "bn"),
    "batchnorm1d": ("bn", "torch.nn.BatchNorm1d", "bn"),
    "batchnorm": ("bn", "torch.nn.BatchNorm2d", "bn"),
    "bn2d": ("bn", "torch.nn.BatchNorm2d", "bn"),
    "conv2d": ("conv", "torch.nn.Conv2d(in, out, k)", "conv(out, k)"),
    "convolution": ("conv", "torch.nn.Conv2d(in, out, k)", "conv(out, k)"),
    "linear": ("linear", "torch.nn.Linear(in, out)", "linear(out)"),
    "fc": ("linear", "torch.nn.Linear(in, out)", "linear(out)"),
    "maxpool2d": ("maxpool", "torch.nn.MaxPool2d", "maxpool"),
    "avgpool2d": ("avgpool", "torch.nn.AvgPool2d", "avgpool"),
    "adaptiveavgpool2d": ("adaptive_avgpool", "torch.nn.AdaptiveAvgPool2d", "adaptive_avgpool"),
    "adaptivemaxpool2d": ("adaptive_maxpool", "torch.nn.AdaptiveMaxPool2d", "adaptive_maxpool"),
    "globalavgpool": ("adaptive_avgpool(1)", "global average pooling", "adaptive_avgpool(1)"),
    "globalavgpool2d": ("adaptive_avgpool(1)", "global average pooling", "adaptive_avgpool(1)"),
    "globalaveragepool": ("adaptive_avgpool(1)", "global average pooling", "adaptive_avgpool(1)"),
    "globalaveragepooling": ("adaptive_avgpool(1)", "global average pooling", "adaptive_avgpool(1)"),
    "gap": ("adaptive_avgpool(1)", "global average pooling", "adaptive_avgpool(1)"),
    "globalmaxpool": ("adaptive_maxpool(1)", "global max pooling", "adaptive_maxpool(1)"),
    "globalmaxpool2d": ("adaptive_maxpool(1)", "global max pooling", "adaptive_maxpool(1)"),
    "dropout": ("dropout", "torch.nn.Dropout", "dropout"),
    "dropout2d": ("dropout2d", "torch.nn.Dropout2d", "dropout2d"),
    "layernorm": ("layer_norm", "torch.nn.LayerNorm", "layer_norm"),
    "layernorm2d": ("layer_norm", "a LayerNorm over the channels", "layer_norm(1)"),
    "localresponsenorm": ("lrn", "torch.nn.LocalResponseNorm", "lrn"),
    "relu": ("relu", "torch.nn.ReLU", "relu"),
    "relu6": ("relu6", "torch.nn.ReLU6", "relu6"),
    "leakyrelu": ("leaky_relu", "torch.nn.LeakyReLU", "leaky_relu"),
    "elu": ("elu", "torch.nn.ELU", "elu"),
    "gelu": ("gelu", "torch.nn.GELU", "gelu"),
    "silu": ("silu", "torch.nn.SiLU", "silu"),
    "swish": ("silu", "swish (torch.nn.SiLU)", "silu"),
    "hardswish": ("hardswish", "torch.nn.Hardswish", "hardswish"),
    "hswish": ("hardswish", "torch.nn.Hardswish", "hardswish"),
    "hardsigmoid": ("hardsigmoid", "torch.nn.Hardsigmoid", "hardsigmoid"),
    "hsigmoid": ("hardsigmoid", "torch.nn.Hardsigmoid", "hardsigmoid"),
    "sigmoid": ("sigmoid", "torch.nn.Sigmoid", "sigmoid"),
    "tanh": ("tanh", "torch.nn.Tanh", "tanh"),
    "softmax": ("softmax", "torch.nn.Softmax", "softmax"),
    "logsoftmax": ("log_softmax", "torch.nn.LogSoftmax", "log_softmax"),
    "flatten": ("flatten", "torch.nn.Flatten", "flatten"),
    "identity": ("identity", "torch.nn.Identity", "identity"),
    "stochasticdepth": ("drop_path", "torchvision.ops.StochasticDepth", "drop_path"),
    "droppath": ("drop_path", "torchvision.ops.StochasticDepth", "drop_path"),
    "cat": ("concat", "torch.cat", "concat"),
    "concatenate": ("concat", "torch.cat", "concat"),
    "sequential": ("[a -> b]", "torch.nn.Sequential(a, b)", "[a -> b]"),
}


def key(name: str) -> str:
    return name.replace("_", "").lower()


def suggest(name: str, candidates=()) -> str:
    """A "; did you mean ...?" suffix for ``name``: a visible name that differs only in case or '_'
    (a block ``Conv_Block`` for ``convblock``), else the op another spelling stands for, else "".

    ``candidates`` are the names visible where ``name`` was written."""
    hit = _TABLE.get(key(name))
    own = sorted(c for c in candidates if c != name and key(c) == key(name) and (hit is None or c != hit[0]))
    if own:
        return f"; did you mean '{own[0]}'?"
    if hit is None or hit[0] == name:
        return ""
    op, meaning, written = hit
    inferred = {"conv": "; the input channels come from the input",
                "linear": "; the input features come from the input"}.get(op, "") if written != op else ""
    return f"; did you mean '{op}'? ({meaning} is '{written}' here{inferred})"
