"""Where an ONNX model's time goes: ONNX Runtime's profiler, summed per op type (or per node)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def op_profile(path: Path, sample: dict | np.ndarray, threads: int | None, runs: int = 30,
               warmup: int = 10, per_node: bool = False) -> dict[str, float]:
    """Milliseconds per run spent in each op type (``per_node``: in each node, keyed ``name (op)``
    in ONNX Runtime's names after its fusions, in the order they ran), from ONNX Runtime's profiler,
    over the last ``runs`` of ``warmup + runs`` (the first runs allocate and fill caches). The
    profiler times every kernel, which slows them: read the figures as shares of the time, not as
    the model's latency."""
    import os
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "edgedl")
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = sample if isinstance(sample, dict) else {session.get_inputs()[0].name: sample}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    windows = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in events if e.get("name") == "model_run")
    start = windows[-runs][0] if len(windows) >= runs else 0
    totals: dict[str, float] = {}
    for event in events:
        op = event.get("args", {}).get("op_name")
        if event.get("cat") == "Node" and op and event.get("name", "").endswith("_kernel_time") \
                and event.get("ts", 0) >= start:
            key = f"{event['name'][:-len('_kernel_time')]} ({op})" if per_node else op
            totals[key] = totals.get(key, 0.0) + event.get("dur", 0) / 1000.0 / runs
    return totals if per_node else dict(sorted(totals.items(), key=lambda kv: -kv[1]))


CONVERSIONS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast"}
CONVERSION = "Q/DQ and Cast"
_INTEGER = {"QGemm": "Gemm", "MatMulInteger": "MatMul", "MatMulIntegerToFloat": "MatMul", "ConvInteger": "Conv",
            "DynamicQuantizeMatMul": "MatMul"}


def float_op(op: str) -> str:
    """The float op type an ONNX Runtime kernel stands for (QLinearConv, FusedConv and NhwcMaxPool are
    a Conv, a Conv and a MaxPool); conversions between precisions are one group of their own."""
    if op in CONVERSIONS:
        return CONVERSION
    if op in _INTEGER:
        return _INTEGER[op]
    for prefix in ("QLinear", "Fused", "Nhwc"):
        if op.startswith(prefix) and len(op) > len(prefix):
            return op[len(prefix):]
    return op


def time_shift(float_ops: dict[str, float], quantized_ops: dict[str, float], top: int = 3,
               noise: float = 0.02) -> dict:
    """Where a quantized file's time went against its float parent's, from both per-op profiles: the
    float op types whose kernels got faster (``saved``), and those that got slower or are new
    (``lost``: conversions between precisions, integer kernels slower than float ones), each
    ``{op: [float ms, quantized ms]}``, largest first; ``said``: the same in one sentence. Changes
    under ``noise`` of the float file's profiled time are left out. An activation ONNX Runtime fuses
    into the float convolution (FusedConv) but runs on its own in INT8 shows as a saving on Conv and a
    cost on the activation."""
    grouped = []
    for ops in (float_ops, quantized_ops):
        by: dict[str, float] = {}
        for op, ms in ops.items():
            by[float_op(op)] = by.get(float_op(op), 0.0) + ms
        grouped.append(by)
    before, after = grouped
    floor = noise * sum(before.values())  # the profiles ran one after the other: smaller changes are noise
    pairs = {op: [round(before.get(op, 0.0), 3), round(after.get(op, 0.0), 3)] for op in {*before, *after}
             if abs(after.get(op, 0.0) - before.get(op, 0.0)) >= floor}
    saved = dict(sorted(((op, p) for op, p in pairs.items() if p[1] < p[0]), key=lambda kv: kv[1][1] - kv[1][0]))
    lost = dict(sorted(((op, p) for op, p in pairs.items() if p[1] > p[0]), key=lambda kv: kv[1][0] - kv[1][1]))

    def part(group: dict) -> str:
        total = abs(sum(q - f for f, q in group.values()))
        named = ", ".join(f"{op} {f:.3g} -> {q:.3g} ms" for op, (f, q) in list(group.items())[:top])
        return f"{total:.3g} ms ({named}{', ...' if len(group) > top else ''})"

    said = (f"per-op profile against the float file: {part(saved) + ' saved' if saved else 'nothing saved'}, "
            f"{part(lost) + ' lost' if lost else 'nothing lost'}")
    return {"saved": saved, "lost": lost, "said": said}


def explain_speed(gate: dict, float_path: Path, quantized_path: Path, sample, threads: int | None) -> dict:
    """A speed verdict that is not a pass, with where the time goes on this host: both files' per-op
    profiles (``op_ms``) and what the quantized kernels saved and lost (``time_shift``)."""
    gate["op_ms"] = {"fp32": op_profile(float_path, sample, threads), "quantized": op_profile(quantized_path, sample, threads)}
    gate["time_shift"] = time_shift(gate["op_ms"]["fp32"], gate["op_ms"]["quantized"])
    return gate
