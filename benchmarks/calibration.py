"""How many calibration samples INT8 needs: the evidence behind edgedl's warning floor of 32.

Trains the quickstart's ResNet-8 on digits (16x16) once, exports fp32 ONNX, then quantizes it
with ONNX Runtime's static QDQ (MinMax, the stage's default) calibrated on N training samples,
for each N, several seeded draws of each. Reports test accuracy of every INT8 file against fp32,
measured through edgedl.runtime, and how many activation ranges (the scale of each
QuantizeLinear) come out more than 10% narrower than when calibrated on the whole training split:
values past a range are clipped on real inputs.

    .venv/bin/python benchmarks/calibration.py [--counts 4,8,16,32,64,128,256] [--draws 5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="4,8,16,32,64,128,256")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/.work/calibration"))
    args = parser.parse_args()

    import onnx
    from onnx import numpy_helper

    from edgedl import api
    from edgedl.artifacts import accuracy
    from edgedl.data import calibration_samples, load_dataset
    from edgedl.formats.onnx import quantize as qo
    from edgedl.recipe import validate_recipe

    start = time.time()
    recipe = {"name": "calibration", "model": "resnet8", "data": "digits:1x16x16", "seed": 0, "targets": ["onnx"],
              "stages": [{"stage": "train", "epochs": args.epochs, "label_smoothing": 0.1}, {"stage": "export_onnx"}]}
    run = api.compress(validate_recipe(recipe), out=args.out / "run", force=True, progress=False)
    fp32 = run.artifact_path("resnet8.fp32.onnx")
    data = load_dataset("digits:1x16x16", seed=0)
    work = args.out / "q"
    work.mkdir(parents=True, exist_ok=True)
    qo.prepare(fp32, work / "prepared.onnx")
    base = accuracy(fp32, data.test)

    def ranges(path: Path) -> np.ndarray:
        model = onnx.load(str(path))
        scales = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return np.array([float(np.max(scales[n.input[1]])) for n in model.graph.node
                         if n.op_type == "QuantizeLinear" and n.input[1] in scales])

    def quantized(count: int, draw: int) -> Path:
        drawn = calibration_samples(data, count, seed=draw, field="calibration_samples")
        feeds = [{"input": drawn.samples[i : i + 1]} for i in range(len(drawn))]
        out = work / f"n{count}-d{draw}.onnx"
        qo.quantize_static(work / "prepared.onnx", out, feeds, qo.SCHEMES["cpu_s8s8_per_channel"])
        return out

    full = ranges(quantized(len(data.train), 0))  # every training sample: the reference ranges
    counts = [int(c) for c in args.counts.split(",")]
    rows = []
    for count in sorted(counts, reverse=True):
        accs, clipped = [], []
        for draw in range(args.draws):
            out = quantized(count, draw)
            accs.append(accuracy(out, data.test))
            scale = ranges(out)
            clipped.append(float(np.mean(scale < 0.9 * full)))  # activations whose range is >10% narrower
        rows.append({"samples": count, "draws": len(accs), "int8_acc_mean": float(np.mean(accs)),
                     "int8_acc_min": float(np.min(accs)), "drop_points_worst": 100 * (base - float(np.min(accs))),
                     "share_of_ranges_10pct_narrower": float(np.mean(clipped))})
        print(json.dumps(rows[-1]))
    print(f"fp32 test accuracy {base:.4f}; {len(data.test)} test samples; reference ranges from all "
          f"{len(data.train)} training samples; {time.time() - start:.0f} s")
    (args.out / "results.json").write_text(json.dumps({"fp32": base, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
