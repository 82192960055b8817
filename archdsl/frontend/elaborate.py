"""Elaboration: running a model definition to build the shape-checked graph IR.

The elaborator interprets statements, expands loops and comprehensions at
compile time, instantiates blocks (with recursion and size guards) and infers
every shape as it adds nodes, so a shape error points at the layer that
caused it, with notes naming the block instances it sits in.
"""
from __future__ import annotations

from ..diagnostics import ArchError, Note, Span, did_you_mean
from ..ir import ops as op_registry
from ..ir.graph import Graph, ScopeInfo
from ..syntax import ast
from .binding import SPEC_TYPES, Slot, Value, bind
from .expressions import MAX_STEPS, STEPS_PER_NODE, Env, ExpressionMixin
from .functions import FunctionMixin
from .layers import DEFAULT_MAX_NODES, LayerMixin, Scope
from .values import MAX_INT_BITS, FunctionRef, LayerRef, SeqValue, TensorRef, show, type_name

MAX_DEPTH = 64
MAX_NOTES = 8


class Frame:
    """The state of one block (or model) body being run."""

    __slots__ = ("defn", "inputs", "next_input", "outputs", "top")

    def __init__(self, defn, inputs, top):
        self.defn, self.inputs, self.top = defn, inputs, top
        self.next_input = 0
        self.outputs = None


class Elaborator(ExpressionMixin, LayerMixin, FunctionMixin):
    def __init__(self, max_nodes: int = DEFAULT_MAX_NODES, seed: int = 0):
        self.max_nodes = max_nodes
        self.seed = seed
        self.steps = 0
        # the budget pays for the default node limit's layers; a higher limit brings their cost with it
        self.max_steps = MAX_STEPS + STEPS_PER_NODE * max(0, max_nodes - DEFAULT_MAX_NODES)
        self.edges = 0             # tensors read by all layers so far (see layers.EDGES_PER_NODE)
        self.graph = Graph()
        self.scope = Scope("")
        self.stack: list[tuple[ast.Definition, Span]] = []
        self.frame: Frame | None = None

    # ---- entry point
    def elaborate(self, module, model: str | None, params: dict[str, Value]) -> Graph:
        models = module.models()
        if model is None:
            if len(models) != 1:
                names = ", ".join(m.name for m in models)
                raise ArchError(f"The file defines {len(models)} models ({names}); choose one with --model "
                                "(or model= in the API)." if models else
                                "The file defines no model; add `model name() { ... }`.",
                                models[1].name_span if len(models) > 1 else Span.of_file(module.file))
            defn = models[0]
        else:
            hit = module.lookup(model)
            if hit is None or not isinstance(hit[0], (ast.Definition, ast.ModelAlias)) or hit[0].kind != "model":
                names = [m.name for m in models]
                hint = did_you_mean(model, names) or (f"; its models are {', '.join(names)}." if names else
                                                      "; it defines no model.")
                if hit is not None and isinstance(hit[0], ast.Definition):        # a block
                    raise ArchError(f"'{model}' is a block, not a model; " + (
                        f"the models in {module.file} are {', '.join(names)}." if names else
                        f"{module.file} defines no model."), Span.of_file(module.file))
                raise ArchError(f"There is no model '{model}' in {module.file}{hint}", Span.of_file(module.file))
            defn, module = hit
        for name, v in params.items():        # values from the API or the command line
            self.bounded(v.value, v.span)
            pending = [v.value]
            while pending:
                x = pending.pop()
                if isinstance(x, (list, tuple)):
                    pending.extend(x)
                elif isinstance(x, int) and x.bit_length() > MAX_INT_BITS:
                    raise ArchError(f"The value of '{name}' holds an int of over {MAX_INT_BITS} bits; ints in a "
                                    f"spec are below 2**{MAX_INT_BITS}.", v.span)
        self.graph.name = defn.name
        self.graph.meta.update({"model": defn.name, "file": module.file})
        self.graph.scopes[""] = ScopeInfo("model", defn.name, defn.span)
        outs = self.call_definition(defn, module, [], params, [], None, defn.span, top=True)
        self.graph.scopes[""].args = dict(self.graph.scopes[""].args)
        self.graph.outputs = [t.node for t in outs]
        return self.graph

    # ---- blocks
    def call_block(self, ref: LayerRef, pos, kw, tensors, label, env, span: Span) -> list:
        defn = ref.target
        scope = self.open_scope(label, env, "block", defn.name, span)
        return self.in_scope(scope, lambda: self.call_definition(defn, ref.module, pos, kw, tensors, scope,
                                                                 span, top=False))

    def resolve_alias(self, alias: ast.ModelAlias, module, pos, kw, span: Span):
        """The model an alias names, with the alias's arguments under the caller's."""
        ref = self.resolve_layer(alias.target, Env(module), alias.target_span)
        target = ref.target
        if not (isinstance(target, (ast.Definition, ast.ModelAlias)) and target.kind == "model"):
            raise ArchError(f"'{alias.name}' must name a model after '=', but '{ref.name}' is not one.",
                            alias.target_span)
        if pos:
            raise ArchError(f"Model '{alias.name}' takes its arguments by name only.", pos[0].span)
        base_pos, base_kw = self.eval_args(alias.args, Env(module))
        slots = target.params if isinstance(target, ast.Definition) else ()
        named = {s.name: v for s, v in zip(slots, base_pos)}
        if len(base_pos) > len(slots):
            raise ArchError(f"Model '{ref.name}' takes {len(slots)} argument{'s' if len(slots) != 1 else ''}, "
                            f"but {len(base_pos)} {'was' if len(base_pos) == 1 else 'were'} given.",
                            base_pos[len(slots)].span)
        return target, ref.module, [], {**named, **base_kw, **kw}

    def call_definition(self, defn, module, pos, kw, tensors, scope, span: Span, top: bool):
        aliases = []
        while isinstance(defn, ast.ModelAlias):
            if any(a is defn for a in aliases):
                names = [a.name for a in aliases[[a is defn for a in aliases].index(True):]] + [defn.name]
                raise ArchError(f"Model alias '{defn.name}' refers to itself ({' -> '.join(names)}); an alias "
                                "must lead to a model with a body.", defn.name_span)
            aliases.append(defn)
            if len(self.stack) >= MAX_DEPTH:
                raise ArchError(f"Model aliases are nested more than {MAX_DEPTH} deep.", span)
            self.stack.append((defn, span))
            try:
                defn, module, pos, kw = self.resolve_alias(defn, module, pos, kw, span)
            finally:
                self.stack.pop()
        if any(d is defn for d, _ in self.stack):
            names = [d.name for d, _ in self.stack[[d for d, _ in self.stack].index(defn):]] + [defn.name]
            raise ArchError(f"Block '{defn.name}' instantiates itself ({' -> '.join(names)}); blocks cannot be "
                            "recursive, so unroll the repetition with a loop.", span,
                            (Note(f"'{defn.name}' is defined here", defn.name_span),))
        if len(self.stack) >= MAX_DEPTH:
            raise ArchError(f"Blocks are nested more than {MAX_DEPTH} deep.", span)
        what = f"{defn.kind} '{defn.name}'"
        slots = [Slot(p.name, self.param_kind(p), ... if p.default is None else p.default, p.span)
                 for p in defn.params]
        module_env = Env(module)
        values = bind(what, slots, pos, kw, span, defn.name_span,
                      default_eval=lambda s: self.eval(s.default, module_env))
        if scope is not None or top:
            self.graph.scopes[scope.path if scope is not None else ""].args = {
                k: v for k, v in values.items() if not isinstance(v, (TensorRef, LayerRef, SeqValue, FunctionRef))}
        env = Env(module, values)
        frame, saved = Frame(defn, tensors, top), self.frame
        self.stack.append((defn, span))
        self.frame = frame
        try:
            self.run(defn.body, env)
            if frame.outputs is None:
                raise ArchError(f"{what.capitalize()} has no output statement; end it with `output x`.",
                                defn.name_span)
            if frame.next_input < len(tensors):
                raise ArchError(f"{what.capitalize()} takes {frame.next_input} input tensor"
                                f"{'s' if frame.next_input != 1 else ''} but {len(tensors)} were piped into it.",
                                span, (Note(f"'{defn.name}' is defined here", defn.name_span),))
        except ArchError as err:
            if not top and len(err.notes) < MAX_NOTES:
                err = err.with_note(f"in {what}, instantiated here", span)
            raise err from None
        finally:
            self.stack.pop()
            self.frame = saved
        return frame.outputs

    def param_kind(self, p: ast.Param) -> str:
        if p.type is None:
            return "any"
        kind = SPEC_TYPES.get(p.type)
        if kind is None:
            hint = did_you_mean(p.type, SPEC_TYPES)
            raise ArchError(f"Unknown parameter type '{p.type}'{hint or '.'} The parameter types are "
                            f"{', '.join(sorted(set(SPEC_TYPES) - {'str'}))}.", p.type_span or p.span)
        return kind

    # ---- statements
    def run(self, stmts, env: Env) -> None:
        for stmt in stmts:
            self.tick(stmt.span)
            self._stmt_dispatch[type(stmt)](self, stmt, env)

    def _input(self, s: ast.Input, env):
        frame = self.frame
        declared = None
        if s.shape is not None:
            declared = self.eval(s.shape, env)
            if not isinstance(declared, (list, tuple)) or not declared or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in declared):
                raise ArchError(f"An input shape must be a list of positive ints without the batch, such as "
                                f"[3, 224, 224], but got {show(declared, 40)}.", s.shape.span)
            big = next((d for d in declared if d > op_registry.MAX_DIM), None)
            if big is not None:
                raise ArchError(f"An input dimension can be at most {op_registry.MAX_DIM} (2**31 - 1), but this "
                                f"shape has {op_registry.number_text(big)}.", s.shape.span)
            declared = ("N", *declared)
        if frame.top:
            if declared is None:
                raise ArchError(f"The model input '{s.name}' needs a shape, such as `input {s.name}: "
                                "[3, 224, 224]` (the batch dimension is implicit).", s.span)
            nid = self.graph.add_node("input", (), attrs={"name": s.name}, shape=declared, span=s.span,
                                      scope="")
            self.graph.inputs.append(nid)
            env.vars[s.name] = TensorRef(nid, declared)
            return
        i = frame.next_input
        if i >= len(frame.inputs):
            raise ArchError(f"{frame.defn.kind.capitalize()} '{frame.defn.name}' declares input {i + 1} "
                            f"('{s.name}'), but only {len(frame.inputs)} tensor"
                            f"{'s were' if len(frame.inputs) != 1 else ' was'} piped into it.", s.span)
        t = frame.inputs[i]
        if declared is not None and tuple(declared) != tuple(t.shape):
            raise ArchError(f"Input '{s.name}' is declared as ({', '.join(map(str, declared))}) but receives a "
                            f"tensor of shape ({', '.join(map(str, t.shape))}).", s.span)
        frame.next_input += 1
        env.vars[s.name] = t

    def _output(self, s: ast.Output, env):
        if self.frame.outputs is not None:
            raise ArchError("A block has one output statement; list several outputs in it: `output a, b`.",
                            s.span)
        outs = []
        for e in s.values:
            v = self.eval(e, env)
            if isinstance(v, tuple) and v and all(isinstance(t, TensorRef) for t in v):
                outs.extend(v)
            elif isinstance(v, TensorRef):
                outs.append(v)
            else:
                raise ArchError(f"An output must be a tensor, but this is {type_name(v)} {show(v, 40)}.", e.span)
        self.frame.outputs = outs

    def _assign(self, s: ast.Assign, env):
        self.bind_target(s.target, self.eval(s.value, env), env)

    def _if(self, s: ast.If, env):
        for cond, body in s.branches:
            if self.truth(self.eval(cond, env), cond.span):
                self.run(body, env)
                return
        if s.orelse:
            self.run(s.orelse, env)

    def _for(self, s: ast.For, env):
        for inner in self.expand(ast.Comp(s.span, s.target, s.iter), env):
            # the loop body shares the block's variables, as in Python
            env.vars.update(inner.vars)
            self.run(s.body, env)

    def _set_item(self, s: ast.SetItem, env):
        """``xs[i][j] = v``: ``xs`` becomes a copy of itself with that item replaced."""
        root = self.lookup(s.name, env, s.name_span)
        where, obj, copies = s.name, root, []
        for k, index_e in enumerate(s.indices):
            if not isinstance(obj, list):
                fix = f" (write `{where} = list({where})` first)" if isinstance(obj, tuple) else ""
                raise ArchError(f"Only lists can be assigned to by index, but '{where}' is {type_name(obj)}{fix}.",
                                s.name_span if k == 0 else s.indices[k - 1].span)
            idx = self.eval(index_e, env)
            if isinstance(idx, bool) or not isinstance(idx, int):
                raise ArchError(f"An index must be an int, but got {type_name(idx)}.", index_e.span)
            if not -len(obj) <= idx < len(obj):
                raise ArchError(f"Index {idx} is out of range for '{where}', a list of length {len(obj)}.",
                                index_e.span)
            copies.append((self.spend(list(obj), s.span), idx))
            obj = obj[idx]
            where = f"{where}[{idx}]"
        value = self.eval(s.value, env)
        for lst, idx in reversed(copies):
            lst[idx] = value
            value = self.bounded(lst, s.span)
        env.vars[s.name] = value

    def _assert(self, s: ast.Assert, env):
        if not self.truth(self.eval(s.cond, env), s.cond.span):
            msg = self.eval(s.message, env) if s.message is not None else None
            raise ArchError(f"Assertion failed: {msg}" if isinstance(msg, str) else "Assertion failed.", s.span)


Elaborator._stmt_dispatch = {
    ast.Input: Elaborator._input, ast.Output: Elaborator._output, ast.Assign: Elaborator._assign,
    ast.If: Elaborator._if, ast.For: Elaborator._for, ast.Assert: Elaborator._assert,
    ast.Return: Elaborator._return, ast.SetItem: Elaborator._set_item,
}
