"""Where pruning and INT8 pay at the quickstart's scale: ResNet-8 on digits at several input sizes,
unpruned and pruned at several ratios and channel roundings, each FP32 and INT8 (edgedl's quantize
stage) ONNX file timed side by side in one process per input size (ONNX Runtime, CPU, batch 1,
2 threads, alternating rounds, medians of per-round p50s).

Speed needs no training: weights are random; calibration uses 64 digits at each size.

    .venv/bin/python benchmarks/quickstart_scale.py [--sizes 16,32,48] [--prune 0.5:8,0.5:16,0.25:8,0.25:16]
        [--rounds 7] [--out benchmarks/.work/quickstart_scale]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,32,48")
    parser.add_argument("--prune", default="0.5:8,0.5:16,0.25:8,0.25:16", help="ratio:round_to, comma-separated")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / ".work" / "quickstart_scale")
    args = parser.parse_args()
    import onnx

    from edgedl import api
    from edgedl.bench import conditions
    from edgedl.quantization.speed import time_rounds
    from edgedl.recipe import validate_recipe

    shutil.rmtree(args.out, ignore_errors=True)
    quantize = {"stage": "quantize", "precision": "int8", "calibration_samples": 64, "speed_gate": False,
                "on_gate_miss": "warn", "max_float_layers": 0}
    configs = [None] + [(float(r), int(k)) for r, k in (c.split(":") for c in args.prune.split(","))]
    print(f"CPU: {conditions.host().get('cpu')}; INT8 instructions: {', '.join(conditions.cpu_features()) or 'none'}")
    print(f"ResNet-8, batch 1, 2 threads, {args.rounds} alternating rounds per input size\n")
    print("| input | pruned (ratio, round_to) | convolutions' widths | MACs | fp32 p50 ms | int8 p50 ms | int8 vs fp32 | "
          "fp32 vs unpruned fp32 | MAC cut |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in [int(v) for v in args.sizes.split(",")]:
        files, macs, widths = {}, {}, {}
        for config in configs:
            name = "unpruned" if config is None else f"{config[0]:g}, {config[1]}"
            stages = [] if config is None else [{"stage": "prune", "ratio": config[0], "round_to": config[1],
                                                 "finetune_epochs": 0}]
            out = args.out / f"{size}" / ("unpruned" if config is None else f"r{config[0]:g}-k{config[1]}")
            run = api.compress(validate_recipe({"model": "resnet8", "data": f"digits:1x{size}x{size}", "seed": 0,
                                                "targets": ["onnx"], "stages": [*stages, {"stage": "export_onnx"},
                                                                                quantize]}, source="benchmark"),
                               out=out, force=True, progress=False)
            fp32 = [a for a in run.manifest["artifacts"] if a["format"] == "onnx" and a["precision"] == "fp32"][-1]
            int8 = next(a for a in run.manifest["artifacts"] if a["precision"] == "int8")
            files[(name, "fp32")], files[(name, "int8")] = run.artifact_path(fp32["name"]), run.artifact_path(int8["name"])
            macs[name] = fp32["metrics"]["macs"]
            model = onnx.load(str(files[(name, "fp32")]))
            dims = {i.name: i.dims for i in model.graph.initializer}
            outs = [dims[n.input[1]][0] for n in model.graph.node if n.op_type == "Conv"]
            runs = [[outs[0], 0]]  # each convolution's output channels, in graph order, as runs: 16x6 32x3
            for width in outs:
                if width != runs[-1][0]:
                    runs.append([width, 0])
                runs[-1][1] += 1
            widths[name] = " ".join(f"{w}x{n}" for w, n in runs)
        sample = np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)
        timed = time_rounds(files, sample, threads=2, rounds=args.rounds)
        p50 = {k: float(np.median([r[0] for r in v])) for k, v in timed.items()}
        for name in macs:
            fp32, int8 = p50[(name, "fp32")], p50[(name, "int8")]
            print(f"| 1x{size}x{size} | {name} | {widths[name]} | {macs[name] / 1e6:.2f}M | {fp32:.3f} | {int8:.3f} | "
                  f"{fp32 / int8:.2f}x | {p50[('unpruned', 'fp32')] / fp32:.2f}x | {macs['unpruned'] / macs[name]:.2f}x |")


if __name__ == "__main__":
    main()
