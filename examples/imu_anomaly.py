"""Robot IMU anomaly detector: a 1-D CNN trained by edgedl, run on a 200 Hz sensor stream.

    # 1. generate 6-axis IMU recordings with injected faults, train cnn1d, export ONNX (fp32, INT8)
    .venv/bin/python examples/imu_anomaly.py train --out runs/imu
    # 2. run on a live (generated) stream: one sample per 5 ms tick, the model every 8th tick
    .venv/bin/python examples/imu_anomaly.py stream --model runs/imu

The stream needs only numpy and one runtime backend. Faults: spikes on one axis (a loose
connector), a stuck sensor (the driver hangs and repeats its last sample), drift on one axis (a
failing gyro) and noise bursts (vibration). ``stream``
prints each detected fault with its delay after onset, the detection and false-alarm rates, and
the loop's latency percentiles and deadline misses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

RATE_HZ = 200
WINDOW = 64  # samples per model input (0.32 s)
FAULTS = ("spike", "stuck", "drift", "burst")


def normal_motion(rng: np.random.Generator, n: int) -> np.ndarray:
    """n x 6 samples (accel xyz in g, gyro xyz in rad/s) of a robot walking at a varying gait."""
    t = np.arange(n) / RATE_HZ
    gait = rng.uniform(1.2, 2.2)
    phase = rng.uniform(0, 2 * np.pi, 6)
    amp = np.array([0.15, 0.1, 0.3, 0.4, 0.3, 0.2]) * rng.uniform(0.7, 1.3)
    signal = amp * np.sin(2 * np.pi * gait * t[:, None] + phase) + 0.3 * amp * np.sin(4 * np.pi * gait * t[:, None])
    signal[:, 2] += 1.0  # gravity
    return (signal + rng.normal(0, 0.02, (n, 6))).astype(np.float32)


def inject(rng: np.random.Generator, x: np.ndarray, start: int, kind: str) -> np.ndarray:
    """A fault of ``kind`` from sample ``start`` to the end of ``x`` (in place)."""
    axis = rng.integers(0, 6)
    n = len(x) - start
    if kind == "spike":
        hits = start + rng.choice(n, max(2, n // 6), replace=False)
        x[hits, axis] += rng.choice([-1, 1], len(hits)) * rng.uniform(1.0, 2.5, len(hits))
    elif kind == "stuck":  # the driver hangs and keeps returning its last sample
        x[start:] = x[start]
    elif kind == "drift":
        x[start:, axis] += np.linspace(0, rng.uniform(0.6, 1.2) * rng.choice([-1, 1]), n)
    elif kind == "burst":
        x[start:] += rng.normal(0, rng.uniform(0.15, 0.3), (n, 6))
    return x


def recording(rng: np.random.Generator, seconds: float):
    """A recording with one-second faults at random gaps: (samples n x 6, [(start, end, kind)])."""
    n = int(seconds * RATE_HZ)
    x, onsets = normal_motion(rng, n), []
    at = int(rng.uniform(1, 2) * RATE_HZ)
    while at + 2 * RATE_HZ < n:
        kind = FAULTS[rng.integers(len(FAULTS))]
        end = at + RATE_HZ
        x[at:end] = inject(rng, x[at:end].copy(), 0, kind)
        onsets.append((at, end, kind))
        at = end + int(rng.uniform(1.5, 3) * RATE_HZ)
    return x, onsets


def make_dataset(path: Path, windows: int, seed: int = 0) -> Path:
    """Windows (C x T = 6 x 64) cut from generated recordings every 24 samples; a window is a
    fault when at least a quarter of its samples are faulty (the stream sees the same windows)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    while sum(len(v) for v in xs) < windows:
        x, onsets = recording(rng, 6)  # short recordings: many gaits, phases and amplitudes
        faulty = np.zeros(len(x), bool)
        for start, end, _ in onsets:
            faulty[start:end] = True
        starts = np.arange(0, len(x) - WINDOW, 24)
        xs.append(np.stack([x[s : s + WINDOW].T for s in starts]))
        ys.append(np.array([faulty[s : s + WINDOW].sum() >= WINDOW // 4 for s in starts], np.int64))
    x, y = np.concatenate(xs)[:windows], np.concatenate(ys)[:windows]
    np.savez_compressed(path, x=x, y=y, labels=np.array(["normal", "fault"]))
    return path


def stream_recording(seed: int, seconds: float):
    """The live stream: a recording from a seed the training data never used."""
    return recording(np.random.default_rng(10_000 + seed), seconds)


class Detector:
    """Keeps the last WINDOW samples in a ring buffer and runs the model every ``hop`` samples."""

    def __init__(self, runner, hop: int = 8, threshold: float = 0.5):
        self.runner, self.hop, self.threshold = runner, hop, threshold
        self.ring = np.zeros((6, WINDOW), np.float32)
        self.window = np.zeros((1, 6, WINDOW), np.float32)  # the model input, reused every call
        self.count = 0

    def push(self, sample: np.ndarray) -> float | None:
        """Add one 6-axis sample; every ``hop`` samples return the fault probability."""
        self.ring[:, self.count % WINDOW] = sample
        self.count += 1
        if self.count < WINDOW or self.count % self.hop:
            return None
        start = self.count % WINDOW
        self.window[0, :, : WINDOW - start] = self.ring[:, start:]
        self.window[0, :, WINDOW - start :] = self.ring[:, :start]
        logits = self.runner(self.window)[0]
        e = np.exp(logits - logits.max())
        return float(e[1] / e.sum())


def train(args) -> None:
    from edgedl import api
    from edgedl.recipe import validate_recipe

    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = make_dataset(args.out.parent / f"{args.out.name}-windows.npz", args.windows)
    run = api.compress(validate_recipe({
        "name": "imu-anomaly", "model": "cnn1d", "data": str(data), "seed": 0, "targets": ["onnx"],
        "stages": [{"stage": "train", "epochs": args.epochs, "lr": 3e-3, "batch_size": 64},
                   {"stage": "export_onnx"},
                   {"stage": "quantize", "precision": "int8", "calibration_samples": 128, "on_gate_miss": "warn"},
                   {"stage": "evaluate"}]}), out=args.out, force=True, progress=False).path
    print(f"trained and exported to {run}/artifacts (see {run}/report.md)")


def stream(args) -> int:
    import edgedl.runtime as rt

    x, onsets = stream_recording(args.seed, args.seconds)
    if Path(args.model).is_dir():  # a run: the ONNX file it recommends (INT8 only where its gates passed)
        args.model, why = rt.recommended(args.model, "onnx")
        print(f"model: {why}")
    with rt.load(args.model, threads=1, preallocate=True) as model:
        model.warmup(20)
        detector = Detector(model, hop=args.hop, threshold=args.threshold)
        alarms = np.zeros(len(x), bool)
        streak = 0  # an alarm needs `confirm` positive checks in a row: one noisy window is not a fault

        def tick(i):
            nonlocal streak
            p = detector.push(x[i])
            if p is not None:
                streak = streak + 1 if p >= args.threshold else 0
                alarms[i] = streak >= args.confirm

        loop = rt.RateLoop(RATE_HZ, tick)
        loop.run(ticks=len(x))
    faulty = np.zeros(len(x), bool)
    detected = []
    for start, end, kind in onsets:
        faulty[start : end + WINDOW] = True  # windows that still hold fault samples
        hits = np.flatnonzero(alarms[start : end + WINDOW])
        detected.append((kind, start, (hits[0] / RATE_HZ * 1e3) if len(hits) else None))
    for kind, start, delay in detected:
        when = f"detected after {delay:.0f} ms" if delay is not None else "MISSED"
        print(f"fault {kind:<5} at {start / RATE_HZ:6.2f} s: {when}")
    caught = sum(d is not None for _, _, d in detected)
    checks = np.zeros(len(x), bool)
    checks[WINDOW - 1 :: args.hop] = True
    false_alarms = int((alarms & ~faulty).sum())
    print(f"faults detected: {caught}/{len(onsets)}; false alarms: {false_alarms} of "
          f"{int((checks & ~faulty).sum())} checks on normal motion")
    print(loop.report())
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="generate faulty IMU windows, train cnn1d, export ONNX")
    t.add_argument("--out", type=Path, default=Path("runs/imu"))
    t.add_argument("--windows", type=int, default=4000)
    t.add_argument("--epochs", type=int, default=10)
    s = sub.add_parser("stream", help="run the detector on a generated 200 Hz stream")
    s.add_argument("--model", required=True, help="the train step's run folder (its recommended .onnx) or a file")
    s.add_argument("--seconds", type=float, default=20)
    s.add_argument("--hop", type=int, default=8, help="run the model every N samples")
    s.add_argument("--threshold", type=float, default=0.5)
    s.add_argument("--confirm", type=int, default=2, help="positive checks in a row before an alarm")
    s.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args)
        return 0
    return stream(args)


if __name__ == "__main__":
    sys.exit(main())
