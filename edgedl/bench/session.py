"""One benchmark of one artifact: cold start, steady-state latency with intervals, memory, energy,
and the conditions that decide whether the figures can be trusted.

Order of a run: check the energy source (before any work), load the model (timed, with its
memory), the first inference (timed apart), warm-up, the latency window (no sampler running),
then with a power source an idle window and an energy window of as many calls, sampled
alongside. Nothing here imports torch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgedl.bench import conditions, memory
from edgedl.bench.latency import LatencyResult, measure_latency, percentile_intervals

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


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class Timed:
    """What :func:`timed_window` measured."""

    result: LatencyResult  # the latency window, with no power sampler running
    idle: object = None  # PowerWindow of the idle window
    window: object = None  # PowerWindow of the energy window
    energy_inferences: int = 0
    error: BaseException | None = None  # why energy is missing, when a sensor went away
    other_busy: float | None = None  # CPU seconds other processes used during the latency window
    stable: dict | None = None  # --until-stable's outcome
    notes: list = field(default_factory=list)


def timed_window(call: Callable[[int], object], runs: int, min_seconds: float, batch: int, source=None,
                 idle_seconds: float = 0.0, until_stable_s: float | None = None) -> Timed:
    """The latency window, then (with a power source) the idle window and the energy window.

    Latency is timed with no sampler running: the sampling thread's wake-ups would show in the
    figures (benchmarks/RESULTS.md, issue 10). Energy comes from a second window of as many calls,
    at least the source's shortest window, with the sensor sampled alongside. With
    ``until_stable_s``, the latency window goes on in batches until the p50's interval is within
    +-2% or that many seconds pass (edgedl.bench.stability).
    """
    busy0, own0 = conditions.cpu_busy_seconds(), _own_cpu_seconds()
    stable = None
    if until_stable_s:
        from edgedl.bench.stability import until_stable

        result, stable = until_stable(call, runs, min_seconds, batch, until_stable_s)
    else:
        result = measure_latency(call, runs=runs, warmup=0, min_seconds=min_seconds, batch=batch)
    busy1, own1 = conditions.cpu_busy_seconds(), _own_cpu_seconds()
    timed = Timed(result, stable=stable,
                  other_busy=None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) - (own1 - own0)))
    if source is None:
        return timed
    try:
        if idle_seconds > 0:
            source.start()
            time.sleep(idle_seconds)
            timed.idle = source.stop()
        seconds = max(result.wall_s, source.min_window_s)
        if source.min_window_s > result.wall_s:
            timed.notes.append(f"the energy window was stretched to {source.min_window_s:g} s (the latency window took "
                               f"{result.wall_s:.2f} s) by repeating inferences: {source.name}'s counter updates too "
                               "slowly for less")
        source.start()
        energy = measure_latency(call, runs=len(result.samples_ms), warmup=0, min_seconds=seconds, batch=batch)
        timed.window = source.stop()
        timed.energy_inferences = len(energy.samples_ms) * batch
    except Exception as exc:  # a sensor lost loses energy, not the latency
        timed.error = exc
    return timed


def judge(result, stats: dict, other_busy: float | None, clocks: tuple, thermal: tuple, flags: list[str]) -> dict:
    """Appends to ``flags`` (sentences for the screen) for host load, a long tail, a falling clock and hot
    sensors; returns the figures behind them."""
    other_cores = other_busy / result.wall_s if other_busy is not None and result.wall_s > 0 else None
    if other_cores is not None and other_cores > LOAD_FLAG_CORES:
        flags.append(f"other processes kept {other_cores:.2f} CPU cores busy during the run: timings are slower and "
                  "noisier than on a quiet machine")
    if stats["p50"] > 0 and stats["p99"] / stats["p50"] > TAIL_FLAG:
        flags.append(f"p99 is {stats['p99'] / stats['p50']:.1f}x p50: a long tail (other load, clock changes or "
                  "garbage collection); look at p90 and the interval before trusting p99")
    before, after = clocks
    if before and after and after["max"] < CLOCK_DROP * before["max"]:
        flags.append(f"the fastest CPU clock fell from {before['max']:.0f} to {after['max']:.0f} MHz during the run: "
                  "throttling or a power-saving governor")
    hot = {k: v for k, v in ((thermal[1] or {}).get("temperatures_c") or {}).items() if v >= 85}
    if hot:
        flags.append(f"sensors at {', '.join(f'{k} {v:.0f} C' for k, v in hot.items())}: the device may throttle")
    return {"other_load_cores": other_cores, "clocks_before_mhz": before, "clocks_after_mhz": after}


def energy_result(source, timed: Timed, reason: str | None, replayed: bool) -> dict:
    """The JSON ``energy`` object; without a measurement, the source (if any) and why."""
    from edgedl.bench.energy import energy_record

    if source is None:
        return {"source": None, "reason": reason}
    if timed.window is None:
        return {"source": source.name, "reason": f"energy lost: {timed.error}"}
    return energy_record(source, timed.window, timed.energy_inferences, timed.idle, replayed, timed.notes)


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
    total = sum(ops.values())
    return {"ops": dict(list(ops.items())[:top]), "total_ms": total,
            "shares": {op: ms / total for op, ms in list(ops.items())[:top]} if total else {},
            "source": "ONNX Runtime's profiler, a separate pass after the timing (kernel time per op type, "
                      "30 runs after 10 warm-up runs)",
            "note": "profiling times every kernel and so slows it: the shares say where the time goes; the "
                    "latency is the timed p50, measured without the profiler"}


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


__all__ = ["Timed", "cold_start", "current_cpus", "device_notes", "energy_result", "gpu_time", "judge", "op_time",
           "parse_cpus", "pin", "snapshot_memory", "statistics", "summarize_memory", "timed_window", "unpin"]
