"""Spec files as modules: reading, imports (relative files and the standard library), and names.

Imports are checked before anything is read: only ``.arch`` files, resolved
relative to the importing file, no cycles, a bounded number of files, a
bounded size each. A spec may come from an untrusted place, so compiling it
never reads (and so never echoes) any other kind of file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .. import files
from ..diagnostics import ArchError, Note, Span, did_you_mean
from ..syntax import ast
from ..syntax.parser import MAX_SOURCE_BYTES, MAX_TOKENS, parse_counted
from .functions import check_definition, check_function

MAX_IMPORTED_FILES = 256


@dataclass
class ModuleNS:
    """The names one spec file defines: blocks, models, functions, constants and imported namespaces."""
    file: str
    ast: ast.Module
    defs: dict = field(default_factory=dict)        # name -> ast.Definition, ast.ModelAlias or ast.Function
    consts: dict = field(default_factory=dict)      # name -> value
    spans: dict = field(default_factory=dict)       # name -> Span of its definition
    namespaces: dict = field(default_factory=dict)  # alias -> ModuleNS
    star: list = field(default_factory=list)        # ModuleNS imported without alias
    type_word = "an imported file"                  # how messages describe a namespace used as a value

    @property
    def spec_text(self) -> str:
        return f"'{self.file}'"

    def lookup(self, name: str, _seen=None):
        """A definition or constant visible in this file, or ``None``."""
        if name in self.defs:
            return self.defs[name], self
        if name in self.consts:
            return self.consts[name], self
        if name in self.namespaces:
            return self.namespaces[name], self
        seen = _seen or set()
        seen.add(id(self))
        for mod in self.star:
            if id(mod) not in seen:
                hit = mod.lookup(name, seen)
                if hit is not None:
                    return hit
        return None

    def visible_names(self) -> set:
        names = set(self.defs) | set(self.consts) | set(self.namespaces)
        for mod in self.star:
            names |= set(mod.defs) | set(mod.consts)
        return names

    def models(self) -> list:
        return [d for d in self.defs.values() if d.kind == "model"]


def display_name(path: Path) -> str:
    """How diagnostics name a file: relative to the working directory when inside it."""
    std = Path(str(resources.files("archdsl").joinpath("stdlib")))
    try:
        return "std/" + str(path.relative_to(std.resolve()))
    except ValueError:
        pass
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def stdlib_modules() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("archdsl").joinpath("stdlib").iterdir()
                  if p.name.endswith(".arch"))


def _absolute(path: Path, span: Span | None) -> Path:
    """``path`` made absolute with links followed (to an ``.arch`` file only: :mod:`archdsl.files`)."""
    shown = files.shown(display_name(path) if path.is_absolute() else str(path))
    return files.resolve(path, span, "compiled" if span is None else "imported", shown)


class Loader:
    """Reads spec files once each and resolves their imports; owns the source texts for diagnostics."""

    def __init__(self, evaluate_const, budget):
        """``budget`` (the elaborator) pays for the tokens read
        (:meth:`~archdsl.frontend.expressions.ExpressionMixin.charge_tokens`)."""
        self.budget = budget
        self.sources: dict[str, str] = {}
        self.modules: dict[str, ModuleNS] = {}
        self._stack: list[tuple[str, Span | None]] = []
        self._evaluate_const = evaluate_const

    # ---- entry points
    def load_text(self, text: str, name: str = "<string>", base: Path | None = None) -> ModuleNS:
        self.sources[name] = text
        return self._build(self._parse(text, name), name, base or Path.cwd())

    def load_path(self, path: Path, span: Span | None = None) -> ModuleNS:
        path = _absolute(path, span)
        key = str(path)
        if key in self.modules:
            return self.modules[key]
        if any(k == key for k, _ in self._stack):
            cycle = self._stack[[k for k, _ in self._stack].index(key):]
            chain = [Path(k).name for k, _ in cycle] + [path.name]
            notes = [Note(f"'{Path(k).name}' is imported here", s) for k, s in cycle[1:] if s is not None]
            raise ArchError("Import cycle: " + " imports ".join(chain) + "; break the cycle by moving the "
                            "shared blocks into a file both can import.", span, notes)
        if len(self.modules) >= MAX_IMPORTED_FILES:
            raise ArchError(f"The spec imports more than {MAX_IMPORTED_FILES} files.", span)
        text = self._read(path, span)
        name = display_name(path)
        self.sources[name] = text
        self._stack.append((key, span))
        try:
            mod = self._build(self._parse(text, name), name, path.parent)
        finally:
            self._stack.pop()
        self.modules[key] = mod
        return mod

    # ---- internals
    def _parse(self, text: str, name: str) -> ast.Module:
        """Parse one file within what is left of the :data:`MAX_TOKENS` of a compile and of its step budget."""
        module, n = parse_counted(text, name, self.budget.tokens_left(), MAX_TOKENS)
        self.budget.charge_tokens(n, module.span)
        return module

    def _read(self, path: Path, span: Span | None) -> str:
        """The file's text by the one rule every command reads specs by (:func:`archdsl.files.read_spec`)."""
        return files.read_spec(path, span, "compiled" if span is None else "imported", files.shown(display_name(path)),
                               MAX_SOURCE_BYTES)

    def _resolve(self, imp: ast.Import, base: Path) -> Path:
        if imp.is_std:
            parts = imp.path.split(".")
            names = stdlib_modules()
            if parts[0] != "std" or len(parts) != 2 or parts[1] not in names:
                raise ArchError(f"There is no standard library module '{imp.path}'"
                                f"{did_you_mean(imp.path, ['std.' + n for n in names])}"
                                + ("" if did_you_mean(imp.path, ['std.' + n for n in names]) else
                                   f"; the standard library has {', '.join('std.' + n for n in names)}."),
                                imp.span)
            return Path(str(resources.files("archdsl").joinpath("stdlib", parts[1] + ".arch")))
        if not imp.path.endswith(".arch"):
            raise ArchError(f"Only .arch spec files can be imported, and '{files.shown(imp.path)}' is not one; "
                            "the file was not read.", imp.span)
        return base / imp.path

    def _build(self, module: ast.Module, file: str, base: Path) -> ModuleNS:
        ns = ModuleNS(file, module)
        for item in module.items:
            if isinstance(item, ast.Import):
                target = self.load_path(self._resolve(item, base), item.span)
                if item.alias:
                    self._define(ns, item.alias, item.span)
                    ns.namespaces[item.alias] = target
                else:
                    ns.star.append(target)
            elif isinstance(item, (ast.Definition, ast.ModelAlias, ast.Function)):
                self._define(ns, item.name, item.name_span)
                if isinstance(item, ast.Function):
                    check_function(item)
                elif isinstance(item, ast.Definition):
                    check_definition(item)
                ns.defs[item.name] = item
            elif isinstance(item, ast.Const):
                self._define(ns, item.name, item.span)
                ns.consts[item.name] = self._evaluate_const(item.value, ns)
        return ns

    @staticmethod
    def _define(ns: ModuleNS, name: str, span: Span) -> None:
        if name in ns.spans:
            raise ArchError(f"'{name}' is defined twice in this file; rename one of them.", span,
                            (Note(f"'{name}' is first defined here", ns.spans[name]),))
        ns.spans[name] = span
