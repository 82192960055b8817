"""Applying layers to tensors: ops, block instances and the topology constructs.

Naming (it decides the parameter names of generated modules):

* a labelled layer is named by its label (``conv1``, ``layer{i + 1}``);
* an unlabelled layer takes the next position number of its scope, like an
  entry of ``nn.Sequential``; the merge node of a construct counts as a layer;
* block instances and ``[...]`` sequences open a new scope;
* ``residual``, ``parallel``, ``dense`` and ``stn`` open a scope only when
  labelled; otherwise their layers live in the enclosing scope.
"""
from __future__ import annotations

from ..diagnostics import ArchError, Note, Span, did_you_mean
from ..ir import ops as op_registry
from ..ir.graph import ScopeInfo
from ..ir.params import Param
from ..ir.shape_rules import ShapeError, fmt
from ..syntax import ast
from .binding import Slot, Value, bind
from .values import BUILTINS, LayerRef, TensorRef, show, type_name

DEFAULT_MAX_NODES = 100_000
IDENTITY_AFFINE = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


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
        if label is None:
            return None
        if label.index is None:
            return label.name
        value = self.eval(label.index, env)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ArchError(f"A label suffix must be an int or a string, but got {type_name(value)}.",
                            label.index.span)
        suffix = str(value)
        if not all(c.isalnum() or c == "_" for c in suffix):
            raise ArchError(f"The label suffix {show(value, 40)} may only hold letters, digits and '_'.",
                            label.index.span)
        return label.name + suffix

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
        pos, kw = self.eval_args(layer.args, env)
        pos = list(ref.bound_pos) + pos
        kw = {**dict(ref.bound_kw), **kw}
        if isinstance(ref.target, (ast.Definition, ast.ModelAlias)):
            return self.call_block(ref, pos, kw, tensors, layer.label, env, layer.span)
        return [self.apply_op(ref.target, pos, kw, tensors, layer.label, env, layer.span)]

    def resolve_layer(self, names: tuple, env, span: Span) -> LayerRef:
        head = names[0]
        known = head in env.vars or (env.module is not None and env.module.lookup(head) is not None)
        if not known and len(names) > 1:
            spaces = env.module.namespaces if env.module is not None else {}
            raise ArchError(f"Unknown namespace '{head}'" + (did_you_mean(head, spaces) or
                            f"; import a file with `import \"file.arch\" as {head}`."), span)
        opdef = op_registry.get(head)
        if not known and head not in BUILTINS and (opdef is None or not opdef.in_specs):
            raise ArchError(f"Unknown layer '{head}'" + (did_you_mean(head, self.layer_names(env)) or
                                                         "; no op, block or variable has this name."), span)
        value = self.lookup(head, env, span)
        for part in names[1:]:
            value = self._attr(ast.Attr(span, ast.Var(span, "_"), part), _Fixed(env, value))
        if not isinstance(value, LayerRef):
            raise ArchError(f"'{'.'.join(names)}' is {type_name(value)}, not a layer; only blocks and ops can "
                            "follow '->'.", span)
        return value

    @staticmethod
    def layer_names(env) -> set:
        """Names that can follow '->' here: ops, visible blocks and models, variables holding layers."""
        names = {n for n, op in op_registry.OPS.items() if op.in_specs}
        names |= {n for n, v in env.vars.items() if isinstance(v, LayerRef)}
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
            out_shape = opdef.infer(attrs, shapes)
        except ShapeError as err:
            raise ArchError(str(err), span) from None
        return self.add_op(opdef.name, attrs, tensors, out_shape, self.label_name(label, env),
                           label.span if label else span, span)

    def add_op(self, op: str, attrs: dict, tensors, out_shape, name: str | None, name_span: Span,
               span: Span) -> TensorRef:
        if len(self.graph) >= self.max_nodes:
            raise ArchError(f"The model has more than {self.max_nodes} nodes; raise the limit (max_nodes= in "
                            "the API, --max-nodes on the command line) if this size is intended.", span)
        path = self.scope.child(name, name_span)
        specs = op_registry.param_specs(op, attrs, [t.shape for t in tensors])
        params = {}
        for local, spec in specs.items():
            pname = f"{path}.{local}"
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
        scope = self.open_scope(layer.label, env, "seq", "seq", layer.span)

        def body():
            cur = tensors
            for inner in self.expand(layer.comp, env):
                cur = self.apply_chain(layer.body, cur, inner)
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

        def body():
            features = [x]

            def describe(err):
                return f"A dense block concatenates every layer's output with its input, so {err}"
            for branch in layer.branches:
                for inner in self.expand(branch.comp, env):
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


class _Fixed:
    """An environment that resolves the placeholder name ``_`` to a fixed value (dotted callees)."""

    def __init__(self, env, value):
        self.vars = {"_": value}
        self.module = env.module


LayerMixin._layer_dispatch = {
    ast.LayerCall: LayerMixin._call, ast.Seq: LayerMixin._seq, ast.Parallel: LayerMixin._parallel,
    ast.Dense: LayerMixin._dense, ast.Residual: LayerMixin._residual, ast.Stn: LayerMixin._stn,
}
