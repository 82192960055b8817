"""IR to ONNX, built node by node with the ``onnx`` package (no PyTorch, no tracing).

* Opset: :data:`DEFAULT_OPSET` (20) is the oldest opset that has every op the IR knows
  (``AffineGrid`` arrived in 20); ``opset=`` may ask for any opset from 13 to the newest the
  installed ``onnx`` knows, and a graph whose ops need a newer one is refused, naming the op
  and where the spec wrote it.
* The batch dimension is symbolic (``N``) in the inputs and outputs; nothing in the graph
  fixes it (``Flatten``/``Reshape`` copy it, ``AffineGrid`` reads it from theta).
* Types: inputs, outputs, initialisers and constants have the IR's dtypes (:func:`onnx_dtype`),
  and ``graph.value_info`` declares the shape and dtype of every other tensor of the main graph
  that an IR node computes, so viewers show them without running shape inference.
* Weights and buffers are initialisers named exactly as the IR names them
  (``layer1.0.conv1.weight``, the PyTorch ``state_dict`` keys). Each IR node becomes a node named
  by its scope (``layer1.0.conv1``) whose result tensor has the same name; helper nodes of a
  lowering are ``scope/What``. Every node carries ``metadata_props``: ``archdsl.scope``,
  ``archdsl.op``, ``archdsl.block`` (the innermost block instance around it, as
  ``scope:definition``) and ``archdsl.source`` (``file:line:col``).
* ``functions=True`` turns every block instance into a call of an ONNX local function
  (domain ``archdsl``) so the hierarchy survives export; weights become function inputs
  (functions have no initialisers). Instances whose bodies come out identical share one
  function, named after the block (``basic``, then ``basic_2``... for other specialisations).
"""
from __future__ import annotations

import functools
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..diagnostics import ArchError
from ..ir.graph import Graph
from ..ir.types import FLOAT_DTYPES, TensorType
from . import onnx_qoperator as _qoperator
from .onnx_ops import MIN_OPSET, OP_MIN_OPSET, RULES, onnx_dtype

DEFAULT_OPSET = 20
FUNCTION_DOMAIN = "archdsl"
_MIN_IR_VERSION = 10        # NodeProto.metadata_props


def _max_opset() -> int:
    return onnx.defs.onnx_opset_version()


class _Names:
    """Unique names in one namespace: the wanted name, else ``name_1``, ``name_2``..."""

    def __init__(self):
        self.used: set[str] = set()

    def take(self, want: str) -> str:
        name, i = want, 0
        while name in self.used:
            i += 1
            name = f"{want}_{i}"
        self.used.add(name)
        return name


class Body:
    """Where lowered nodes go: the main graph (constants are initialisers) or a function body
    (constants are ``Constant`` nodes, weights are function inputs)."""

    def __init__(self, graph: Graph, opset: int, function: bool, prefix: str = ""):
        self.graph, self.opset, self.function, self.prefix = graph, opset, function, prefix
        self.tensors, self.node_names = _Names(), _Names()
        self.nodes: list = []
        self.initializers: list = []          # (name, numpy array), written into the model at the end
        self.params: dict[str, str] = {}       # IR parameter name -> tensor name here
        self._consts: dict = {}
        self.types: dict[str, int] = {}        # tensor name -> TensorProto element type, where known
        self.base, self.meta, self.ir = "", {}, None

    def begin(self, base: str, meta: dict, ir: dict | None = None) -> None:
        """Start the nodes of one IR node (its data ``ir``) or one function call, named ``base``."""
        self.base, self.meta, self.ir = base, meta, ir

    def node(self, op_type: str, inputs, outputs, suffix: str | None = None, domain: str = "", **attrs) -> None:
        if not domain:
            self.check_types(op_type, inputs)
        if op_type == "Cast":
            self.types[outputs[0]] = attrs["to"]
        name = self.node_names.take(self.base if suffix is None else f"{self.base}/{suffix}")
        try:
            node = helper.make_node(op_type, list(inputs), list(outputs), name=name, domain=domain or None, **attrs)
        except ValueError as err:         # an attribute outside int64 (a stride of 10 ** 30)
            raise ArchError(f"The ONNX {op_type} node cannot hold this layer's attributes ({err}): ONNX "
                            "attributes are 64-bit integers.", (self.ir or {}).get("span")) from None
        for key, value in self.meta.items():
            node.metadata_props.add(key=key, value=value)
        self.nodes.append(node)

    def check_types(self, op_type: str, inputs) -> None:
        """Refuse, at the IR node, an operator that this opset does not define for its inputs' dtypes
        (bfloat16 ``Conv`` arrived in opset 22, say); float32 and int64 are defined everywhere."""
        for k, x in enumerate(inputs):
            t = self.types.get(x)
            if t in (None, TensorProto.FLOAT, TensorProto.INT64) or t in _allowed(op_type, self.opset, k):
                continue
            d = self.ir or {"op": op_type, "scope": self.base, "span": None, "dtype": "?"}
            kind = TensorProto.DataType.Name(t).lower()
            newer = next((v for v in range(self.opset + 1, _max_opset() + 1) if t in _allowed(op_type, v, k)), None)
            fix = (f"ask for --opset {newer} or newer, or cast it to float32 first" if newer else
                   "cast it to float32 first")
            raise ArchError(f"'{d['op']}' (at '{d['scope']}') computes in {d['dtype']}, but the ONNX operator "
                            f"{op_type} of opset {self.opset} takes no {kind} input; {fix}.", d["span"])

    def tmp(self, hint: str) -> str:
        return self.tensors.take(f"{self.base}/{hint}")

    def const(self, hint: str, array: np.ndarray) -> str:
        key = (self.base, hint, array.dtype.name, array.shape, array.tobytes())
        if key in self._consts:
            return self._consts[key]
        name = self.tensors.take(f"{self.base}/{hint}")
        if self.function:
            meta, self.meta = self.meta, {}
            self.node("Constant", [], [name], suffix=hint, value=numpy_helper.from_array(array, name))
            self.meta = meta
        else:
            self.initializers.append((name, array))
        self.types[name] = helper.np_dtype_to_tensor_dtype(array.dtype)
        self._consts[key] = name
        return name

    def param(self, n: dict, local: str) -> str:
        """The tensor of the node's parameter ``local``, cast to the node's float dtype if it has another."""
        pname = n["params"][local]
        name, dtype = self.param_named(pname), self.graph.params[pname].dtype
        if dtype == n["dtype"] or not {dtype, n["dtype"]} <= FLOAT_DTYPES:
            return name
        key = ("cast", pname, n["dtype"])
        if key not in self._consts:
            self._consts[key] = self.tmp(f"{local}_{n['dtype']}")
            self.node("Cast", [name], [self._consts[key]], suffix=f"Cast_{local}", to=onnx_dtype(n["dtype"]))
        return self._consts[key]

    def param_named(self, pname: str) -> str:
        if pname not in self.params:
            # the main graph reserved every parameter name up front: initialisers keep the IR's names
            name = self.tensors.take(_rel(pname, self.prefix)) if self.function else pname
            self.params[pname] = name
            self.types[name] = onnx_dtype(self.graph.params[pname].dtype)
            if not self.function:
                self.initializers.append((name, self.graph.params[pname].value))
        return self.params[pname]


@functools.lru_cache(maxsize=None)
def _allowed(op_type: str, opset: int, k: int) -> frozenset:
    """The element types input ``k`` of ``op_type`` takes in ``opset``."""
    schema = onnx.defs.get_schema(op_type, opset)
    formal = schema.inputs[min(k, len(schema.inputs) - 1)]
    strs = next((c.allowed_type_strs for c in schema.type_constraints if c.type_param_str == formal.type_str),
                [formal.type_str])
    return frozenset(TensorProto.DataType.Value(s[len("tensor("):-1].upper()) for s in strs
                     if s.startswith("tensor("))


def _rel(scope: str, prefix: str) -> str:
    if not prefix:
        return scope
    if scope == prefix:
        return ""
    return scope[len(prefix) + 1:] if scope.startswith(prefix + ".") else scope


def _source(span) -> str:
    return f"{span.file}:{span.line}:{span.col}" if span is not None else ""


def _attach_sources(err: ArchError, graph: Graph) -> ArchError:
    for name in graph.meta.get("sources", []):
        path = Path(name)
        if name not in err.sources and path.is_file():
            try:
                err.sources[name] = path.read_text(encoding="utf-8")
            except OSError:
                pass
    return err


class _Exporter:
    def __init__(self, graph: Graph, opset: int, functions: bool):
        self.g, self.opset, self.functions = graph, opset, functions
        self.order = graph.node_ids()
        self.pos = {nid: i for i, nid in enumerate(self.order)}
        self.users: dict[int, set] = {nid: set(graph.users(nid)) for nid in self.order}
        self.block_scopes = {s for s, info in graph.scopes.items() if info.kind == "block" and s}
        self.dissolved: set[str] = set()
        self.fn_protos: list = []
        self.fn_by_key: dict[bytes, str] = {}
        self.fn_variants: dict[str, int] = {}
        self.tensor_names: dict[int, str] = {}       # main graph only
        # quantize{format=qoperator}: groups of QDQ nodes emitted as integer operators (onnx_qoperator.py)
        self.fused = _qoperator.plan(graph) if _qoperator.wanted(graph, functions) else {}

    # ---- checks
    def check(self) -> None:
        for nid in self.order:
            d = self.g.data(nid)
            op = d["op"]
            if op == "input":
                continue
            if op not in RULES:
                raise ArchError(f"The ONNX backend has no rule for op '{op}' (at '{d['scope']}').", d["span"])
            need, onnx_op = OP_MIN_OPSET.get(op, (MIN_OPSET, None))
            if self.opset < need:
                raise ArchError(f"'{op}' needs ONNX opset {need} or newer (its {onnx_op} operator is not in opset "
                                f"{self.opset}); ask for --opset {need} or newer, or leave --opset out (the "
                                f"default is {DEFAULT_OPSET}).", d["span"])

    # ---- naming
    def block_of(self, scope: str) -> str:
        """The innermost block instance whose scope encloses ``scope`` (or ``""``)."""
        parts = scope.split(".")
        for k in range(len(parts), 0, -1):
            s = ".".join(parts[:k])
            if s in self.block_scopes:
                return s
        return ""

    def group_of(self, scope: str, prefix: str) -> str | None:
        """The outermost block instance strictly inside ``prefix`` enclosing ``scope`` (or None)."""
        parts = scope.split(".")
        start = len(prefix.split(".")) + 1 if prefix else 1
        for k in range(start, len(parts) + 1):
            s = ".".join(parts[:k])
            if s in self.block_scopes and s not in self.dissolved and (not prefix or s.startswith(prefix + ".")):
                return s
        return None

    def meta(self, d: dict, nid: int, prefix: str) -> dict:
        blk = self.block_of(d["scope"])
        meta = {"archdsl.scope": _rel(d["scope"], prefix) if prefix else d["scope"], "archdsl.op": d["op"]}
        if blk and not prefix:
            meta["archdsl.block"] = f"{blk}:{self.g.scopes[blk].name}"
        if d["span"] is not None:
            meta["archdsl.source"] = _source(d["span"])
        return meta

    def result_name(self, body: Body, nid: int, base: str, out_names: dict) -> str:
        if nid in out_names:
            return out_names[nid]
        return body.tensors.take(base)

    # ---- emission
    def items(self, nids: list, prefix: str) -> list:
        """The region's nodes and block-instance groups, in a dependency order."""
        if not self.functions:
            return [("node", n) for n in nids]
        while True:
            item_of, groups = {}, {}
            for n in nids:
                grp = self.group_of(self.g.data(n)["scope"], prefix)
                item_of[n] = ("node", n) if grp is None else ("group", grp)
                if grp is not None:
                    groups.setdefault(grp, []).append(n)
            q = nx.DiGraph()
            first = {}
            for n in nids:
                it = item_of[n]
                q.add_node(it)
                first.setdefault(it, self.pos[n])
                for src in self.g.data(n)["inputs"]:
                    if src in item_of and item_of[src] != it:
                        q.add_edge(item_of[src], it)
            bad = [c for c in nx.strongly_connected_components(q) if len(c) > 1]
            if not bad:
                order = nx.lexicographical_topological_sort(q, key=lambda it: first[it])
                return [("group", groups[key]) if kind == "group" else (kind, key) for kind, key in order]
            # a block instance that is not a closed region (a pass moved things across it): inline it
            self.dissolved.update(key for comp in bad for kind, key in comp if kind == "group")

    def region(self, body: Body, nids: list, prefix: str, tensor_of: dict, out_names: dict) -> None:
        for kind, what in self.items(nids, prefix):
            if kind == "node":
                self.lower(body, what, prefix, tensor_of, out_names)
            else:
                self.call(body, what, prefix, tensor_of, out_names)

    def lower(self, body: Body, nid: int, prefix: str, tensor_of: dict, out_names: dict) -> None:
        d = self.g.data(nid)
        fused = self.fused.get(nid)
        if d["op"] == "input" or fused is _qoperator.SKIP:
            return
        base = _rel(d["scope"], prefix) or d["op"]
        out = self.result_name(body, nid, base, out_names)
        body.begin(base, self.meta(d, nid, prefix), d)
        if fused is not None:
            fused(body, tensor_of, out)
            tensor_of[nid] = out
            return
        body.types.update({tensor_of[s]: onnx_dtype(self.g.data(s)["dtype"]) for s in d["inputs"]})
        shapes = [self.g.data(s)["shape"] for s in d["inputs"]]
        RULES[d["op"]](body, d, [tensor_of[s] for s in d["inputs"]], out, shapes)
        tensor_of[nid] = out

    def call(self, body: Body, members: list, prefix: str, tensor_of: dict, out_names: dict) -> None:
        inside = set(members)
        scope = self.group_of(self.g.data(members[0])["scope"], prefix)
        ext = []
        for n in members:
            for src in self.g.data(n)["inputs"]:
                if src not in inside and src not in ext:
                    ext.append(src)
        outs = [n for n in members
                if n in self.g.outputs or any(u not in inside for u in self.users[n])]
        child = Body(self.g, self.opset, function=True, prefix=scope)
        local = {src: child.tensors.take(f"in{i}") for i, src in enumerate(ext)}
        self.region(child, members, scope, local, {})
        fn_inputs = [local[s] for s in ext] + list(child.params.values())
        proto = helper.make_function(
            FUNCTION_DOMAIN, "", fn_inputs, [local[o] for o in outs], child.nodes,
            [helper.make_opsetid("", self.opset)]
            + ([helper.make_opsetid(FUNCTION_DOMAIN, 1)] if any(nd.domain == FUNCTION_DOMAIN for nd in child.nodes)
               else []))
        name = self.function_name(proto, self.g.scopes[scope].name)
        base = _rel(scope, prefix)
        args = [tensor_of[s] for s in ext] + [body.param_named(p) for p in child.params]
        results = [self.result_name(body, o, _rel(self.g.data(o)["scope"], prefix) or f"{scope}.out{i}",
                                    out_names) for i, o in enumerate(outs)]
        meta = {"archdsl.scope": base if prefix else scope, "archdsl.op": "block",
                "archdsl.block": f"{scope}:{self.g.scopes[scope].name}"}
        if self.g.scopes[scope].span is not None:
            meta["archdsl.source"] = _source(self.g.scopes[scope].span)
        body.begin(base, meta)
        body.node(name, args, results, domain=FUNCTION_DOMAIN)
        for o, r in zip(outs, results):
            tensor_of[o] = r

    def function_name(self, proto, block: str) -> str:
        key = proto.SerializeToString(deterministic=True)
        if key not in self.fn_by_key:
            stem = "".join(c if c.isalnum() or c == "_" else "_" for c in block) or "block"
            k = self.fn_variants[stem] = self.fn_variants.get(stem, 0) + 1
            name = stem if k == 1 else f"{stem}_{k}"
            proto.name = name
            self.fn_by_key[key] = name
            self.fn_protos.append(proto)
        return self.fn_by_key[key]

    def model(self) -> tuple:
        """``(model without initialisers, [(name, array)] of its initialisers)``."""
        g = self.g
        body = Body(g, self.opset, function=False)
        body.tensors.used.update(g.params)
        tensor_of, inputs = {}, []
        for nid in g.inputs:
            d = g.data(nid)
            name = body.tensors.take(d["attrs"].get("name") or f"input{len(inputs)}")
            tensor_of[nid] = name
            inputs.append(_value_info(name, g.type_of(nid)))
        want = ["output"] if len(g.outputs) == 1 else [f"output{i}" for i in range(len(g.outputs))]
        final = [body.tensors.take(name) for name in want]
        out_names = {}
        for nid, name in zip(g.outputs, final):
            if nid not in out_names and g.data(nid)["op"] != "input":
                out_names[nid] = name
        self.region(body, list(self.order), "", tensor_of, out_names)
        outputs = []
        for nid, name in zip(g.outputs, final):
            if tensor_of[nid] != name:       # an input or a repeated output: give it its own name
                body.begin(name, {"archdsl.op": "output"})
                body.node("Identity", [tensor_of[nid]], [name])
            outputs.append(_value_info(name, g.type_of(nid)))
        self.tensor_names = dict(tensor_of)
        declared = {v.name for v in inputs + outputs}
        inner = [_value_info(tensor_of[nid], g.type_of(nid)) for nid in self.order
                 if nid in tensor_of and tensor_of[nid] not in declared]
        model = onnx.ModelProto()
        graph = model.graph
        graph.name = g.name
        graph.node.extend(body.nodes)
        graph.input.extend(inputs)
        graph.output.extend(outputs)
        graph.value_info.extend(inner)
        opsets = [helper.make_opsetid("", self.opset)]
        if any(n.domain == _qoperator.MS for n in body.nodes):
            opsets.append(helper.make_opsetid(_qoperator.MS, 1))
        if self.fn_protos:
            opsets.append(helper.make_opsetid(FUNCTION_DOMAIN, 1))
        model.opset_import.extend(opsets)
        model.functions.extend(self.fn_protos)
        from .. import __version__
        model.producer_name, model.producer_version = "archdsl", __version__
        model.ir_version = max(_MIN_IR_VERSION, helper.find_min_ir_version_for(opsets, ignore_unknown=True))
        model.doc_string = f"{g.name} from {g.meta.get('file', '<spec>')}, compiled by archdsl"
        helper.set_model_props(model, {"archdsl.model": g.name, "archdsl.spec": str(g.meta.get("file", ""))})
        return model, body.initializers


def _value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, onnx_dtype(t.dtype), list(t.shape))   # "N" becomes a dim_param


def check_opset(opset: int | None) -> int:
    if opset is None:
        return DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise ArchError(f"The opset is an integer such as {DEFAULT_OPSET}, not {type(opset).__name__}.")
    if not MIN_OPSET <= opset <= _max_opset():
        raise ArchError(f"The ONNX backend emits opsets {MIN_OPSET} to {_max_opset()} (the newest the installed "
                        f"onnx package knows), but opset {opset} was asked for.")
    return opset


def _tensor_header(name: str, array: np.ndarray) -> onnx.TensorProto:
    t = onnx.TensorProto()
    t.name = name
    t.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
    t.dims.extend(array.shape)
    return t


def check_graph(graph: Graph, opset: int | None = None) -> int:
    """Raise the ArchError that emitting ``graph`` at ``opset`` would raise; return the opset."""
    if not isinstance(graph, Graph):
        raise ArchError(f"The ONNX backend takes a Graph (from archdsl.load), not {type(graph).__name__}.")
    exporter = _Exporter(graph, check_opset(opset), False)
    try:
        exporter.check()
    except ArchError as err:
        raise _attach_sources(err, graph) from None
    return exporter.opset


def _skeleton(graph: Graph, opset: int | None, functions: bool):
    exporter = _Exporter(graph, check_graph(graph, opset), functions)
    try:
        model, weights = exporter.model()
    except ArchError as err:
        raise _attach_sources(err, graph) from None
    return model, weights, exporter.tensor_names


def emit(graph: Graph, opset: int | None = None, functions: bool = False):
    """``(model, names)``: the ONNX model and the ONNX tensor name of each IR node's result
    (for the nodes of the main graph; inside functions, those that leave a function call)."""
    model, weights, names = _skeleton(graph, opset, functions)
    for name, array in weights:
        t = model.graph.initializer.add()
        t.CopyFrom(_tensor_header(name, array))
        t.raw_data = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
    return model, names


def to_onnx(graph: Graph, opset: int | None = None, functions: bool = False) -> onnx.ModelProto:
    """An ONNX model computing ``graph`` in inference mode (batch norm uses running statistics)."""
    return emit(graph, opset, functions)[0]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def onnx_chunks(graph: Graph, opset: int | None = None, functions: bool = False) -> list:
    """The serialised model as a list of byte buffers, weights written straight from their arrays.

    Protocol buffers merge repeated occurrences of a message field, so the model is the
    serialised model without initialisers followed by a second ``graph`` field (number 7)
    holding only the initialisers (GraphProto field 5; TensorProto ``raw_data`` is field 9).
    Parsing the concatenation gives exactly :func:`to_onnx`'s model, without copying each
    weight tensor into a protobuf message first.
    """
    model, weights, _ = _skeleton(graph, opset, functions)
    chunks, tensors = [model.SerializeToString(deterministic=True)], []
    for name, array in weights:
        # ascontiguousarray makes a 0-D array 1-D: keep the shape (a per-tensor scale is a scalar)
        array = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).reshape(np.shape(array))
        head = _tensor_header(name, array).SerializeToString(deterministic=True)
        head += b"\x4a" + _varint(array.nbytes)
        tensors.append((b"\x2a" + _varint(len(head) + array.nbytes) + head, memoryview(array).cast("B")))
    size = sum(len(h) + len(d) for h, d in tensors)
    chunks.append(b"\x3a" + _varint(size))
    for head, data in tensors:
        chunks += [head, data]
    return chunks


def onnx_bytes(graph: Graph, opset: int | None = None, functions: bool = False) -> bytes:
    """``to_onnx(...)`` serialised (see :func:`onnx_chunks` for the layout)."""
    return b"".join(onnx_chunks(graph, opset, functions))


def save_onnx(graph: Graph, path, opset: int | None = None, functions: bool = False) -> None:
    """Write the model to ``path`` (one file; byte-identical for the same spec)."""
    chunks = onnx_chunks(graph, opset, functions)      # errors come before the file is touched
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
