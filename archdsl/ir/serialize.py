"""Saving and loading the IR losslessly: structure as JSON, tensors as .npz."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..diagnostics import Span
from .graph import Graph, ScopeInfo
from .params import Param
from .types import QuantParams, numpy_dtype

FORMAT = "archdsl-ir/2"
READABLE = ("archdsl-ir/1", FORMAT)     # version 1 had no dtypes: every tensor was float32


def _jsonable(v):
    if isinstance(v, tuple):
        return {"__tuple__": [_jsonable(x) for x in v]}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def _restore(v):
    if isinstance(v, dict):
        if set(v) == {"__tuple__"}:
            return tuple(_restore(x) for x in v["__tuple__"])
        return {k: _restore(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_restore(x) for x in v]
    return v


def to_dict(graph: Graph) -> dict:
    nodes = []
    for nid in sorted(graph.nx.nodes):
        d = graph.data(nid)
        nodes.append({"id": nid, "op": d["op"], "attrs": _jsonable(d["attrs"]), "inputs": list(d["inputs"]),
                      "shape": list(d["shape"]), "dtype": d["dtype"],
                      "quant": d["quant"].to_json() if d["quant"] is not None else None,
                      "span": d["span"].to_json() if d["span"] else None,
                      "scope": d["scope"], "params": d["params"], "meta": _jsonable(d["meta"])})
    params = [{"name": p.name, "shape": list(p.shape), "init": p.init, "fan_in": p.fan_in, "fan_out": p.fan_out,
               "trainable": p.trainable, "dtype": p.dtype, "seed": p.seed,
               "quant": p.quant.to_json() if p.quant is not None else None} for p in graph.params.values()]
    scopes = {k: {"kind": s.kind, "name": s.name, "span": s.span.to_json() if s.span else None,
                  "args": _jsonable(s.args)} for k, s in graph.scopes.items()}
    return {"format": FORMAT, "name": graph.name, "inputs": graph.inputs, "outputs": graph.outputs,
            "next": graph._next, "nodes": nodes, "params": params, "scopes": scopes, "meta": _jsonable(graph.meta)}


def from_dict(data: dict, arrays=None) -> Graph:
    if data.get("format") not in READABLE:
        raise ValueError(f"not an {FORMAT} file")
    g = Graph(data["name"])
    for p in data["params"]:
        param = Param(p["name"], tuple(p["shape"]), p["init"], p["fan_in"], p["fan_out"], p["trainable"],
                      p["dtype"], p["seed"], QuantParams.from_json(p.get("quant")))
        if arrays is not None and p["name"] in arrays:
            param._value = _from_npz(arrays[p["name"]], p["dtype"])
        g.params[param.name] = param
    for n in data["nodes"]:
        g._g.add_node(n["id"], op=n["op"], attrs=_restore(n["attrs"]), inputs=tuple(n["inputs"]),
                      shape=tuple(n["shape"]), dtype=n.get("dtype", "float32"),
                      quant=QuantParams.from_json(n.get("quant")), span=Span.from_json(n["span"]), scope=n["scope"],
                      params=dict(n["params"]), meta=_restore(n["meta"]))
    for n in data["nodes"]:
        for src in n["inputs"]:
            g._g.add_edge(src, n["id"])
    g._next = data["next"]
    g.inputs, g.outputs = list(data["inputs"]), list(data["outputs"])
    g.scopes = {k: ScopeInfo(s["kind"], s["name"], Span.from_json(s["span"]), _restore(s["args"]))
                for k, s in data["scopes"].items()}
    g.meta = _restore(data["meta"])
    return g


def save(graph: Graph, path) -> None:
    """Write ``path`` (JSON) and ``path`` with suffix ``.npz`` (every parameter's values)."""
    path = Path(path)
    path.write_text(json.dumps(to_dict(graph), indent=1, sort_keys=True))
    np.savez(path.with_suffix(".npz"), **{name: _to_npz(p) for name, p in graph.params.items()})


def _to_npz(p: Param) -> np.ndarray:
    """NumPy's own formats have no bfloat16: its bits are stored as uint16."""
    return p.value.view(np.uint16) if p.dtype == "bfloat16" else p.value


def _from_npz(array, dtype: str) -> np.ndarray:
    array = np.asarray(array)
    if dtype == "bfloat16":
        return array.view(numpy_dtype(dtype)).copy()
    return np.array(array, dtype=numpy_dtype(dtype))


def load(path) -> Graph:
    path = Path(path)
    data = json.loads(path.read_text())
    npz = path.with_suffix(".npz")
    if npz.exists():
        with np.load(npz) as arrays:
            return from_dict(data, {k: arrays[k] for k in arrays.files})
    return from_dict(data)
