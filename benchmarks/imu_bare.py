"""The IMU example's stream done with onnxruntime alone: the baseline for benchmarks/imu_memory.py.

Same recording, same ring buffer and windows, same 200 Hz schedule (plain sleeps), the model
called through a bare `InferenceSession.run`; no edgedl import at all.

    .venv/bin/python benchmarks/imu_bare.py MODEL.onnx [--seconds 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--hop", type=int, default=8)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("imu", ROOT / "examples" / "imu_anomaly.py")
    imu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(imu)  # numpy only at import: the signal generator and the ring buffer

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    detector = imu.Detector(lambda w: session.run(None, {name: w})[0], hop=args.hop)
    x, _ = imu.stream_recording(7, args.seconds)
    alarms, period, start = 0, 1.0 / imu.RATE_HZ, time.perf_counter()
    for i in range(len(x)):
        delay = start + i * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        p = detector.push(x[i])
        alarms += p is not None and p >= 0.5
    print(f"{len(x)} samples, {alarms} positive checks")


if __name__ == "__main__":
    main()
