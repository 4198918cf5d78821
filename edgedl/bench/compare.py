"""The speed verdict from one side-by-side measurement: a candidate and its float parent benched in
alternating rounds of fresh processes (the benchmark stage runs them), so the verdict a user reads
and the table agree by construction: the speed-up is the ratio of the two p50s the table shows,
and its interval spans every round's.
"""

from __future__ import annotations


def round_p50(result: dict) -> tuple[float, list[float]]:
    """A bench result's p50 and its bootstrap 95% interval (the p50 itself when too few calls)."""
    p50 = result["metrics"]["latency_ms"]["p50"]
    ci = ((result.get("statistics") or {}).get("latency_ci95_ms") or {}).get("p50") or [p50, p50]
    return p50, ci


def median_round(results: list[dict]) -> int:
    """The index of the round whose p50 is the median (the lower one for an even count)."""
    order = sorted(range(len(results)), key=lambda i: results[i]["metrics"]["latency_ms"]["p50"])
    return order[(len(order) - 1) // 2]


def verdict(parent: list[dict], candidate: list[dict], label: str, parent_name: str, min_speedup: float,
            device: dict | None = None, runtime: str | None = None) -> dict:
    """Speed-up of the candidate over its parent, from their rounds, with the sentence it supports.

    The speed-up is the parent's median-round p50 over the candidate's (the table's figures); the
    interval spans every round's ratio of p50 intervals, so drift between rounds widens it.
    ``passed``: True when the whole interval reaches ``min_speedup``; False when none of it does;
    None when the interval straddles it ("no clear difference"), and for a device that is not this
    host (its verdict waits for a bench on the device), and for a file made for TensorRT (``runtime``).
    """
    p_parent = parent[median_round(parent)]["metrics"]["latency_ms"]["p50"]
    p_cand = candidate[median_round(candidate)]["metrics"]["latency_ms"]["p50"]
    speedup = p_parent / p_cand
    pairs = [(round_p50(a)[1], round_p50(b)[1]) for a, b in zip(parent, candidate)]
    low = min(min(a[0] / b[1], speedup) for a, b in pairs)
    high = max(max(a[1] / b[0], speedup) for a, b in pairs)
    rounds = len(pairs)
    where = (f"{speedup:.2f}x ({p_cand:.3f} against {p_parent:.3f} ms p50; 95% interval {low:.2f}-{high:.2f}x over "
             f"{rounds} alternating round{'s' if rounds > 1 else ''})")
    gate = {"speedup": speedup, "interval": [low, high], "min_speedup": min_speedup, "rounds": rounds,
            "fp32_p50_ms": p_parent, "quantized_p50_ms": p_cand,
            "round_p50_ms": {"parent": [round_p50(r)[0] for r in parent],
                             "candidate": [round_p50(r)[0] for r in candidate]}}
    here = f"on {device['on']}" if device and device.get("on") else "on this host"  # where the rounds ran
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
        from edgedl.gates import TENSORRT_WAITS

        gate["passed"] = None
        text = f"{label} against {parent_name} with ONNX Runtime {here}: {where}; {TENSORRT_WAITS}"
    gate["verdict"] = text
    return gate
