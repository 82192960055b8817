"""What :func:`emit_arch_spec` returns: the spec text with the renames and notes it needed."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ArchSpec:
    """What :func:`emit_arch_spec` wrote: the spec text, the scopes it had to rename, and notes.

    ``renames`` maps an original scope path (of a layer or scope) to the path the
    spec gives it; parameter names under it change accordingly (:meth:`param_name`).
    ``notes`` lists what the spec does not reproduce exactly (a dropped empty scope,
    a renamed input).
    """
    text: str
    model: str
    renames: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def scope_name(self, scope: str) -> str:
        """The path ``scope`` of the original graph has in the written spec."""
        if not self.renames or not scope:
            return scope
        best = max((old for old in self.renames if scope == old or scope.startswith(old + ".")), key=len,
                   default=None)
        return scope if best is None else self.renames[best] + scope[len(best):]

    def param_name(self, name: str) -> str:
        """The name parameter ``name`` of the original graph has in the written spec."""
        return self.scope_name(name)        # a renamed scope renames its parameters, a bare one (scale's) too
