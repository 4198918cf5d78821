"""The one speed verdict: whether a reduced-precision file is faster than its float parent, from the
two timed side by side in alternating rounds.

Two measurements feed it and both give rounds: the quantize stage's quick in-process check
(:func:`quick_check`, which picks among candidates) and the benchmark stage's rounds of fresh
processes (which the table shows). The speed-up is the ratio of the median rounds' p50s; its
interval spans every round's ratio (of p50 intervals where a round has one), so drift between
rounds widens it, and the same figures always give the same sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

Round = tuple[float, list[float]]  # one round's p50 (ms) and its 95% interval

TENSORRT_WAITS = ("a TensorRT INT8 is judged by TensorRT on the GPU: ONNX Runtime CPU timings taken here do not "
                  "decide it; its verdict waits for `edgedl bench` of the engine on the device")


def round_p50(result: dict) -> Round:
    """A bench result's p50 and its bootstrap 95% interval (the p50 itself when too few calls)."""
    p50 = result["metrics"]["latency_ms"]["p50"]
    ci = ((result.get("statistics") or {}).get("latency_ci95_ms") or {}).get("p50") or [p50, p50]
    return p50, ci


def median_round(rounds: list[Round]) -> int:
    """The index of the round whose p50 is the median (the lower one for an even count)."""
    order = sorted(range(len(rounds)), key=lambda i: rounds[i][0])
    return order[(len(order) - 1) // 2]


def verdict(parent: list[Round], candidate: list[Round], label: str, parent_name: str, min_speedup: float,
            device: dict | None = None, runtime: str | None = None, here: str | None = None) -> dict:
    """Speed-up of the candidate over its parent, from their rounds, with the sentence it supports.

    ``passed``: True when the whole interval reaches ``min_speedup``; False when none of it does;
    None when the interval straddles it ("no clear difference"), and for a device that is not this
    host (its verdict waits for a bench on the device), and for a file made for TensorRT (``runtime``).
    ``here`` names where the rounds ran (default: the device's address, else "on this host").
    """
    p_parent = parent[median_round(parent)][0]
    p_cand = candidate[median_round(candidate)][0]
    speedup = p_parent / p_cand
    pairs = [(a[1], b[1]) for a, b in zip(parent, candidate)]
    low = min(min(a[0] / b[1], speedup) for a, b in pairs)
    high = max(max(a[1] / b[0], speedup) for a, b in pairs)
    rounds = len(pairs)
    where = (f"{speedup:.2f}x ({p_cand:.3f} against {p_parent:.3f} ms p50; 95% interval {low:.2f}-{high:.2f}x over "
             f"{rounds} alternating round{'s' if rounds > 1 else ''})")
    gate = {"speedup": speedup, "interval": [low, high], "min_speedup": min_speedup, "rounds": rounds,
            "fp32_p50_ms": p_parent, "quantized_p50_ms": p_cand,
            "round_p50_ms": {"parent": [r[0] for r in parent], "candidate": [r[0] for r in candidate]}}
    here = here or (f"on {device['on']}" if device and device.get("on") else "on this host")
    if low >= min_speedup:
        gate["passed"], text = True, f"{label} is faster than {parent_name} {here}: {where}"
    elif high < 1.0:
        gate["passed"], text = False, f"{label} is slower than {parent_name} {here}: {where}; keep {parent_name}"
    elif high < min_speedup:
        gate["passed"] = False
        text = (f"{label} is not faster than {parent_name} {here} by the {min_speedup}x that counts: {where}; "
                f"keep {parent_name}")
    elif low > 1.0:
        gate["passed"] = None
        text = (f"{label} is faster than {parent_name} {here}, but not clearly by the {min_speedup}x that "
                f"counts: {where}")
    else:
        gate["passed"] = None
        text = f"no clear difference between {label} and {parent_name} {here}: {where}"
    if device is not None and device.get("on_device") is False:  # timings here do not judge it: no "keep"
        gate["passed"] = None
        text = (f"{label} against {parent_name} {here}: {where}; these are this host's timings "
                f"({device['measured_on']}): the verdict for {device['name']} waits for a bench on the device")
    elif runtime == "tensorrt":
        gate["passed"] = None
        text = f"{label} against {parent_name} with ONNX Runtime {here}: {where}; {TENSORRT_WAITS}"
    gate["verdict"] = text
    return gate


def judged_here(scheme: str | None, device: dict | None) -> bool:
    """Whether this host's timings judge a file: not for a file made for TensorRT, nor for a device
    that is not this host (their verdicts wait for a bench there), so no per-op why from here either."""
    return scheme != "tensorrt" and (device or {}).get("on_device") is not False


def time_rounds(paths: dict, sample: Any, threads: int | None, rounds: int = 3) -> dict[Any, list[Round]]:
    """Each file's rounds, timed alternately in this one process (an in-process round has no interval
    of its own: the spread over rounds is the interval)."""
    from edgedl.bench import side_by_side

    timed = side_by_side(paths, sample, threads, rounds=rounds, per_round=True)
    return {key: [(p50, [p50, p50]) for p50 in values] for key, values in timed.items()}


def quick_check(float_path: Path, q_path: Path, sample: Any, threads: int | None, label: str, float_name: str,
                min_speedup: float, device: dict | None = None, runtime: str | None = None,
                rounds: int = 3) -> dict:
    """The verdict of a file against its float parent, timed here in one process (the benchmark stage
    later times both again in fresh processes and gives the verdict the same way)."""
    timed = time_rounds({"float": float_path, "candidate": q_path}, sample, threads, rounds)
    gate = verdict(timed["float"], timed["candidate"], label, float_name, min_speedup, device, runtime,
                   here="on this host")
    gate.update(threads=threads, host="this machine, in one process")
    return gate
