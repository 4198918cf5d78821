"""What the power sampler costs the latency it runs beside.

`edgedl bench --energy ...` samples the sensor from a background thread in the bench process
(every 10 ms). This script times the same model, input and runner with and without that thread
running, side by side in one process: each round times both, the order flipped every round, and
the figures are medians over rounds. The sensor is the replayed Orin Nano tree in tests/data (the
same files and reads as a Jetson's hwmon, on this host's disk).

    .venv/bin/python benchmarks/energy_overhead.py [--rounds 9] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "tests" / "data" / "sysfs" / "jetson-orin-nano"


def main() -> None:
    import edgedl.runtime as rt
    from edgedl.bench.energy import open_source
    from edgedl.bench.latency import measure_latency
    from edgedl.devices import get_profile

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    from runtime_overhead import build_models  # this folder's model set, ONNX only

    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp), only=("resnet8_1x8x8", "mobilenetv2_100_3x224x224"), tflite=False)
        for name, (path, shape) in models.items():
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            source, _ = open_source("ina3221", TREE, get_profile("jetson-orin-nano"))
            figures = {"off": {"p50": [], "p99": []}, "on": {"p50": [], "p99": []}}
            with rt.load(path, threads=1) as m:
                m(x)
                for r in range(args.rounds):
                    for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                        if mode == "on":
                            source.start()
                        result = measure_latency(lambda i: m(x), runs=100, warmup=20, min_seconds=args.seconds)
                        if mode == "on":
                            window = source.stop()
                        stats = result.stats()
                        figures[mode]["p50"].append(stats["p50"])
                        figures[mode]["p99"].append(stats["p99"])
            med = {mode: {k: statistics.median(v) for k, v in f.items()} for mode, f in figures.items()}
            print(f"{name}: p50 {med['off']['p50']:.4f} -> {med['on']['p50']:.4f} ms "
                  f"({med['on']['p50'] / med['off']['p50']:.3f}x), p99 {med['off']['p99']:.4f} -> "
                  f"{med['on']['p99']:.4f} ms ({med['on']['p99'] / med['off']['p99']:.3f}x); "
                  f"{window.samples} samples in the last window, period {1000 * window.period_s:.1f} ms")


if __name__ == "__main__":
    main()
