"""The Python entry points: ``load`` a spec into the graph IR; ``list_models`` of a file."""
from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .diagnostics import ArchError, Span
from .files import shown
from .frontend.binding import Value
from .frontend.elaborate import Elaborator
from .frontend.expressions import Env
from .frontend.layers import DEFAULT_MAX_NODES
from .frontend.modules import Loader
from .ir.graph import Graph
from .syntax import ast
from .syntax.parser import parse_expression

_API_SPAN = Span("<api>", 1, 1, 1, 1)


def _is_path(source) -> bool:
    if isinstance(source, Path):
        return True
    return isinstance(source, str) and "\n" not in source and "{" not in source and source.endswith(".arch")


def _names_another_file(source: str) -> bool:
    """A one-word string with a suffix or a folder in it: a file name, never spec text (which has spaces)."""
    return bool(source) and not any(c.isspace() for c in source) and (Path(source).suffix != "" or "/" in source)


@contextmanager
def _gc_paused():
    """Elaboration allocates many small objects and frees few: the cyclic collector would
    rescan them all again and again, making big graphs superlinear (25 -> 31 us a node from
    1k to 20k nodes), so it waits until the graph is built."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load(source, model: str | None = None, *, max_nodes: int = DEFAULT_MAX_NODES, seed: int = 0,
         defines: dict[str, str] | None = None, **params) -> Graph:
    """Parse, elaborate and shape-check a spec; return the graph IR of one model.

    ``source`` is a path to a ``.arch`` file or spec text. ``params`` override the
    model's parameters with Python values; ``defines`` does the same with spec
    expressions given as text (``{"num_classes": "10"}``, as ``-D`` does).
    Every problem is raised as :class:`archdsl.ArchError`.
    """
    _check_arguments(source, model, max_nodes, seed, defines)
    with _gc_paused():
        return _load(source, model, max_nodes, seed, defines, params)


def _check_arguments(source, model, max_nodes, seed, defines) -> None:
    """The Python-level types of :func:`load`'s arguments, as ArchErrors that say what to pass."""
    def kind(v) -> str:
        return "None" if v is None else type(v).__name__

    if not isinstance(source, (str, Path)):
        raise ArchError(f"load() takes a path (str or pathlib.Path) or spec text as its source, not {kind(source)}.")
    if model is not None and not isinstance(model, str):
        raise ArchError(f"load() takes the model's name as a string (or None for a file's only model), not "
                        f"{kind(model)}: load(source, \"resnet18\").")
    for name, value in (("max_nodes", max_nodes), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArchError(f"load() takes {name} as an int, not {kind(value)}.")
    if max_nodes < 1:
        raise ArchError(f"load() needs max_nodes of at least 1, but got {max_nodes}.")
    if defines is not None:
        if not isinstance(defines, dict):
            raise ArchError(f"load() takes defines as a dict from parameter name to spec text, such as "
                            f"{{\"num_classes\": \"10\"}}, not {kind(defines)}; for Python values pass keyword "
                            "arguments: load(source, num_classes=10).")
        for k, v in defines.items():
            if not isinstance(k, str) or not k.isidentifier() or not isinstance(v, str):
                raise ArchError(f"load() takes defines as a dict from parameter name to spec text, but it holds "
                                f"{k!r}: {v!r}; both must be strings, the name an identifier.")


def _load(source, model, max_nodes, seed, defines, params) -> Graph:
    elab = Elaborator(max_nodes=max_nodes, seed=seed)
    loader = Loader(lambda expr, ns: elab.eval(expr, Env(ns)), elab)
    try:
        if _is_path(source):
            module = loader.load_path(Path(source))
        elif isinstance(source, str) and _names_another_file(source):
            fix = (f"for a saved IR use archdsl.ir.serialize.load_checked({source!r})" if source.endswith(".json")
                   else "give the path of a .arch file, or spec text")
            raise ArchError(f"load() reads .arch spec files and spec text, and {shown(source)!r} is neither: it "
                            f"names a file without the .arch suffix; {fix}.")
        elif isinstance(source, str):
            module = loader.load_text(source)
        else:
            raise ArchError(f"load() takes a path or spec text, not {type(source).__name__}.")
        values = {k: Value(v, _API_SPAN) for k, v in params.items()}
        values.update(_command_line_values(defines or {}, loader, elab, module))
        graph = elab.elaborate(module, model, values)
        graph.meta["sources"] = sorted(loader.sources)
        return graph
    except ArchError as err:
        for name, text in loader.sources.items():
            err.sources.setdefault(name, text)
        raise
    except RecursionError:
        err = ArchError("The spec nests too deeply to elaborate here (blocks within blocks, or values within "
                        "values); flatten it.", getattr(elab, "last_span", None))
        for name, text in loader.sources.items():
            err.sources.setdefault(name, text)
        raise err from None


def _command_line_values(defines: dict[str, str], loader, elab, module) -> dict:
    """Evaluate ``-D name=value`` texts as spec expressions; spans point into the rebuilt command line."""
    file = "<command line>"
    parts, values, col = [], {}, 1
    for name, text in defines.items():
        part = f"-D {name}={text}"
        parts.append(part)
        name_col, value_col = col + 3, col + 4 + len(name)
        loader.sources[file] = " ".join(parts)
        try:
            expr = parse_expression(" " * (value_col - 1) + text, file)
        except ArchError as err:
            err.sources[file] = loader.sources[file]
            raise
        span = Span(file, 1, name_col, 1, value_col + len(text))
        values[name] = Value(elab.eval(expr, Env(module)), span)
        col += len(part) + 1
    return values


@dataclass(frozen=True)
class ModelInfo:
    """A model a spec file defines: its parameters, and those without a value (``required``).

    A model with required parameters compiles only once they are given (``-D``
    or keyword arguments); model aliases usually supply them.
    """
    name: str
    params: tuple
    required: tuple


def list_models(source) -> list[ModelInfo]:
    """The models (and model aliases) a spec file defines, in the order it defines them."""
    if not isinstance(source, (str, Path)):
        raise ArchError(f"list_models() takes a path (str or pathlib.Path) or spec text, not "
                        f"{type(source).__name__}.")
    elab = Elaborator()
    loader = Loader(lambda expr, ns: elab.eval(expr, Env(ns)), elab)
    try:
        module = loader.load_path(Path(source)) if _is_path(source) else loader.load_text(source)
        return [ModelInfo(d.name, *_signature(d, module, 0)) for d in module.defs.values() if d.kind == "model"]
    except ArchError as err:
        for name, text in loader.sources.items():
            err.sources.setdefault(name, text)
        raise


def _signature(defn, module, depth: int) -> tuple[tuple, tuple]:
    if isinstance(defn, ast.Definition):
        names = tuple(p.name for p in defn.params)
        return names, tuple(p.name for p in defn.params if p.default is None)
    if depth > 64:
        raise ArchError(f"Model alias '{defn.name}' is part of a cycle of aliases.", defn.name_span)
    target, where = module, None
    for part in defn.target:
        hit = target.lookup(part) if hasattr(target, "lookup") else None
        if hit is None:
            raise ArchError(f"Model alias '{defn.name}' names '{'.'.join(defn.target)}', which is not defined.",
                            defn.target_span)
        target, where = hit
    if not isinstance(target, (ast.Definition, ast.ModelAlias)) or target.kind != "model":
        raise ArchError(f"'{defn.name}' must name a model after '=', but '{'.'.join(defn.target)}' is not one.",
                        defn.target_span)
    names, required = _signature(target, where, depth + 1)
    bound = set(names[:len(defn.args.positional)]) | {k.name for k in defn.args.keywords}
    return names, tuple(r for r in required if r not in bound)
