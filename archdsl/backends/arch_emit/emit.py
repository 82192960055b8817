"""The entry points that write a spec: :func:`emit_arch_spec`, :func:`emit_arch` and :func:`write_arch`.

They run the stages in order: the writer (structure and bodies), the grouping of
block instances, the text; then the header, ``archc fmt``'s layout and, by
default, :func:`check_arch`.
"""
from __future__ import annotations

from pathlib import Path

from ...diagnostics import ArchError
from ...ir.graph import Graph
from ...ir.printer import print_graph
from .check import check_arch
from .grouping import Grouper
from .spec import ArchSpec
from .text import GAP_TEXT, Renderer
from .tokens import NAME, identifier, language_names
from .writer import Writer


def emit_arch_spec(graph: Graph, check: bool = True) -> ArchSpec:
    """The graph as ``.arch`` text, with the renames it needed (see :mod:`archdsl.backends.arch_emit`).

    With ``check`` (the default) the text is loaded again and compared with the graph
    (:func:`check_arch`), so a spec that would mean something else is never returned.
    """
    w = Writer(graph)
    model_name = graph.name if NAME.match(graph.name or "") else identifier(graph.name or "", "m")
    taken = language_names()
    while model_name in taken:
        model_name += "_"
    if model_name != graph.name:
        w.notes.append(f"the model '{graph.name}' is written as '{model_name}'")
    w.model_name = model_name
    w.bodies()
    grouper = Grouper(w)
    grouper.run()
    renderer = Renderer(grouper)
    out = [f"# {model_name}: the graph IR of "
           f"{graph.meta.get('file') or 'a model'} written back as a spec (archdsl)."]
    if any(_has_gap(r.tree) for r in [w.regions[""], *w.blocks]):
        out.append(f"# {GAP_TEXT} holds the place of a layer that is gone, so that the layers after it")
        out.append("# keep their position names.")
    renames = {old: _full_rename(w.renames, old) for old in w.renames}
    for old, new in sorted(renames.items()):
        out.append(f"# renamed: @{_comment(old)} is @{_comment(new)} here")
    for note in w.notes:
        out.append(f"# note: {_comment(note)}")
    out.append("")
    for gr in grouper.groups:
        sig = ", ".join(p.signature for p in gr.params)
        uses = len(gr.instances)
        out.append(f"# {uses} instance{'s' if uses != 1 else ''}")
        out.append(f"block {gr.name}({sig}) {{")
        out.extend(renderer.body(gr.rep, gr.resolved, gr.flags, [p.name for p in gr.params]))
        out.append("}")
        out.append("")
    model_tree = grouper.finalise(w.regions[""].tree)
    out.append(f"model {model_name}() {{")
    out.extend(renderer.body(model_tree, {}, {}))
    out.append("}")
    text = "\n".join(out) + "\n"
    from ...syntax.formatter import format_source
    text = format_source(text, f"{model_name}.arch")
    spec = ArchSpec(text, model_name, renames, list(w.notes))
    if check:
        back = check_arch(graph, spec)
        if not renames and model_name == graph.name and \
                print_graph(back, locations=False) != print_graph(graph, locations=False):
            spec.notes.append("the spec creates the nodes in another order than the graph lists them (a pass "
                              "added nodes late), so printed node numbers differ; the graphs are the same")
    return spec


def _full_rename(local: dict, old: str) -> str:
    """The new path of ``old``: every renamed scope on its way replaced by its new name."""
    parts = old.split(".")
    return ".".join(local.get(".".join(parts[:i + 1]), p) for i, p in enumerate(parts))


def _has_gap(t) -> bool:
    if isinstance(t, tuple) and t:
        return t[0] == "@gap" or any(_has_gap(x) for x in t)
    return False


def _comment(text: str) -> str:
    return text.replace("\n", " ").replace("\r", " ")


def emit_arch(graph: Graph, check: bool = True) -> str:
    """The graph as the text of an ``.arch`` spec that loads to the same graph."""
    return emit_arch_spec(graph, check=check).text


def write_arch(graph: Graph, path, check: bool = True) -> ArchSpec:
    """Write the graph's spec to ``path`` (an ``.arch`` file); returns what was written."""
    path = Path(path)
    if path.suffix != ".arch":
        raise ArchError(f"A spec is written to an .arch file, but '{path}' is not one.")
    spec = emit_arch_spec(graph, check=check)
    path.write_text(spec.text, encoding="utf-8")
    return spec
