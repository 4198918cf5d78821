"""Resident memory of the IMU example against a bare script doing the same with onnxruntime alone.

Both run the same 20 s, 200 Hz stream on the same ONNX model (examples/imu_anomaly.py stream vs
benchmarks/imu_bare.py), each in a fresh process started through a small wrapper that prints the
process's peak resident set (Linux VmHWM) when the script ends; runs alternate, medians of 5
each. Goal (issue 5): the example under 1.2x the bare script.

    .venv/bin/python benchmarks/imu_memory.py [--repeats 5] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRAP = """
import runpy, sys
script, *rest = sys.argv[1:]
sys.argv = [script, *rest]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit:
    pass
finally:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print("PEAK_KB", line.split()[1])
"""


def peak_mb(args: list[str]) -> float:
    proc = subprocess.run([sys.executable, "-c", WRAP, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("PEAK_KB")][-1]
    return int(line.split()[1]) / 1024


def main() -> None:
    from edgedl.bench import conditions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / ".work")
    args = parser.parse_args()
    model = args.out / "imu" / "artifacts" / "cnn1d.fp32.onnx"
    if not model.exists():
        subprocess.run([sys.executable, "examples/imu_anomaly.py", "train", "--out", str(args.out / "imu")],
                       cwd=ROOT, check=True)
    sides = {"example (edgedl.runtime)": ["examples/imu_anomaly.py", "stream", "--model", str(model),
                                         "--seconds", str(args.seconds)],
             "bare onnxruntime": ["benchmarks/imu_bare.py", str(model), "--seconds", str(args.seconds)]}
    peaks: dict = {k: [] for k in sides}
    keys = list(sides)
    for r in range(args.repeats):
        for key in keys if r % 2 == 0 else keys[::-1]:
            peaks[key].append(peak_mb(sides[key]))
    medians = {k: statistics.median(v) for k, v in peaks.items()}
    result = {"peak_rss_mb": peaks, "median_mb": medians,
              "ratio": medians["example (edgedl.runtime)"] / medians["bare onnxruntime"],
              "conditions": {"versions": conditions.versions(("edgedl", "numpy", "onnxruntime")),
                             "host": conditions.host(), "seconds": args.seconds, "repeats": args.repeats}}
    print(json.dumps(result, indent=2))
    (args.out / "imu_memory.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
