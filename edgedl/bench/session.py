"""One benchmark of one artifact: cold start, steady-state latency with intervals, memory, energy,
and the conditions that decide whether the figures can be trusted.

Order of a run: check the energy source (before any work), load the model (timed, with its
memory), the first inference (timed apart), warm-up, an idle power window, then the timed window
with the power source sampling alongside. Nothing here imports torch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgedl.bench import conditions, memory
from edgedl.bench.latency import measure_latency, percentile_intervals

LOAD_FLAG_CORES = 0.25  # other processes using more than a quarter of a core on average skew timings
TAIL_FLAG = 3.0  # p99 more than 3x p50
CLOCK_DROP = 0.9  # the fastest CPU clock falling below 90% of where it started


def parse_cpus(text: str | None) -> list[int] | None:
    """``--cpus 0,2-3`` -> [0, 2, 3]."""
    if not text:
        return None
    from edgedl.errors import UsageError

    cpus: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            cpus += list(range(int(low), int(high or low) + 1))
    except ValueError:
        raise UsageError(f"--cpus {text}: give CPU numbers and ranges, e.g. 0,2-3") from None
    available = current_cpus()
    if available is not None and not set(cpus) <= set(available):
        raise UsageError(f"--cpus {text}: this process may run on CPUs {available} only")
    return cpus


def pin(cpus: list[int] | None) -> set[int] | None:
    """Run this process on ``cpus`` only; returns the affinity to restore (None when nothing changed)."""
    if not cpus:
        return None
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    return previous


def current_cpus() -> list[int] | None:
    """The CPUs this process may run on (None where the OS does not say)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def unpin(previous: set[int] | None) -> None:
    if previous is not None:
        os.sched_setaffinity(0, previous)


class Flags:
    """Reasons a result should not be trusted as it stands, each one sentence for the screen."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.items.append(text)


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def timed_window(call: Callable[[int], object], runs: int, min_seconds: float, batch: int, source=None,
                 idle_seconds: float = 0.0, until_stable_s: float | None = None):
    """The idle window (when a power source is given), then the timed calls with the source sampling.

    With ``until_stable_s``, the timed calls go on in batches until the p50's interval is within
    +-2% or that many seconds pass (edgedl.bench.stability).

    Returns (LatencyResult, idle PowerWindow or None, run PowerWindow or None, error or None,
    busy seconds of other processes during the timed calls or None, until-stable info or None).
    """
    idle = window = error = None
    if source is not None and idle_seconds > 0:
        try:
            source.start()
            time.sleep(idle_seconds)
            idle = source.stop()
        except Exception as exc:  # a sensor lost here loses energy, not the latency
            error = exc
            source = None
    if source is not None:
        source.start()
    busy0, own0 = conditions.cpu_busy_seconds(), _own_cpu_seconds()
    stable = None
    if until_stable_s:
        from edgedl.bench.stability import until_stable

        result, stable = until_stable(call, runs, min_seconds, batch, until_stable_s)
    else:
        result = measure_latency(call, runs=runs, warmup=0, min_seconds=min_seconds, batch=batch)
    busy1, own1 = conditions.cpu_busy_seconds(), _own_cpu_seconds()
    if source is not None:
        try:
            window = source.stop()
        except Exception as exc:
            error = exc
    other = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) - (own1 - own0))
    return result, idle, window, error, other, stable


def judge(result, stats: dict, other_busy: float | None, clocks: tuple, thermal: tuple, flags: Flags) -> dict:
    """Flags for host load, a long tail, a falling clock and hot sensors; the figures behind them."""
    other_cores = other_busy / result.wall_s if other_busy is not None and result.wall_s > 0 else None
    if other_cores is not None and other_cores > LOAD_FLAG_CORES:
        flags.add(f"other processes kept {other_cores:.2f} CPU cores busy during the run: timings are slower and "
                  "noisier than on a quiet machine")
    if stats["p50"] > 0 and stats["p99"] / stats["p50"] > TAIL_FLAG:
        flags.add(f"p99 is {stats['p99'] / stats['p50']:.1f}x p50: a long tail (other load, clock changes or "
                  "garbage collection); look at p90 and the interval before trusting p99")
    before, after = clocks
    if before and after and after["max"] < CLOCK_DROP * before["max"]:
        flags.add(f"the fastest CPU clock fell from {before['max']:.0f} to {after['max']:.0f} MHz during the run: "
                  "throttling or a power-saving governor")
    hot = {k: v for k, v in ((thermal[1] or {}).get("temperatures_c") or {}).items() if v >= 85}
    if hot:
        flags.add(f"sensors at {', '.join(f'{k} {v:.0f} C' for k, v in hot.items())}: the device may throttle")
    return {"other_load_cores": other_cores, "clocks_before_mhz": before, "clocks_after_mhz": after}


def energy_result(source, window, idle, error, reason, inferences: int, replayed: bool, notes: list[str]) -> dict:
    from edgedl.bench.energy import energy_record

    if source is None:
        return {"source": None, "reason": reason}
    if window is None:
        return {"source": source.name, "reason": f"energy lost: {error}"}
    return energy_record(source, window, inferences, idle, replayed, notes)


def summarize_memory(before: dict, after_load: dict, energy_source) -> dict:
    gpu = None
    if energy_source is not None and hasattr(energy_source, "memory_used_mb"):
        gpu = energy_source.memory_used_mb()
    available_drop = None
    if before.get("available") is not None and after_load.get("available") is not None:
        available_drop = before["available"] - after_load["available"]
    return {
        "peak_rss_mb": memory.peak_rss_mb(),
        "rss_before_load_mb": before.get("rss"),
        "load_mb": (after_load["rss"] - before["rss"]) if before.get("rss") is not None else None,
        "steady_rss_mb": memory.rss_mb(),
        "children_peak_mb": memory.children_peak_mb(),
        "gpu_used_mb": gpu,
        "system_available_drop_on_load_mb": available_drop,
        "notes": "load_mb is the resident memory the model's load added; on a Jetson the GPU's allocations come out "
                 "of system memory, so the drop in MemAvailable on load includes them (other processes move it too)",
    }


def snapshot_memory() -> dict:
    return {"rss": memory.rss_mb(), "available": memory.available_mb()}


def cold_start(load_ms: float, first_ms: float) -> dict:
    return {"load_ms": load_ms, "first_inference_ms": first_ms}


def statistics(samples_ms: np.ndarray) -> dict:
    return {"latency_ci95_ms": percentile_intervals(samples_ms),
            "method": "bootstrap percentile interval over the timed calls (1000 resamples, fewer past 5000 calls)"}


def op_time(artifact: Path, fmt: str, feed: dict, threads: int | None, top: int = 10) -> dict:
    """Milliseconds per run in each op type (the top ones), where the backend has a profiler."""
    if fmt != "onnx":
        return {"ops": None, "note": f"no per-op profiler for {fmt} files here (LiteRT's op profiling runs in its "
                                     "benchmark_model tool on the device)"}
    from edgedl.formats.onnx.profile import op_profile

    ops = op_profile(artifact, feed, threads)
    return {"ops": dict(list(ops.items())[:top]), "total_ms": sum(ops.values()),
            "source": "ONNX Runtime's profiler (kernel time per op type, 30 runs)"}


def gpu_time(samples_ms: list[float]) -> dict | None:
    """Kernel time per call from CUDA events (the torch backend on a GPU), apart from wall-clock time."""
    if not samples_ms:
        return None
    s = np.asarray(samples_ms)
    return {"p50": float(np.percentile(s, 50)), "p90": float(np.percentile(s, 90)), "p99": float(np.percentile(s, 99)),
            "mean": float(s.mean()), "calls": int(len(s)), "source": "CUDA events around the model's forward call"}


def device_notes(device: dict, replayed: bool, root: str | Path, energy: dict) -> list[str]:
    """Plain sentences about where the figures come from."""
    notes = []
    if device.get("on_device") is False:
        notes.append(f"timings and memory are this host's ({device['measured_on']}), not {device['name']}'s: "
                     f"bench on the device for its figures")
    if replayed and energy.get("source"):
        notes.append(f"power was read from a replayed sensor tree ({root}), not from live hardware, while the model "
                     "ran on this host: the watts are the tree's")
    return notes


__all__ = ["Flags", "cold_start", "device_notes", "energy_result", "judge", "parse_cpus", "snapshot_memory",
           "statistics", "summarize_memory", "timed_window"]
