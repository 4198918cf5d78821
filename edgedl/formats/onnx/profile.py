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
