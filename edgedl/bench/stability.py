"""Measurements that run until they can be trusted, and ones that run long enough to show heat.

``until_stable`` keeps timing until the p50's bootstrap interval is within a target (+-2%) or a
time limit passes. ``sustained`` runs minutes of back-to-back inference in windows and reports
how latency, power and temperature drift, since phones and fanless boards change ranking after
minutes of load.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from edgedl.bench import conditions
from edgedl.bench.latency import LatencyResult, measure_latency, percentile_intervals

DRIFT_FLAG = 0.10  # latency or power moving more than 10% between the first and last window


def p50_half_width(samples_ms: np.ndarray) -> float | None:
    """Half the width of the p50's bootstrap 95% interval, as a fraction of p50."""
    ci = percentile_intervals(samples_ms, quantiles=(50,))
    if ci is None:
        return None
    p50 = float(np.percentile(samples_ms, 50))
    return (ci["p50"][1] - ci["p50"][0]) / 2 / p50 if p50 > 0 else None


def until_stable(call: Callable[[int], object], runs: int, min_seconds: float, batch: int, limit_s: float,
                 target: float = 0.02) -> tuple[LatencyResult, dict]:
    """Batches of timed calls until the p50's interval is within +-``target`` of p50, or ``limit_s``."""
    start = time.perf_counter()
    parts, wall, done = [], 0.0, 0
    while True:
        part = measure_latency(lambda i: call(done + i), runs=runs, warmup=0, min_seconds=min_seconds, batch=batch)
        parts.append(part.samples_ms)
        wall += part.wall_s
        done += len(part.samples_ms)
        samples = np.concatenate(parts)
        half = p50_half_width(samples)
        stable = half is not None and half <= target
        if stable or time.perf_counter() - start >= limit_s:
            break
    info = {"stable": stable, "p50_half_width_pct": None if half is None else 100 * half,
            "target_pct": 100 * target, "batches": len(parts), "limit_s": limit_s}
    return LatencyResult(samples, batch, wall), info


def sustained(call: Callable[[int], object], seconds: float, batch: int, source=None, windows: int = 10) -> dict:
    """Back-to-back inference for ``seconds`` in ``windows`` windows: p50, power and temperatures of each."""
    length = seconds / windows
    rows, done, start = [], 0, time.perf_counter()
    for _ in range(windows):
        if source is not None:
            source.start()
        part = measure_latency(lambda i: call(done + i), runs=1, warmup=0, min_seconds=length, batch=batch)
        power = source.stop() if source is not None else None
        done += len(part.samples_ms)
        temps = conditions.thermal().get("temperatures_c") or {}
        rows.append({"t_s": time.perf_counter() - start, "p50_ms": part.stats()["p50"], "calls": len(part.samples_ms),
                     "avg_w": power.avg_w if power is not None else None,
                     "max_temp_c": max(temps.values()) if temps else None})
    first, last = rows[0], rows[-1]
    drift = {"p50": last["p50_ms"] / first["p50_ms"] - 1 if first["p50_ms"] > 0 else None,
             "power": (last["avg_w"] / first["avg_w"] - 1) if first["avg_w"] else None,
             "temp_rise_c": (last["max_temp_c"] - first["max_temp_c"]) if first["max_temp_c"] is not None else None}
    return {"seconds": seconds, "windows": rows, "drift": drift}


def drift_flags(result: dict) -> list[str]:
    """Sentences for a sustained run whose latency or power moved."""
    flags = []
    drift, seconds = result["drift"], result["seconds"]
    span = f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:g} s"
    if drift["p50"] is not None and abs(drift["p50"]) > DRIFT_FLAG:
        flags.append(f"p50 moved {100 * drift['p50']:+.0f}% over {span} of sustained load: the device heats or its "
                     "clocks change (or other load came and went); the steady-state figure is the last window's")
    if drift["power"] is not None and abs(drift["power"]) > DRIFT_FLAG:
        flags.append(f"power moved {100 * drift['power']:+.0f}% over {span} of sustained load")
    return flags
