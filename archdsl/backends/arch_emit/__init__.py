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
* **Blocks are kept.** The instances of one block definition (``ScopeInfo.name``)
  become one ``block`` of that name. Its numbers that differ between instances
  are its parameters (named after the definition's own arguments where the values
  agree with them, such as ``planes`` and ``stride``, or ``planes * 4``; else
  ``<layer>_<attribute>``), and each call site passes its instance's values.
  Instances that differ only by the presence of a residual shortcut share one
  body with a flag (``shortcut if downsample { ... }``). Instances that differ in
  structure otherwise (``residual {...}`` or a plain chain, a layer only some
  have, a ``slice`` or a sub-block) are variants of the one definition, whose
  body chooses between them with ``if`` on an argument that tells them apart
  (``if stride == 2``, ``if use_se``), else on ``variant: int = 0`` (``variants.py``).
  Square and ``[h, w]`` kernels or paddings share one untyped parameter.
* **Constructs.** The merge nodes that carry ``meta["construct"]`` (``residual``,
  ``parallel``, ``dense``) and the three nodes of a spatial transformer are
  written as the construct when the graph around them still has its shape (paths
  that are chains used by nothing else, in creation order); otherwise the data
  flow is written out with named tensors and explicit merges
  (``(a, b) -> add``), which the language allows for any DAG.
* **Names.** A labelled layer keeps its label: any name of ASCII letters, digits,
  ``_`` and ``-`` starting with a letter or ``_`` is a label, keywords included
  (``model:``, ``block1-0:``). A layer named by position is written unlabelled at that
  position; where a pass removed layers before it, an empty sequence
  ``[identity for _ in []]`` holds each missing place, so later positions (and
  parameter names) are kept. A name no label can produce (``café``, ``0_tap``, a
  number below its position) is replaced by a valid one: :class:`ArchSpec` lists
  these renames, and the spec's header says so.

The result is deterministic (the same graph gives the same bytes) and in the
canonical layout of ``archc fmt``. Graphs that no spec can make (quantised or
integer tensors, the pass-only ops ``quantize``, ``dequantize`` and ``cast``) are
refused with an :class:`ArchError`.

Differences that remain after a round trip (``ScopeInfo`` only, never nodes or
parameters): the arguments recorded for block instances and the model are those
of the written spec (a ``variant`` among them); the empty sequences that hold
places add ``seq`` scopes; spans point into the written spec. Only variants with
different inputs still split a definition into suffixed ones (``basic_2``).

The modules, in the order a graph goes through them:

* ``writer.py``: the scopes as regions, their data flow as units, the bodies
  (with ``constructs.py``, which recognises the constructs, and ``structure.py``:
  regions, units and the trees that bodies are);
* ``grouping.py``: block instances grouped into definitions, with their parameters
  (``variants.py``: the variants of one definition and the argument that picks them);
* ``text.py``: the trees as spec lines (``tokens.py``: names, labels and values);
* ``emit.py``: the entry points (:func:`emit_arch_spec` and the rest);
  ``check.py``: :func:`check_arch`; ``spec.py``: :class:`ArchSpec`.
"""
from .check import check_arch
from .emit import emit_arch, emit_arch_spec, write_arch
from .spec import ArchSpec
from .text import GAP_TEXT
from .tokens import KEYWORDS, label_text

__all__ = ["ArchSpec", "emit_arch", "emit_arch_spec", "write_arch", "check_arch", "label_text", "KEYWORDS", "GAP_TEXT"]
