"""The graph IR written back as a readable ``.arch`` spec (``archc opt --emit arch``, ``--target arch``).

A pass that changes widths (structured pruning) or removes layers leaves a graph
that no spec describes any more; :func:`emit_arch` writes one that does. The spec
loads (``archdsl.load``) to the same graph: the same ops, attributes, shapes,
operand order, inputs and outputs, and the same scope of every node, hence the
same parameter names and shapes, so the graph's weights load into it by name.

How the text is recovered from the IR:

* **Scopes give the structure.** ``graph.scopes`` says which name prefixes are
  block instances, ``[...]`` sequences or labelled constructs. A sequence and a
  labelled construct are written inline (``layer1: [...]``, ``transformer: stn {...}``);
  a block instance is a call of a block definition.
* **Blocks are kept where their instances share a body.** The instances of one
  block definition (``ScopeInfo.name``) are grouped by their body with every
  number taken out; each group becomes one ``block`` whose numbers that differ
  between instances are its parameters (named after the definition's own
  arguments where the values agree with them, such as ``planes`` and ``stride``,
  or ``planes * 4``; else ``<layer>_<attribute>``), and each call site passes its
  instance's values. Instances that differ only by the presence of a residual
  shortcut share one block with a flag (``shortcut if downsample { ... }``).
  Other differences give one block per body (``basic``, ``basic_2``...).
* **Constructs.** The merge nodes that carry ``meta["construct"]`` (``residual``,
  ``parallel``, ``dense``) and the three nodes of a spatial transformer are
  written as the construct when the graph around them still has its shape (paths
  that are chains used by nothing else, in creation order); otherwise the data
  flow is written out with named tensors and explicit merges
  (``(a, b) -> add``), which the language allows for any DAG.
* **Names.** A labelled layer keeps its label; a label the grammar cannot lex as
  a name (a keyword such as ``model``, or ``café``) is written as a computed label
  (``mode{"l"}:``). A layer named by position is written unlabelled at that
  position; where a pass removed layers before it, an empty sequence
  ``[identity for _ in []]`` holds each missing place, so later positions (and
  parameter names) are kept. A name no label can produce (``a-b``, ``0_tap``, a
  number below its position) is replaced by a valid one: :class:`ArchSpec` lists
  these renames, and the spec's header says so.

The result is deterministic (the same graph gives the same bytes) and in the
canonical layout of ``archc fmt``. Graphs that no spec can make (quantised or
integer tensors, the pass-only ops ``quantize``, ``dequantize`` and ``cast``) are
refused with an :class:`ArchError`.

Differences that remain after a round trip (``ScopeInfo`` only, never nodes or
parameters): the arguments recorded for block instances and the model are those
of the written spec; a block whose instances split gets suffixed definitions
(``basic_2``); the empty sequences that hold places add ``seq`` scopes; spans
point into the written spec.

The modules, in the order a graph goes through them:

* ``writer.py``: the scopes as regions, their data flow as units, the bodies
  (with ``constructs.py``, which recognises the constructs, and ``structure.py``:
  regions, units and the trees that bodies are);
* ``grouping.py``: block instances grouped into definitions, with their parameters;
* ``text.py``: the trees as spec lines (``tokens.py``: names, labels and values);
* ``emit.py``: the entry points (:func:`emit_arch_spec` and the rest);
  ``check.py``: :func:`check_arch`; ``spec.py``: :class:`ArchSpec`.
"""
from .check import check_arch
from .emit import emit_arch, emit_arch_spec, write_arch
from .spec import ArchSpec
from .text import GAP_TEXT
from .tokens import KEYWORDS, label_text

__all__ = ["ArchSpec", "emit_arch", "emit_arch_spec", "write_arch", "check_arch", "label_text", "KEYWORDS"]
