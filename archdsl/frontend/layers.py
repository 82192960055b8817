"""Applying layers to tensors: ops, block instances and the topology constructs.

Naming (it decides the parameter names of generated modules):

* a labelled layer is named by its label (``conv1``, ``layer{i + 1}``, ``block{i}-{j}``), whose
  text must match ``[A-Za-z_][A-Za-z0-9_-]*`` (ASCII) once interpolated;
* an unlabelled layer takes the next position number of its scope, like an
  entry of ``nn.Sequential``; the merge node of a construct counts as a layer;
* block instances and ``[...]`` sequences open a new scope (so do sequence values and lists of
  layers applied with ``->``);
* ``residual``, ``parallel``, ``dense`` and ``stn`` open a scope only when
  labelled; otherwise their layers live in the enclosing scope.
"""
from __future__ import annotations

import re

from ..diagnostics import ArchError, Note, Span, did_you_mean
from ..ir import ops as op_registry
from ..ir.graph import ScopeInfo
from ..ir.params import Param
from ..ir.shape_rules import ShapeError, fmt
from ..syntax import ast
from .aliases import suggest
from .binding import Slot, bind
from .expressions import STEPS_PER_NODE, Env
from .values import BUILTINS, OPS, FunctionRef, LayerRef, SeqValue, TensorRef, is_layer, show, type_name

DEFAULT_MAX_NODES = 10_000  # 9 times the largest zoo model; the step budget pays for building them
EDGES_PER_NODE = 10        # the tensors all layers read, at most this many times the node limit
IDENTITY_AFFINE = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
_LABEL_PART = re.compile(r"[A-Za-z0-9_-]*")


class Scope:
    """A naming scope: its dotted path, the next position number and the labels used so far."""

    __slots__ = ("path", "counter", "used")

    def __init__(self, path: str):
        self.path = path
        self.counter = 0
        self.used: dict[str, Span] = {}

    def child(self, name: str | None, span: Span) -> str:
        if name is None:
            name = str(self.counter)
            while name in self.used:                     # a label may have taken the number
                self.counter += 1
                name = str(self.counter)
        elif name in self.used:
            raise ArchError(f"The label '{name}' is used twice in the same scope; labels name parameters and "
                            "must be unique, so give this one another name.", span,
                            (Note(f"'{name}' is first used here", self.used[name]),))
        self.counter += 1
        self.used[name] = span
        return f"{self.path}.{name}" if self.path else name


_OP_SLOTS: dict = {}


def _op_slots(opdef) -> list:
    slots = _OP_SLOTS.get(opdef.name)
    if slots is None:
        slots = _OP_SLOTS[opdef.name] = [Slot(a.name, a.kind, a.default) for a in opdef.args]
    return slots


class LayerMixin:
    """Layer application; mixed into :class:`archdsl.frontend.elaborate.Elaborator`."""

    # ---- chains
    def apply_chain(self, layers, tensors: list, env) -> list:
        for layer in layers:
            tensors = self.apply_layer(layer, tensors, env)
        return tensors

    def apply_layer(self, layer, tensors: list, env) -> list:
        self.tick(layer.span)
        return self._layer_dispatch[type(layer)](self, layer, tensors, env)

    def label_name(self, label: ast.Label | None, env) -> str | None:
        """The text of a label: its pieces with the interpolated values (ints or strings) put in."""
        if label is None:
            return None
        if len(label.parts) == 1:
            return label.parts[0]
        texts, bad = [], None
        for part in label.parts:
            if isinstance(part, str):
                texts.append(part)
                continue
            value = self.eval(part, env)
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ArchError(f"A value in a label must be an int or a string, but got {type_name(value)}.",
                                part.span)
            texts.append(str(value))
            if bad is None and not _LABEL_PART.fullmatch(texts[-1]):
                bad = (value, part.span)
        text = "".join(texts)
        if bad is not None:
            raise ArchError(f"The label {show(text, 60)} is not a valid name: the value {show(bad[0], 40)} may hold "
                            "only ASCII letters, digits, '_' and '-'.", bad[1])
        return text

    def open_scope(self, label, env, kind: str, name: str, span: Span, args=None):
        path = self.scope.child(self.label_name(label, env), label.span if label else span)
        self.graph.scopes[path] = ScopeInfo(kind, name, span, args or {})
        return Scope(path)

    def in_scope(self, scope: Scope, fn):
        saved, self.scope = self.scope, scope
        try:
            return fn()
        finally:
            self.scope = saved

    # ---- a single layer call: an op or a block
    def _call(self, layer: ast.LayerCall, tensors, env):
        ref = self.resolve_layer(layer.callee, env, layer.callee_span)
        if not isinstance(ref, LayerRef):          # a sequence value or a list of layers
            if layer.args.positional or layer.args.keywords:
                raise ArchError(f"'{'.'.join(layer.callee)}' is a sequence of layers and takes no arguments; "
                                "configure its layers where it is built.", layer.args.span)
            return self.apply_value(ref, tensors, layer.label, env, layer.span)
        pos, kw = self.eval_args(layer.args, env)
        pos = list(ref.bound_pos) + pos
        kw = {**dict(ref.bound_kw), **kw}
        if isinstance(ref.target, (ast.Definition, ast.ModelAlias)):
            return self.call_block(ref, pos, kw, tensors, layer.label, env, layer.span)
        return [self.apply_op(ref.target, pos, kw, tensors, layer.label, env, layer.span)]

    def resolve_layer(self, names: tuple, env, span: Span):
        """The layer a (dotted) name after ``->`` means: a LayerRef, a sequence value or a list of layers."""
        head = names[0]
        if head == "ops":
            if len(names) != 2:
                raise ArchError("After `ops.` comes the name of one built-in op, as in `ops.dropout(0.1)`.", span)
            return self._attr(ast.Attr(span, ast.Var(span, "_"), names[1]), Env(env.module, {"_": OPS}))
        known = head in env or (env.module is not None and env.module.lookup(head) is not None)
        if not known and len(names) > 1:
            spaces = env.module.namespaces if env.module is not None else {}
            torch_like = head in ("nn", "torch", "F") and suggest(names[-1])
            if torch_like:                      # `nn.BatchNorm2d`: the ops need no prefix here
                raise ArchError(f"Unknown namespace '{head}': the built-in ops are written without a prefix"
                                + torch_like, span)
            raise ArchError(f"Unknown namespace '{head}'" + (did_you_mean(head, spaces) or
                            f"; import a file with `import \"file.arch\" as {head}`."), span)
        opdef = op_registry.get(head)
        if not known and head not in BUILTINS and (opdef is None or not opdef.in_specs):
            names_here = self.layer_names(env)
            raise ArchError(f"Unknown layer '{head}'" + (suggest(head, names_here) or did_you_mean(head, names_here)
                                                         or "; no op, block or variable has this name."), span)
        value = self.lookup(head, env, span)
        for part in names[1:]:
            value = self._attr(ast.Attr(span, ast.Var(span, "_"), part), Env(env.module, {"_": value}))
        if isinstance(value, FunctionRef):
            raise ArchError(f"'{'.'.join(names)}' is a function, not a layer: call it in an expression "
                            f"(`n = {'.'.join(names)}(...)`) and pass its result to a layer.", span)
        if not is_layer(value):
            raise ArchError(f"'{'.'.join(names)}' is {type_name(value)}, not a layer; only blocks, ops, sequences "
                            "and lists of them can follow '->'.", span)
        return value

    @staticmethod
    def layer_names(env) -> set:
        """Names that can follow '->' here: ops, visible blocks and models, variables holding layers."""
        names = {n for n, op in op_registry.OPS.items() if op.in_specs}
        names |= {n for n, v in env.flat().items() if is_layer(v)}
        if env.module is not None:
            names |= {n for n in env.module.visible_names()
                      if isinstance(env.module.lookup(n)[0], (ast.Definition, ast.ModelAlias))}
        return names

    def apply_op(self, opdef, pos, kw, tensors, label, env, span: Span, attrs=None) -> TensorRef:
        what = f"'{opdef.name}'"
        if attrs is None:
            attrs = bind(what, _op_slots(opdef), pos, kw, span)
        n = len(tensors)
        if opdef.arity is not None and n != opdef.arity:
            raise ArchError(f"{what} takes {opdef.arity} input tensor{'s' if opdef.arity != 1 else ''} "
                            f"but {n} {'were' if n != 1 else 'was'} piped into it.", span)
        if opdef.arity is None and n < 1:
            raise ArchError(f"{what} needs at least one input tensor.", span)
        if opdef.name in ("maxpool", "avgpool") and attrs["stride"] is None:
            attrs["stride"] = attrs["kernel_size"]
        shapes = [t.shape for t in tensors]
        try:
            out_shape = op_registry.infer(opdef.name, attrs, shapes)     # within the size guard
        except ShapeError as err:
            raise ArchError(str(err), span) from None
        return self.add_op(opdef.name, attrs, tensors, out_shape, self.label_name(label, env),
                           label.span if label else span, span)

    def add_op(self, op: str, attrs: dict, tensors, out_shape, name: str | None, name_span: Span,
               span: Span) -> TensorRef:
        if len(self.graph) >= self.max_nodes:
            raise ArchError(f"The model has more than {self.max_nodes} nodes; raise the limit (max_nodes= in "
                            "the API, --max-nodes on the command line) if this size is intended.", span)
        self.charge(STEPS_PER_NODE, span)
        self.edges += len(tensors)
        if self.edges > EDGES_PER_NODE * self.max_nodes:
            raise ArchError(f"The model's layers read more than {EDGES_PER_NODE * self.max_nodes} tensors in all "
                            f"({EDGES_PER_NODE} times the node limit of {self.max_nodes}); raise the limit "
                            "(max_nodes= in the API, --max-nodes on the command line) if this size is intended.",
                            span)
        try:
            op_registry.check_shape(op, out_shape)
            specs = op_registry.param_specs(op, attrs, [t.shape for t in tensors])
        except ShapeError as err:
            raise ArchError(str(err), span) from None
        path = self.scope.child(name, name_span)
        params = {}
        for local, spec in specs.items():
            pname = op_registry.param_name(op, path, local)
            self.graph.add_param(Param(pname, spec.shape, spec.init, spec.fan_in, spec.fan_out, spec.trainable,
                                       spec.dtype, self.seed))
            params[local] = pname
        nid = self.graph.add_node(op, (t.node for t in tensors), attrs=attrs, shape=out_shape, span=span,
                                  scope=path, params=params)
        return TensorRef(nid, out_shape)

    def merge(self, op: str, tensors, span: Span, describe, construct: str) -> TensorRef:
        """The merge node of a construct; shape errors are reworded by ``describe``.

        The node's ``meta["construct"]`` names the construct (``residual``, ``dense``,
        ``parallel``) so that tools such as ``archc viz`` can draw its edges for what they are.
        """
        if len(tensors) == 1 and op == "concat":
            return tensors[0]
        attrs = {"dim": 1} if op == "concat" else {}
        try:
            shape = op_registry.infer(op, attrs, [t.shape for t in tensors])
        except ShapeError as err:
            raise ArchError(describe(err), span) from None
        out = self.add_op(op, attrs, tensors, shape, None, span, span)
        self.graph.update(out.node, meta={"construct": construct})
        return out

    def one_tensor(self, tensors, what: str, span: Span) -> TensorRef:
        if len(tensors) != 1:
            raise ArchError(f"{what} takes one input tensor but {len(tensors)} were piped into it.", span)
        return tensors[0]

    # ---- constructs
    def _seq(self, layer: ast.Seq, tensors, env):
        return self.apply_seq(layer, tensors, layer.label, env, env)

    def apply_seq(self, seq: ast.Seq, tensors, label, label_env, env):
        """A sequence in a scope of its own, the label read in ``label_env``, the body run in ``env``."""
        scope = self.open_scope(label, label_env, "seq", "seq", seq.span)

        def body():
            cur = tensors
            for inner in self.expand(seq.comp, env):
                cur = self.apply_chain(seq.body, cur, inner)
            return cur
        return self.in_scope(scope, body)

    def apply_value(self, value, tensors, label, env, span: Span) -> list:
        """A layer value after ``->``: a sequence value, or a list of layers applied in order in a scope
        of their own (as the sequence ``[a -> b -> ...]`` would be)."""
        if isinstance(value, SeqValue):
            return self.apply_seq(value.seq, tensors, label, env, value.env)
        if isinstance(value, LayerRef):
            if isinstance(value.target, (ast.Definition, ast.ModelAlias)):
                return self.call_block(value, list(value.bound_pos), dict(value.bound_kw), tensors, label, env,
                                       span)
            return [self.apply_op(value.target, list(value.bound_pos), dict(value.bound_kw), tensors, label, env,
                                  span)]
        scope = self.open_scope(label, env, "seq", "seq", span)

        def body():
            cur = tensors
            for item in value:
                self.tick(span)
                cur = self.apply_value(item, cur, None, env, span)
            return cur
        return self.in_scope(scope, body)

    def _branches(self, branches, tensors, env, what: str) -> list:
        outs = []
        for branch in branches:
            for inner in self.expand(branch.comp, env):
                out = self.apply_chain(branch.body, tensors, inner)
                if len(out) != 1:
                    raise ArchError(f"Each branch of {what} must give one tensor, but this one gives {len(out)}.",
                                    branch.span)
                outs.append((out[0], branch.span))
        return outs

    def _transparent(self, layer, env, kind: str, fn):
        if layer.label is None:
            return fn()
        return self.in_scope(self.open_scope(layer.label, env, kind, kind, layer.span), fn)

    def _parallel(self, layer: ast.Parallel, tensors, env):
        pos, kw = self.eval_args(layer.args, env)
        opts = bind("'parallel'", [Slot("merge", "choice:concat|add", "concat")], pos, kw, layer.span)

        def body():
            outs = self._branches(layer.branches, tensors, env, "'parallel'")
            if not outs:
                raise ArchError("'parallel' needs at least one branch, but its comprehensions made none.",
                                layer.span)
            # point at the first branch that disagrees with branch 1 (the merge itself is fine then)
            shapes = [t.shape for t, _ in outs]
            concat = opts["merge"] == "concat"
            key = (lambda s: (len(s), s[:1] + s[2:])) if concat else (lambda s: s)
            bad = next((i for i, s in enumerate(shapes) if key(s) != key(shapes[0])), None)
            if bad is not None:
                what = "shape" if not concat else "spatial size" if len(shapes[0]) == len(shapes[bad]) == 4 \
                    else "shape apart from channels"
                raise ArchError(f"The branches of 'parallel' must agree in {what} to be "
                                f"{'concatenated' if concat else 'added'}, but branch 1 gives {fmt(shapes[0])} "
                                f"and branch {bad + 1} gives {fmt(shapes[bad])}.", outs[bad][1],
                                (Note("branch 1 is here", outs[0][1]),))
            return [self.merge(opts["merge"], [t for t, _ in outs], layer.span, str, "parallel")]
        return self._transparent(layer, env, "parallel", body)

    def _dense(self, layer: ast.Dense, tensors, env):
        pos, kw = self.eval_args(layer.args, env)
        opts = bind("'dense'", [Slot("growth", "int?", None)], pos, kw, layer.span)
        x = self.one_tensor(tensors, "'dense'", layer.span)
        items = [(branch, list(self.expand(branch.comp, env))) for branch in layer.branches]
        n = sum(len(inners) for _, inners in items)
        reads = n * (n + 1) // 2 + n + 1          # layer k reads the concatenation of k tensors; then the output
        budget = EDGES_PER_NODE * self.max_nodes
        if reads > budget:
            raise ArchError(f"This dense block has {n} layers, so its concatenations would read {reads} tensors "
                            f"(n(n + 1)/2 + n + 1), more than {budget} ({EDGES_PER_NODE} times the node limit of "
                            f"{self.max_nodes}); split it into several dense blocks with transitions between them, "
                            "as DenseNet does, or raise the node limit.", layer.span)

        def body():
            features = [x]

            def describe(err):
                return f"A dense block concatenates every layer's output with its input, so {err}"
            for branch, inners in items:
                for inner in inners:
                    joined = self.merge("concat", features, branch.span, describe, "dense")
                    out = self.apply_chain(branch.body, [joined], inner)
                    if len(out) != 1:
                        raise ArchError(f"Each layer of 'dense' must give one tensor, but this one gives "
                                        f"{len(out)}.", branch.span)
                    growth = opts["growth"]
                    if growth is not None and out[0].shape[1] != growth:
                        raise ArchError(f"This dense layer gives {out[0].shape[1]} channels, but the block's "
                                        f"growth rate is {growth}.", branch.span)
                    features.append(out[0])
            return [self.merge("concat", features, layer.span, describe, "dense")]
        return self._transparent(layer, env, "dense", body)

    def _residual(self, layer: ast.Residual, tensors, env):
        x = self.one_tensor(tensors, "'residual'", layer.span)

        def body():
            main = self.apply_chain(layer.body, [x], env)
            main = self.one_tensor(main, "The main path of 'residual'", layer.span)
            short, sc = x, layer.shortcut
            if sc is not None and (sc.cond is None or self.truth(self.eval(sc.cond, env), sc.cond.span)):
                short = self.one_tensor(self.apply_chain(sc.body, [x], env), "The shortcut of 'residual'",
                                        sc.span)

            def describe(err):
                fix = ("; add a projection shortcut such as `shortcut { conv(...) -> bn }`" if sc is None else
                       "; check the shortcut's stride and channels")
                return (f"The residual addition needs the main path and the shortcut to have the same shape, "
                        f"but the main path gives {fmt(main.shape)} and the shortcut gives {fmt(short.shape)}"
                        + fix + ".")
            if main.shape != short.shape:
                raise ArchError(describe(None), layer.span)
            return [self.merge("add", [main, short], layer.span, describe, "residual")]
        return self._transparent(layer, env, "residual", body)

    def _stn(self, layer: ast.Stn, tensors, env):
        x = self.one_tensor(tensors, "'stn'", layer.span)
        pos, kw = self.eval_args(layer.args, env)
        opts = bind("'stn'", [Slot("size", "ints?", None), Slot("align_corners", "bool", False)],
                    pos, kw, layer.span)
        if len(x.shape) != 4:
            raise ArchError(f"'stn' transforms images (N, C, H, W), but its input is {fmt(x.shape)}.", layer.span)
        size = opts["size"]
        if size is not None and (len(size) not in (2, 3) or min(size) < 1):
            raise ArchError(f"The size of 'stn' must be [H, W] or [C, H, W] with sizes of at least 1, but got "
                            f"{list(size)}.", kw["size"].span if "size" in kw else pos[0].span)

        def body():
            theta = self.apply_chain(layer.body, [x], env)
            theta = self.one_tensor(theta, "The localisation net of 'stn'", layer.span)
            if theta.shape[1:] != (6,):
                raise ArchError(f"The localisation net of 'stn' must end in 6 affine parameters per sample, but "
                                f"it gives {fmt(theta.shape)}.", layer.span)
            reg = self.graph.data(theta.node)
            if reg["op"] != "linear":
                raise ArchError("The localisation net of 'stn' must end in a linear regression layer, so that "
                                "it can start at the identity transform.", layer.span)
            self.graph.params[reg["params"]["weight"]].init = "zeros"
            if "bias" not in reg["params"]:
                raise ArchError("The regression layer of 'stn' needs a bias to hold the identity transform.",
                                reg["span"])
            self.graph.params[reg["params"]["bias"]].init = list(IDENTITY_AFFINE)
            self.graph.update(theta.node, attrs={**reg["attrs"], "weight_init": "zeros",
                                                 "bias_init": list(IDENTITY_AFFINE)})
            size = tuple(opts["size"]) if opts["size"] is not None else x.shape[1:]
            if len(size) == 2:
                size = (x.shape[1], *size)
            t = self.add_op("reshape", {"shape": (2, 3)}, [theta], (theta.shape[0], 2, 3), None, layer.span,
                            layer.span)
            ga = {"size": size, "align_corners": opts["align_corners"]}
            grid = self.add_op("affine_grid", ga, [t], op_registry.infer("affine_grid", ga, [t.shape]), None,
                               layer.span, layer.span)
            sa = {"mode": "bilinear", "padding_mode": "zeros", "align_corners": opts["align_corners"]}
            return [self.add_op("grid_sample", sa, [x, grid], op_registry.infer("grid_sample", sa,
                                                                               [x.shape, grid.shape]),
                                None, layer.span, layer.span)]
        return self._transparent(layer, env, "stn", body)


LayerMixin._layer_dispatch = {
    ast.LayerCall: LayerMixin._call, ast.Seq: LayerMixin._seq, ast.Parallel: LayerMixin._parallel,
    ast.Dense: LayerMixin._dense, ast.Residual: LayerMixin._residual, ast.Stn: LayerMixin._stn,
}
