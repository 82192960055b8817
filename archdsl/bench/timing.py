"""Clocks and summary statistics (wall-clock ``time.perf_counter``, milliseconds in reports)."""
from __future__ import annotations

import statistics
import time


def percentile(samples, q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between order statistics (numpy's default)."""
    xs = sorted(samples)
    if not xs:
        raise ValueError("no samples")
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(seconds) -> dict:
    """Median, p90, mean, min and max of timings given in seconds, reported in milliseconds."""
    ms = [s * 1e3 for s in seconds]
    return {"median_ms": statistics.median(ms), "p90_ms": percentile(ms, 0.9), "mean_ms": statistics.fmean(ms),
            "min_ms": min(ms), "max_ms": max(ms), "runs": len(ms)}


def timed(fn, *args, **kwargs):
    """``(result, seconds)`` of one call."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def repeat(fn, times: int) -> tuple:
    """``(last result, [seconds per call])`` of ``times`` calls of ``fn()``."""
    out, spent = None, []
    for _ in range(max(1, times)):
        out, s = timed(fn)
        spent.append(s)
    return out, spent


def latency(step, warmup: int, runs: int, tick=None) -> dict:
    """Warm ``step()`` up, then time ``runs`` calls; ``step`` must return only when its work is done
    (runners synchronise the device). ``tick()`` is called after every call (progress)."""
    for _ in range(warmup):
        step()
        if tick:
            tick()
    spent = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        step()
        spent.append(time.perf_counter() - t0)
        if tick:
            tick()
    return summary(spent)


def interleaved(steps: dict, warmup: int, runs: int, tick=None) -> dict:
    """``latency`` for several steps at once, round-robin: every round runs each step once, so
    a change in machine load during the measurement falls on all of them alike and their
    ratios stay meaningful. Returns ``{key: summary}``."""
    spent = {key: [] for key in steps}
    for i in range(warmup + max(1, runs)):
        for key, step in steps.items():
            t0 = time.perf_counter()
            step()
            if i >= warmup:
                spent[key].append(time.perf_counter() - t0)
            if tick:
                tick()
    return {key: summary(s) for key, s in spent.items()}
