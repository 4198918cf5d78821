"""Timing loop and statistics (numpy and the standard library only)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class LatencyResult:
    """Per-call latencies of one measurement, in milliseconds."""

    samples_ms: np.ndarray
    batch: int
    wall_s: float

    def stats(self) -> dict[str, float]:
        s = self.samples_ms
        return {
            "p50": float(np.percentile(s, 50)),
            "p90": float(np.percentile(s, 90)),
            "p99": float(np.percentile(s, 99)),
            "mean": float(s.mean()),
            "std": float(s.std(ddof=1)) if len(s) > 1 else 0.0,
            "min": float(s.min()),
            "max": float(s.max()),
        }

    @property
    def throughput_ips(self) -> float:
        """Inferences (samples) per second over the timed calls."""
        return self.batch * len(self.samples_ms) / (float(self.samples_ms.sum()) / 1000.0)


def measure_latency(
    call: Callable[[int], object],
    runs: int = 100,
    warmup: int = 10,
    min_seconds: float = 1.0,
    batch: int = 1,
    max_runs: int = 1_000_000,
) -> LatencyResult:
    """Time ``call(i)`` after ``warmup`` untimed calls: at least ``runs`` calls and ``min_seconds``.

    ``i`` is the call's index, so a caller can cycle through real inputs.
    """
    for i in range(warmup):
        call(i)
    samples: list[float] = []
    clock = time.perf_counter
    start = clock()
    i = 0
    while (i < runs or clock() - start < min_seconds) and i < max_runs:
        t0 = clock()
        call(i)
        samples.append(clock() - t0)
        i += 1
    return LatencyResult(np.asarray(samples) * 1000.0, batch, clock() - start)


def side_by_side(paths: dict, sample: np.ndarray, threads: int | None = None, rounds: int = 3,
                 runs: int = 30, warmup: int = 5, min_seconds: float = 0.3, per_round: bool = False) -> dict:
    """Median p50 (ms) of each artifact, timed in alternating rounds in this one process (with
    ``per_round``, each round's p50, in order).

    Each round times every artifact in turn, and the order flips every round, so drift in the
    machine's speed (other load, clocks, heat) falls on all of them alike.
    """
    import edgedl.runtime as rt

    runners = {key: rt.load(path, threads=threads) for key, path in paths.items()}
    p50s: dict = {key: [] for key in paths}
    try:
        keys = list(paths)
        for r in range(rounds):
            for key in keys if r % 2 == 0 else keys[::-1]:
                call = runners[key]
                result = measure_latency(lambda i, call=call: call(sample), runs=runs, warmup=warmup,
                                         min_seconds=min_seconds)
                p50s[key].append(result.stats()["p50"])
    finally:
        for runner in runners.values():
            runner.close()
    if per_round:
        return {key: [float(v) for v in values] for key, values in p50s.items()}
    return {key: float(np.median(values)) for key, values in p50s.items()}


def peak_rss_mb() -> float | None:
    """High-water resident memory of this process in MiB (interpreter and libraries included).

    On Linux this reads VmHWM, which belongs to the current address space: ``ru_maxrss`` would
    carry over the parent's peak into a child started by fork and exec.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def percentile_intervals(samples_ms, quantiles=(50, 90, 99), level: float = 0.95, resamples: int = 1000,
                         seed: int = 0) -> dict | None:
    """Bootstrap confidence intervals of latency percentiles: {"p50": [low, high], ...} in ms.

    Resampling treats calls as independent; consecutive calls on a busy machine are not, so read
    the interval as a lower bound on the uncertainty. None with fewer than 20 samples.
    """
    s = np.asarray(samples_ms, dtype=float)
    n = len(s)
    if n < 20:
        return None
    rng = np.random.default_rng(seed)
    resamples = max(200, min(resamples, 5_000_000 // n))  # long runs: fewer resamples, their interval is narrow
    # Resample in chunks of at most 200k draws: the draws, their indices and np.percentile's copy are
    # each that big, and the bench process's peak RSS is a reported figure (2M draws added 46 MB).
    chunk = max(1, min(resamples, 200_000 // n))
    stats = []
    for start in range(0, resamples, chunk):
        draw = s[rng.integers(0, n, (min(chunk, resamples - start), n))]
        stats.append(np.percentile(draw, quantiles, axis=1).T)
    table = np.concatenate(stats)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(table, [tail, 100 - tail], axis=0)
    return {f"p{q}": [float(lo), float(hi)] for q, lo, hi in zip(quantiles, low, high)}
