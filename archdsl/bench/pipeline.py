"""Time and peak memory of a pass pipeline on a model whose weights are in memory.

Run as ``python -m archdsl.bench.pipeline --spec zoo_specs/vgg.arch --model vgg16``;
each measurement is a fresh process (peak resident memory is per process), and
the weights are materialised before the clock starts, as they are when a user
has loaded trained weights. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

PIPELINE = "fold-bn,drop-inference-noops,dce,fold-bn,dce"


def measure(spec: str, model: str, pipeline: str) -> dict:
    import archdsl
    from archdsl.passes import run_pipeline
    graph = archdsl.load(spec, model)
    for p in graph.params.values():
        p.value                                   # noqa: B018 - materialise, as loaded weights would be
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = run_pipeline(graph, pipeline)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    weights = sum(p.value.nbytes for p in graph.params.values())
    return {"model": model, "pipeline": pipeline, "seconds": round(seconds, 3),
            "weights_mb": round(weights / 2 ** 20, 1), "peak_rss_mb": round(peak / 1024, 1),
            "extra_peak_mb": round((peak - base) / 1024, 1), "nodes_after": len(result.graph)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="zoo_specs/vgg.arch")
    ap.add_argument("--model", default="vgg16")
    ap.add_argument("--passes", default=PIPELINE)
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.spec, args.model, args.passes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
