"""edgedl.runtime's cost over a bare onnxruntime call, and the time of `import edgedl.runtime`.

Side by side in one run: each round times N calls of the bare `session.run` and N calls through
edgedl.runtime on the same model and input, alternating which goes first; the figures are
medians over rounds. Goals (issue 2): under 2 microseconds extra per call; import under 150 ms.

    .venv/bin/python benchmarks/runtime_overhead.py [--rounds 15] [--calls 20000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_models(folder: Path) -> dict[str, tuple[Path, tuple[int, ...]]]:
    import torch
    from torch import nn

    from edgedl.models import create_model
    from edgedl.stages.export_onnx import export_onnx

    torch.manual_seed(0)
    tiny = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    models = {"tiny_mlp_16": (tiny, (1, 16)), "resnet8_1x8x8": (create_model("resnet8", 10, 1), (1, 1, 8, 8))}
    out = {}
    for name, (module, shape) in models.items():
        path = folder / f"{name}.onnx"
        export_onnx(module.eval(), np.zeros(shape, np.float32), path, 18, True, "out")
        out[name] = (path, shape)
    return out


def per_call_us(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def overhead(path: Path, shape, rounds: int, calls: int) -> dict:
    import onnxruntime as ort

    import edgedl.runtime as rt

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    model = rt.load(path, threads=1)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    name = session.get_inputs()[0].name
    bare = lambda: session.run(None, {name: x})  # noqa: E731 - what a user writes by hand
    ours = lambda: model(x)  # noqa: E731
    np.testing.assert_array_equal(bare()[0], ours())
    for fn in (bare, ours):
        per_call_us(fn, calls // 10)  # warm-up
    bare_t, ours_t = [], []
    for r in range(rounds):
        pair = [(bare, bare_t), (ours, ours_t)]
        for fn, sink in (pair if r % 2 == 0 else pair[::-1]):
            sink.append(per_call_us(fn, calls))
    diffs = [o - b for o, b in zip(ours_t, bare_t)]
    return {
        "bare_us_median": statistics.median(bare_t),
        "edgedl_us_median": statistics.median(ours_t),
        "overhead_us_median": statistics.median(diffs),
        "ratio": statistics.median(ours_t) / statistics.median(bare_t),
    }


def import_ms(statement: str, repeats: int) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print((time.perf_counter() - t) * 1000)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
             for _ in range(repeats)]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--import-repeats", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from edgedl.bench import conditions

    results: dict = {"conditions": {"versions": conditions.versions(), "host": conditions.host(),
                                    "python": platform.python_version(), "rounds": args.rounds,
                                    "calls_per_round": args.calls, "threads": 1}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, shape) in build_models(Path(tmp)).items():
            results[name] = overhead(path, shape, args.rounds, args.calls)
    results["import_ms"] = {
        "numpy": import_ms("import numpy", args.import_repeats),
        "edgedl.runtime": import_ms("import edgedl.runtime", args.import_repeats),
        "onnxruntime": import_ms("import onnxruntime", args.import_repeats),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
