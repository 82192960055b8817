"""Pass pipelines: parsing ``"fold-bn,prune{ratio=0.5}"`` and running passes with verification.

Syntax::

    pipeline := item ("," item)*
    item     := NAME ["{" [option ("," option)*] "}"]
    option   := NAME "=" value          value: true | false | number | word | "quoted text"

Option values are typed by the pass's dataclass fields (bool, int, float, str,
or one of those or ``none``). Option names may use ``-`` for ``_``. Unknown
passes and options are errors listing the valid ones.

After every pass the IR is checked with :func:`archdsl.ir.verify.verify` (every
invariant of docs/ir.md). With ``verify=True`` the model also runs through the
PyTorch backend in eval mode on a fixed input (the first samples of the
context's data, else random with seed 0, batch 2), and every pass that changed
the graph is compared with **its own input**: its outputs may differ by at most
the pass's ``expected_error()`` (or ``DEFAULT_TOLERANCE`` for an exact pass, or
the context's ``tolerance`` when given) in the pass's metric, the normwise
relative ``max|after - before| / max|before|`` or ``1 - cosine``, per output.

Only the final graph is kept (``keep_graphs=True`` keeps every pass's result),
so a long pipeline holds at most two graphs at a time.
"""
from __future__ import annotations

import re
import sys
import typing

import numpy as np
from dataclasses import MISSING, dataclass, field, fields
from typing import Callable, Iterable

from ..diagnostics import ArchError, Span, did_you_mean
from ..ir.graph import Graph
from ..ir.printer import print_graph
from ..ir.verify import verify as verify_ir
from .base import TYPE_WORDS, Pass, PassReport, PassResult, listing, option_type, registry
from .context import PassContext, check_tolerance

DEFAULT_TOLERANCE = 1e-4
SOURCE = "<passes>"
VERIFY_BATCH = 2

_TOKEN = re.compile(r'\s*(?:(?P<str>"[^"]*")|(?P<word>[A-Za-z0-9_.+-]+)|(?P<punct>[{},=])|(?P<bad>\S))')


def _suggest(name: str, candidates, listing: str) -> str:
    """``"; did you mean 'x'? <listing>"`` or ``". <listing>"``."""
    hint = did_you_mean(name, candidates)
    return f"{hint} {listing}" if hint else f". {listing}"


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = []     # (kind, value, start, end)
        for m in _TOKEN.finditer(text):
            kind = m.lastgroup
            if kind is None:
                continue
            self.tokens.append((kind, m.group(kind), m.start(kind), m.end(kind)))
        self.i = 0

    def error(self, message: str, start: int, end: int | None = None) -> ArchError:
        end = max(start + 1, start + 1 if end is None else end)
        return ArchError(message, Span(SOURCE, 1, start + 1, 1, end + 1), sources={SOURCE: self.text})

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else ("eof", "", len(self.text), len(self.text))

    def take(self, kind: str, value: str | None, what: str):
        tok = self.peek()
        if tok[0] != kind or (value is not None and tok[1] != value):
            found = "the end of the pipeline" if tok[0] == "eof" else f"'{tok[1]}'"
            raise self.error(f"Expected {what} in the pass pipeline, but found {found}.", tok[2], tok[3])
        self.i += 1
        return tok

    def pipeline(self) -> list[Pass]:
        if not self.tokens:
            raise ArchError("The pass pipeline is empty; name at least one pass, such as \"fold-bn,dce\".")
        passes = [self.item()]
        while self.peek()[0] != "eof":
            self.take("punct", ",", "',' between passes")
            passes.append(self.item())
        return passes

    def item(self) -> Pass:
        _, name, start, end = self.take("word", None, "a pass name")
        known = registry()
        cls = known.get(name)
        if cls is None:
            raise self.error(f"There is no pass '{name}'"
                             + _suggest(name, known, f"The passes are {listing(known)}."), start, end)
        given: dict[str, tuple] = {}
        if self.peek()[:2] == ("punct", "{"):
            self.i += 1
            while self.peek()[:2] != ("punct", "}"):
                if given:
                    self.take("punct", ",", "',' or '}' after an option")
                _, key, ks, ke = self.take("word", None, f"an option name for pass '{name}'")
                self.take("punct", "=", f"'=' after option '{key}'")
                kind, value, vs, ve = self.peek()
                if kind not in ("word", "str"):
                    self.take("word", None, f"a value for option '{key}'")
                self.i += 1
                key = key.replace("-", "_")
                if key in given:
                    raise self.error(f"Option '{key}' of pass '{name}' is given twice.", ks, ke)
                given[key] = (value[1:-1] if kind == "str" else value, kind, vs, ve, ks, ke)
            self.i += 1
        return self.build(cls, given, start, end)

    def build(self, cls, given: dict, start: int, end: int) -> Pass:
        opts = {f.name: f for f in fields(cls)}
        kwargs = {}
        for key, (value, kind, vs, ve, ks, ke) in given.items():
            if key not in opts:
                known = (f"Its options are {listing(opts)}." if opts else "It takes no options.")
                raise self.error(f"Pass '{cls.name}' has no option '{key}'" + _suggest(key, opts, known), ks, ke)
            kwargs[key] = self.convert(cls, key, value, kind, vs, ve)
        missing = [n for n, f in opts.items() if n not in kwargs and f.default is MISSING
                   and f.default_factory is MISSING]
        if missing:
            raise self.error(f"Pass '{cls.name}' needs the option{'s' if len(missing) > 1 else ''} "
                             f"{listing(missing)}, as in {cls.name}{{{missing[0]}=...}}.", start, end)
        try:
            return cls(**kwargs)
        except ValueError as err:
            # an OptionError names the option at fault: point at its value where the text gives one
            where = given.get(getattr(err, "option", None))
            raise self.error(f"Pass '{cls.name}': {err}", *((where[2], where[3]) if where else (start, end))) \
                from None

    def convert(self, cls, key: str, value: str, kind: str, vs: int, ve: int):
        typ = option_type(cls, key)
        where = f"Option '{key}' of pass '{cls.name}'"
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if args:                                    # X | None
            if kind == "word" and value == "none":
                return None
            typ = args[0]
        if typ is str:
            return value
        if kind == "str":
            raise self.error(f"{where} expects {TYPE_WORDS[typ]}, not quoted text.", vs, ve)
        if typ is bool:
            if value not in ("true", "false"):
                raise self.error(f"{where} expects true or false, but got '{value}'.", vs, ve)
            return value == "true"
        try:
            return int(value) if typ is int else float(value)
        except ValueError:
            raise self.error(f"{where} expects {TYPE_WORDS[typ]}, but got '{value}'.", vs, ve) from None


def parse_pipeline(text: str) -> list[Pass]:
    """The pass objects a pipeline text names, in order; ArchError on any mistake."""
    return _Parser(text).pipeline()


@dataclass
class PipelineResult:
    graph: Graph
    results: list[PassResult] = field(default_factory=list)

    @property
    def reports(self) -> list[PassReport]:
        return [r.report for r in self.results]

    @property
    def modified(self) -> bool:
        return any(r.modified for r in self.results)

    def summary(self) -> str:
        return "\n".join(r.summary() for r in self.reports)


def _as_passes(passes) -> list[Pass]:
    if isinstance(passes, (str, Pass)):
        passes = [passes]
    if not isinstance(passes, (list, tuple)):
        raise ArchError(f"A pipeline is pipeline text, a Pass or a list of them, not {type(passes).__name__}.")
    out: list[Pass] = []
    for p in passes:
        if isinstance(p, str):
            out += parse_pipeline(p)
        elif isinstance(p, Pass):
            out.append(p)
        else:
            raise ArchError(f"A pipeline holds pass names and Pass objects, not {type(p).__name__}.")
    return out


def _check_ir(graph: Graph, after: str | None) -> None:
    try:
        verify_ir(graph)
    except ArchError as err:
        what = f"after pass '{after}'" if after else "before the pipeline"
        raise ArchError(f"The IR is invalid {what}: {err.message}", err.span, err.notes, err.sources) from None


def run_pipeline(graph: Graph, passes, verify: bool = False, print_ir_after: Iterable[str] = (),
                 tolerance: float | None = None, emit: Callable[[str], None] | None = None,
                 ctx: PassContext | None = None, keep_graphs: bool = False) -> PipelineResult:
    """Run passes (pipeline text, pass objects, or a list of both) on ``graph``; the input is not changed.

    ``print_ir_after`` names passes after which the canonical IR text is written
    with ``emit`` (default: standard error). ``verify`` (or ``ctx.verify``) compares
    each pass that changed the graph with its input through the PyTorch backend;
    ``tolerance`` (or ``ctx.tolerance``) overrides the passes' expected errors.
    ``ctx`` carries data, device, seed and progress to every pass.
    """
    if not isinstance(graph, Graph):
        raise ArchError(f"run_pipeline takes a Graph (from archdsl.load), not {type(graph).__name__}.")
    ctx = ctx if ctx is not None else PassContext()
    if not isinstance(ctx, PassContext):
        raise ArchError(f"ctx must be a PassContext, but it is {type(ctx).__name__}.")
    verify = verify or ctx.verify
    tolerance = tolerance if tolerance is not None else ctx.tolerance
    passes = _as_passes(passes)
    if isinstance(print_ir_after, str):
        print_ir_after = (print_ir_after,)
    if not isinstance(print_ir_after, (list, tuple)) or not all(isinstance(w, str) for w in print_ir_after):
        raise ArchError("print_ir_after takes pass names (a string or a list of them).")
    check_tolerance(tolerance)
    emit = emit or (lambda text: print(text, file=sys.stderr))
    names = [p.name for p in passes]
    for want in print_ir_after:
        if want not in names:
            raise ArchError(f"--print-ir-after names '{want}', which is not in the pipeline"
                            + _suggest(want, names, f"The pipeline runs {listing(names)}."))
    _check_ir(graph, None)
    ctx.check_fits(graph)
    check = _OutputCheck(graph, tolerance, ctx) if verify else None
    result = PipelineResult(graph)
    current = graph
    for k, p in enumerate(passes, 1):
        res = p.run(current, ctx)
        _check_ir(res.graph, str(p))
        if check is not None and res.modified:
            check.compare(res.graph, p)
        if p.name in print_ir_after:
            emit(f"// IR after {p} (pass {k} of {len(passes)})\n{print_graph(res.graph)}")
        if result.results and not keep_graphs:
            result.results[-1].graph = None          # only the newest graph is kept
        result.results.append(res)
        current = res.graph
    result.graph = current
    return result


class _OutputCheck:
    """Runs graphs on one fixed input through the PyTorch backend; each pass is compared with its input."""

    def __init__(self, graph: Graph, tolerance: float | None, ctx: PassContext):
        import torch  # lazy: the pass core does not depend on torch
        # the data fits the model (run_pipeline checked it first), so it is used whenever it is given
        batch = next(ctx.batches(VERIFY_BATCH, VERIFY_BATCH), None) if ctx.data is not None else None
        if batch is not None:
            self.inputs = [torch.from_numpy(np.ascontiguousarray(x, np.float32)) for x in batch.x]
            self.source = f"the first {len(batch.x[0])} samples of the data"
        else:
            gen = torch.Generator().manual_seed(0)
            self.inputs = [torch.randn((VERIFY_BATCH, *graph.data(i)["shape"][1:]), generator=gen)
                           for i in graph.inputs]
            self.source = f"a random input of batch {VERIFY_BATCH}"
        self.tolerance = tolerance
        self.reference = self.outputs(graph)

    def outputs(self, graph: Graph) -> list:
        import torch
        from ..backends.torch_module import to_torch
        try:
            module = to_torch(graph).eval()
        except NotImplementedError as err:
            raise ArchError(f"--verify cannot run the model through PyTorch: {err}.") from None
        with torch.no_grad():
            out = module(*self.inputs)
        return [t.double() for t in (out if isinstance(out, tuple) else (out,))]

    def compare(self, graph: Graph, p: Pass) -> None:
        pass_text = str(p)
        outs = self.outputs(graph)
        if len(outs) != len(self.reference):
            raise ArchError(f"Pass '{pass_text}' changed the number of model outputs from "
                            f"{len(self.reference)} to {len(outs)}.")
        for k, (ref, out) in enumerate(zip(self.reference, outs), 1):
            if ref.shape != out.shape:
                raise ArchError(f"Pass '{pass_text}' changed the shape of output {k} from {tuple(ref.shape)} "
                                f"to {tuple(out.shape)}.")
            limit = self.tolerance if self.tolerance is not None else max(p.expected_error(), DEFAULT_TOLERANCE)
            if p.verify_metric == "cosine":
                err, what = 1.0 - cosine_similarity(ref, out), "1 - cosine similarity"
            else:
                err, what = relative_error(ref, out), "the relative difference"
            if not err <= limit:
                raise ArchError(f"Pass '{pass_text}' changed the model's output {k}: {what} is {err:.3g}, above "
                                f"the tolerance {limit:g} (--verify ran {self.source} before and after the pass).")
        self.reference = outs


def cosine_similarity(reference, actual) -> float:
    """The cosine of the angle between the two outputs, flattened (1 when both are zero)."""
    import torch
    a, b = reference.reshape(-1), actual.reshape(-1)
    na, nb = a.norm().item(), b.norm().item()
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0 or not torch.isfinite(a).all() or not torch.isfinite(b).all():
        return 0.0
    return float((a @ b).item() / (na * nb))


def relative_error(reference, actual) -> float:
    """``max|actual - reference| / max|reference|`` (0 when both are zero; inf on NaN mismatches)."""
    import torch
    if not torch.equal(torch.isnan(reference), torch.isnan(actual)):
        return float("inf")
    ref = torch.nan_to_num(reference, nan=0.0)
    act = torch.nan_to_num(actual, nan=0.0)
    diff = (act - ref).abs().max().item() if ref.numel() else 0.0
    scale = ref.abs().max().item() if ref.numel() else 0.0
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")
