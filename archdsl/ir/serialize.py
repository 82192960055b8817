"""Saving and loading the IR losslessly: structure as JSON, tensors as .npz."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..diagnostics import Span
from .graph import Graph, ScopeInfo
from .inits import Initialiser
from .params import Param
from .types import QuantParams, numpy_dtype

FORMAT = "archdsl-ir/2"
READABLE = ("archdsl-ir/1", FORMAT)     # version 1 had no dtypes: every tensor was float32


MAX_VALUE_DEPTH = 200      # lists, tuples and dicts within an attribute, meta or argument value


def _too_deep() -> ValueError:
    return ValueError(f"a value nests more than {MAX_VALUE_DEPTH} levels of lists, tuples or objects")


def _jsonable(v, depth: int = 0):
    if depth > MAX_VALUE_DEPTH:
        raise _too_deep()
    if isinstance(v, Initialiser):           # normal(0.01): {"__init__": {"initialiser": "normal", "args": ...}}
        return {"__init__": v.to_json()}
    if isinstance(v, tuple):
        return {"__tuple__": [_jsonable(x, depth + 1) for x in v]}
    if isinstance(v, list):
        return [_jsonable(x, depth + 1) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x, depth + 1) for k, x in v.items()}
    return v


def _restore(v, depth: int = 0):
    """A value read back from JSON; the depth check keeps a crafted file from exhausting Python's stack."""
    if depth > MAX_VALUE_DEPTH:
        raise _too_deep()
    if isinstance(v, dict):
        if set(v) == {"__tuple__"}:
            return tuple(_restore(x, depth + 1) for x in v["__tuple__"])
        if set(v) == {"__init__"}:
            return Initialiser.from_json(v["__init__"])
        return {k: _restore(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        return [_restore(x, depth + 1) for x in v]
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
    params = [{"name": p.name, "shape": list(p.shape), "init": _jsonable(p.init), "fan_in": p.fan_in, "fan_out": p.fan_out,
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
        param = Param(p["name"], tuple(p["shape"]), _restore(p["init"]), p["fan_in"], p["fan_out"], p["trainable"],
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


MAX_SAVED_IR_BYTES = 512 * 2**20      # the JSON (structure only; the tensors are in the .npz)


def load_checked(path, max_nodes: int | None = None) -> Graph:
    """:func:`load` for files from outside: every problem is an :class:`~archdsl.diagnostics.ArchError`
    naming the file, and the graph passes :func:`~archdsl.ir.verify.verify` (edges, cycles, arity,
    attributes, names, types) plus the checks verify takes for granted (dimensions, tensor shapes)."""
    from ..diagnostics import ArchError, IRError
    from .verify import verify
    path = Path(path)
    here = Span.of_file(path)

    def damaged(what: str) -> ArchError:
        return ArchError(f"This saved IR is damaged or not an IR file: {what}. Save it again with "
                         "`archc ir -o FILE.json`.", here)

    try:
        if not path.is_file():
            raise ArchError("Cannot read this file: it does not exist or is not a regular file.", here)
        if path.stat().st_size > MAX_SAVED_IR_BYTES:
            raise ArchError(f"This saved IR is larger than {MAX_SAVED_IR_BYTES // 2**20} MiB, the limit for "
                            "the graph's structure.", here)
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise damaged("it is not UTF-8 text") from None
    except OSError as err:
        raise ArchError(f"Cannot read this file: {err.strerror or err}.", here) from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        line, col = (err.lineno, err.colno) if isinstance(err, json.JSONDecodeError) else (0, 0)
        raise ArchError(f"This saved IR is not valid JSON ({getattr(err, 'msg', 'nested too deeply')}).",
                        Span(str(path), line, col, line, col + 1) if line else here,
                        sources={str(path): text}) from None
    if not isinstance(data, dict) or data.get("format") not in READABLE:
        found = data.get("format") if isinstance(data, dict) else None
        raise ArchError(f"This file is not a saved archdsl IR: its format is {found!r}, and this version reads "
                        f"{' and '.join(READABLE)}.", here)
    if max_nodes is not None and len(data.get("nodes") or ()) > max_nodes:
        raise ArchError(f"This saved IR has {len(data['nodes'])} nodes, more than --max-nodes {max_nodes}.", here)
    arrays = None
    npz = path.with_suffix(".npz")
    try:
        if npz.exists():
            with np.load(npz, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
    except Exception as err:  # noqa: BLE001 - OSError, ValueError, zipfile.BadZipFile from a damaged archive
        raise ArchError(f"Cannot read the tensors of this IR: {type(err).__name__}: {err}.",
                        Span.of_file(npz)) from None
    if data.get("params"):
        _check_tensors(data, arrays, npz, path)
    try:
        _check_references(data)
        g = from_dict(data, arrays)
        _check_dimensions(g, arrays)
        for nid in g.nx.nodes:          # a node without a source location (built in Python) is located here
            if g.data(nid)["span"] is None:
                g.data(nid)["span"] = here
    except KeyError as err:
        raise damaged(f"a required field {err.args[0]!r} is missing") from None
    except (TypeError, ValueError, AttributeError, IndexError) as err:
        raise damaged(str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}") from None
    try:
        verify(g)
    except IRError as err:
        from ..diagnostics import Note
        d = err.diagnostic
        err.diagnostic = type(d)(d.message, d.span, (*d.notes, Note("the graph was loaded from this saved IR, "
                                                                    "which is damaged", here)))
        raise
    return g


def _check_tensors(data: dict, arrays, npz: Path, path: Path) -> None:
    """Every parameter's values are in the ``.npz`` and nothing else is: a missing file or tensor would
    silently become fresh initial values (losing trained or folded weights), an extra one would be ignored."""
    from ..diagnostics import ArchError
    if arrays is None:
        raise ArchError(f"The tensors of this IR are missing: '{npz.name}' is not beside it, and without it every "
                        "weight would be a fresh initial value. Put the .npz that `archc ir -o` wrote beside "
                        f"'{path.name}'.", Span.of_file(path))
    try:
        names = [p["name"] for p in data["params"]]
    except (TypeError, KeyError):
        return                      # a damaged parameter list: from_dict says what is wrong
    want, have = set(map(str, names)), set(arrays)
    for what, names in (("has no values for the parameters", sorted(want - have)),
                        ("holds tensors that no parameter of the IR has", sorted(have - want))):
        if names:
            listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise ArchError(f"The tensors file {what}: {listed}; it and '{path.name}' do not belong together. "
                            "Save the IR again with `archc ir -o FILE.json`.", Span.of_file(npz))


def _check_references(data: dict) -> None:
    """Node ids are unique ints, and every input, model input and output names one of them."""
    ids = [n["id"] for n in data["nodes"]]
    if any(type(i) is not int for i in ids) or len(set(ids)) != len(ids):
        raise ValueError("node ids must be distinct integers")
    known = set(ids)
    for n in data["nodes"]:
        for src in n["inputs"]:
            if type(src) is not int or src not in known:
                raise ValueError(f"node {n['id']} reads node {src!r}, which is not a node id")
    for key in ("inputs", "outputs"):
        for nid in data[key]:
            if type(nid) is not int or nid not in known:
                raise ValueError(f"the model's {key} name node {nid!r}, which is not a node id")
    if type(data["next"]) is not int or data["next"] <= max(ids, default=-1):
        raise ValueError(f"'next' is {data['next']!r}, but it must be an integer above every node id")


def _check_dimensions(g: Graph, arrays) -> None:
    """Dimensions are positive ints (the batch may be ``"N"``), tensors match their declared shapes."""
    def dims_ok(shape, batch: bool) -> bool:
        return all((batch and i == 0 and d == "N") or (type(d) is int and 0 < d < 2**31)
                   for i, d in enumerate(shape))

    for nid in g.nx.nodes:
        d = g.data(nid)
        if not dims_ok(d["shape"], True):
            raise ValueError(f"node {nid} has the shape {d['shape']}, whose dimensions are not positive integers")
    for name, p in g.params.items():
        if type(p.trainable) is not bool:
            raise ValueError(f"parameter {name} has 'trainable' {p.trainable!r}, which must be true or false")
        if p.seed is not None and type(p.seed) is not int:
            raise ValueError(f"parameter {name} has the seed {p.seed!r}, which must be an integer")
        if not dims_ok(p.shape, False):
            raise ValueError(f"parameter {name} has the shape {p.shape}, whose dimensions are not positive")
        if arrays is not None and name in arrays and tuple(arrays[name].shape) != tuple(p.shape):
            raise ValueError(f"parameter {name} is declared {tuple(p.shape)} but its stored tensor is "
                             f"{tuple(arrays[name].shape)}")
