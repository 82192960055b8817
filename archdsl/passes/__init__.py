"""Optimisation passes over the graph IR and the pipelines that run them.

``run_pipeline(graph, "fold-bn,dce")`` parses the text into registered
:class:`Pass` objects, runs each on a copy of the graph, verifies the IR after
every pass and returns the final graph with one :class:`PassReport` per pass.
``archc passes`` lists the registered passes; docs/passes.md states their maths.
"""
from .base import PASSES, Pass, PassReport, PassResult, Refusal, register, registry, replace_node
from . import dce, drop_noops, fold_bn, lowrank, prune, quantize, weight_share  # noqa: F401  (the built-in passes register themselves)
from .pipeline import DEFAULT_TOLERANCE, PipelineResult, parse_pipeline, run_pipeline

__all__ = ["PASSES", "Pass", "PassReport", "PassResult", "Refusal", "register", "registry", "replace_node",
           "DEFAULT_TOLERANCE", "PipelineResult", "parse_pipeline", "run_pipeline"]
