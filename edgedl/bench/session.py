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


def parse_cpus(text: str | None, here: bool = True) -> list[int] | None:
    """``--cpus 0,2-3`` -> [0, 2, 3]; checked against this machine's CPUs when the bench runs ``here``
    (a device checks its own)."""
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
    available = current_cpus() if here else None
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


def saturation_flags(graph) -> list[str]:
    """An INT8 file with 8-bit weights, run by ONNX Runtime on a CPU whose kernels add pairs of products
    in 16 bits (x86 without VNNI): its outputs here are not what its Q/DQ define."""
    from edgedl.formats.onnx.quantize import eight_bit_weights, saturating_products

    why = saturating_products()
    count = eight_bit_weights(graph) if why else 0
    if not count:
        return []
    return [f"{count} INT8 weight tensor(s) of this file use 8 bits, and {why}: here its outputs are not what its "
            f"Q/DQ define, nor its accuracy what a CPU with VNNI, an Arm CPU or TensorRT gives; quantize it for this "
            f"CPU (on it, or with stages.quantize.weight_bits: 7), where its weights get 7 bits"]


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
            # the distribution in 21 points (every 5th percentile), for plots across devices and runs
            "quantiles_ms": [round(float(q), 6) for q in np.percentile(samples_ms, np.arange(0, 101, 5))],
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


def score(artifact: Path, data: str | None, dataset, sidecar: dict, notes: dict, **load_options) -> dict | None:
    """Top-1 accuracy of a classifier on the labelled test split of ``--data``, through edgedl.runtime on
    the machine that runs the bench (on a device: the device's own backend, its FP16 or INT8 kernels),
    with its 95% interval; None, and the reason in ``notes``, where the data has no labels."""
    if dataset is None:
        return None
    from edgedl.artifacts import accuracy, wilson_interval

    if not dataset.num_classes or dataset.test.y is None or (sidecar.get("task") not in (None, "classification")):
        notes["accuracy"] = (f"--data {data} has no class labels for this model's task: accuracy comes from "
                             "`edgedl compress` (evaluate stage)")
        return None
    value = accuracy(artifact, dataset.test, **load_options)
    notes.pop("accuracy", None)
    n = len(dataset.test)
    return {"value": value, "samples": n, "interval95": wilson_interval(value, n), "split": "test",
            "where": "measured by this bench, through edgedl.runtime on the machine that ran it"}


def measure(request, trust_model_code: bool = False) -> dict:
    """The result of one :class:`~edgedl.bench.request.BenchRequest`, measured in this process (the
    order of a run is the module's docstring); :func:`edgedl.api.bench` documents each option."""
    import edgedl.runtime as rt
    from edgedl.api import fed_batch
    from edgedl.bench.energy import EnergyUnavailable, open_source
    from edgedl.data.feeds import concrete_shape, data_feeds, random_feeds
    from edgedl.devices import detect, get_profile, named_profile, resolve_device
    from edgedl.errors import UsageError

    (artifact, data, runs, warmup, min_seconds, batch, threads, input_shapes, device, energy, sysfs_root, rails,
     idle_seconds, cpus, backend, compute, profile_ops, until_stable, sustained) = (
        request.artifact, request.data, request.runs, request.warmup, request.min_seconds, request.batch,
        request.threads, request.input_shapes, request.device, request.energy, request.sysfs_root, request.rails,
        request.idle_seconds, request.cpus, request.backend, request.compute, request.profile_ops,
        request.until_stable, request.sustained)
    artifact = Path(artifact)  # the ranges of the numbers were checked by the request's fields
    if not artifact.is_file():
        raise UsageError(f"artifact not found: {artifact}")
    root = Path(sysfs_root)
    if not root.is_dir():
        raise UsageError(f"--sysfs-root {root}: no such folder")
    replayed = root.resolve() != Path("/")
    device_record = resolve_device(device)
    profile = named_profile(device) or get_profile(detect(root)["profile"])
    try:  # before any work: a named source that cannot measure here is an error now, not after the run
        source, energy_reason = open_source(energy, root, profile, rails)
    except EnergyUnavailable as exc:
        raise EnergyUnavailable(f"--energy {energy}: {exc}") from None
    from edgedl.runtime.backends import BACKENDS
    from edgedl.runtime.sidecar import read_sidecar

    opened_as = BACKENDS[backend].format if backend in BACKENDS else rt.backend_for(artifact, read_sidecar(artifact)).format
    if opened_as == "onnx":  # before ONNX Runtime reads it (whatever its name): a parser crash, external data outside
        from edgedl.formats.onnx import graph as onnx_graph

        onnx_graph.probe(artifact)
        onnx_graph.load_graph(artifact)
    if request.cooldown:  # on the device itself, so it works the same over SSH
        time.sleep(request.cooldown)
    previous = pin(cpus)  # restored after: an API caller's process keeps its own affinity
    try:
        input_shapes = dict(input_shapes or {})
        notes = {"accuracy": "bench measures speed and memory; accuracy comes from `edgedl compress` (evaluate stage)"}
        flags: list[str] = []  # why a figure should not be trusted as it stands, one sentence each
        mem_before = snapshot_memory()
        start = time.perf_counter()
        with rt.load(artifact, backend=backend, threads=threads, compute=compute,
                     trust_model_code=trust_model_code) as runner:
            load_ms = (time.perf_counter() - start) * 1000
            mem_loaded = snapshot_memory()
            unknown = sorted(set(input_shapes) - {i.name for i in runner.inputs})
            if unknown:
                raise UsageError(f"--input-shape names {unknown}, but the model's inputs are "
                                 f"{[i.name for i in runner.inputs]}")
            dataset = None
            if data:
                from edgedl.data import load_dataset

                dataset = load_dataset(data, inputs=list(runner.inputs))
                feeds = data_feeds(runner.inputs, dataset.test.x, batch)
            else:
                batch = fed_batch(input_shapes, batch)  # every input fed at the batch an --input-shape gives
                for info in runner.inputs:  # refuse unknown dimensions before loading anything else
                    concrete_shape(info, batch, input_shapes.get(info.name))
                feeds = random_feeds(runner.inputs, batch, shapes=input_shapes)
            shapes = {k: list(v.shape) for k, v in feeds[0].items()}
            run = runner.run
            n = len(feeds)
            start = time.perf_counter()
            run(feeds[0])
            first_ms = (time.perf_counter() - start) * 1000
            for i in range(warmup):
                run(feeds[i % n])
            before, clocks_before = conditions.thermal(), conditions.cpu_clocks_mhz()
            gpu_calls = getattr(runner, "gpu_ms", None)
            gpu_start = len(gpu_calls) if gpu_calls is not None else 0
            timed = timed_window(lambda i: run(feeds[i % n]), runs, min_seconds, batch, source, idle_seconds,
                                         until_stable)
            result = timed.result
            heat = None
            if sustained:
                from edgedl.bench.stability import drift_flags, sustained as sustained_run

                heat = sustained_run(lambda i: run(feeds[i % n]), sustained, batch,
                                     source if timed.window is not None else None)
                for flag in drift_flags(heat):
                    flags.append(flag)
            after, clocks_after = conditions.thermal(), conditions.cpu_clocks_mhz()
            backend = runner.backend
            sidecar = runner.sidecar
            latency_calls = slice(gpu_start, gpu_start + len(result.samples_ms))  # not the energy window's calls
            gpu_figures = gpu_time(gpu_calls[latency_calls]) if gpu_calls is not None else None
        stats = result.stats()
        validity = judge(result, stats, timed.other_busy, (clocks_before, clocks_after), (before, after), flags)
        energy_out = energy_result(source, timed, energy_reason, replayed)
        if energy_out.get("j_per_inference") is None:
            notes["energy_j_per_inference"] = energy_out["reason"]
        fmt = rt.backend_for(artifact, sidecar).format
        params = macs = None
        if fmt == "onnx":
            from edgedl.formats.onnx import graph as onnx_graph

            graph = onnx_graph.load_graph(artifact)
            params, (macs, _) = onnx_graph.count_params(graph), onnx_graph.count_macs(graph, shapes)
            made = (sidecar or {}).get("quantization") or {}
            if backend == "onnxruntime" and compute in (None, "cpu") and made.get("scheme") != "tensorrt" \
                    and "judged_by" not in made:  # a file made for TensorRT or an Arm CPU runs here as a stand-in
                flags.extend(saturation_flags(graph))
        else:
            from edgedl.formats.onnx.graph import COUNTED_ON_ONNX

            notes["params"] = notes["macs"] = COUNTED_ON_ONNX
        memory = summarize_memory(mem_before, mem_loaded, source)
        scored = score(artifact, data, dataset, sidecar, notes, backend=backend, threads=threads, compute=compute,
                       trust_model_code=trust_model_code)
        ops = op_time(artifact, fmt, feeds[0], threads) if profile_ops else None
        return {
            "artifact": str(artifact),
            "backend": backend,
            "format": fmt,
            "precision": sidecar.get("precision"),
            "accuracy": scored,
            "metrics": {
                "accuracy": scored["value"] if scored else None,
                "params": params,
                "macs": macs,
                "latency_ms": stats,
                "throughput_ips": result.throughput_ips,
                "peak_rss_mb": memory["peak_rss_mb"],
                "energy_j_per_inference": energy_out.get("j_per_inference"),
            },
            "notes": notes,
            "energy": energy_out,
            "memory": memory,
            "cold_start": cold_start(load_ms, first_ms),
            "statistics": statistics(result.samples_ms),
            "flags": flags,
            "op_ms": ops,
            "until_stable": timed.stable,
            "gpu_time_ms": gpu_figures,
            "sustained": heat,
            "where": device_notes(device_record, replayed, root, energy_out),
            "conditions": {
                "batch": batch,
                "threads": threads,
                "compute": compute or "cpu",
                "cpus": current_cpus(),
                "runs": len(result.samples_ms),
                "warmup": warmup,
                "min_seconds": min_seconds,
                "cooldown_s": request.cooldown,
                "wall_s": result.wall_s,
                "feeds": f"data:{data}" if data else "random",
                "input_shapes": shapes,
                "peak_rss": "high-water mark of the bench process: interpreter, runtime and model",
                "device": device_record,
                "versions": conditions.versions(),
                "host": conditions.host(),
                "cpu_features": conditions.cpu_features(),
                "jetson": conditions.jetson(str(root)),
                "thermal_before": before,
                "thermal_after": after,
                "validity": validity,
            },
        }
    finally:
        unpin(previous)
