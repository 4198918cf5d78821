"""Does pruning pay in INT8 as it pays in FP32? ResNet-18 at 3x224x224, pruned 50% with channel counts
rounded to several multiples, each FP32 and INT8 (edgedl's quantize stage) timed side by side in one
process with the unpruned pair (ONNX Runtime, CPU, batch 1, 2 threads, alternating rounds).

Speed needs no training: weights are random (none can be downloaded here) and calibration uses crops
of scikit-learn's sample photographs. "gain per MAC cut" is (unpruned p50 / pruned p50) divided by
(unpruned MACs / pruned MACs): 1.0 means every MAC removed is time removed.

    .venv/bin/python benchmarks/prune_int8.py [--round-to 8,16,32,64] [--rounds 5] [--out benchmarks/.work/prune_int8]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # write_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-to", default="8,16,32,64")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / ".work" / "prune_int8")
    args = parser.parse_args()
    from yolo_head import write_images

    from edgedl import api
    from edgedl.bench import conditions
    from edgedl.formats.onnx.profile import op_profile
    from edgedl.quantization.speed import time_rounds
    from edgedl.recipe import validate_recipe

    shutil.rmtree(args.out, ignore_errors=True)
    images = write_images(args.out / "photos", count=64, size=224)
    data = f"images:{images}:3x224x224"
    quantize = {"stage": "quantize", "precision": "int8", "calibration_samples": 32, "speed_gate": False,
                "on_gate_miss": "warn", "max_float_layers": 0}
    runs = {"unpruned": [{"stage": "export_onnx"}, quantize]}
    for k in [int(v) for v in args.round_to.split(",")]:
        runs[f"pruned, round_to {k}"] = [{"stage": "prune", "ratio": args.ratio, "round_to": k, "finetune_epochs": 0},
                                         {"stage": "export_onnx"}, quantize]
    files, macs = {}, {}
    for name, stages in runs.items():
        out = args.out / name.replace(", ", "-").replace(" ", "")
        run = api.compress(validate_recipe({"model": "resnet18", "data": data, "seed": 0, "targets": ["onnx"],
                                            "stages": stages}, source="benchmark"), out=out, force=True, progress=False)
        fp32 = next(a for a in run.manifest["artifacts"] if a["format"] == "onnx" and a["precision"] == "fp32"
                    and ("pruned" in a["name"]) == name.startswith("pruned"))
        int8 = next(a for a in run.manifest["artifacts"] if a["precision"] == "int8")
        files[f"{name} fp32"], files[f"{name} int8"] = run.artifact_path(fp32["name"]), run.artifact_path(int8["name"])
        macs[name] = fp32["metrics"]["macs"]
    sample = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    timed = time_rounds(files, sample, threads=2, rounds=args.rounds)
    p50 = {k: float(np.median([r[0] for r in v])) for k, v in timed.items()}
    print(f"CPU: {conditions.host().get('cpu')}; INT8 instructions: {', '.join(conditions.cpu_features()) or 'none'}")
    print(f"ResNet-18 3x224x224, prune ratio {args.ratio}, batch 1, 2 threads, {args.rounds} alternating rounds\n")
    print("| model | MACs | MAC cut | fp32 p50 ms | int8 p50 ms | int8 vs fp32 | fp32 gain per MAC cut | "
          "int8 gain per MAC cut |")
    print("|---|---|---|---|---|---|---|---|")
    base = "unpruned"
    for name in runs:
        cut = macs[base] / macs[name]
        f_gain = p50[f"{base} fp32"] / p50[f"{name} fp32"] / cut
        q_gain = p50[f"{base} int8"] / p50[f"{name} int8"] / cut
        print(f"| {name} | {macs[name] / 1e9:.2f}G | {cut:.2f}x | {p50[f'{name} fp32']:.2f} | {p50[f'{name} int8']:.2f} | "
              f"{p50[f'{name} fp32'] / p50[f'{name} int8']:.2f}x | {f_gain:.2f} | {q_gain:.2f} |")
    for name in [k for k in files if k.endswith("int8")][:2]:
        shares = op_profile(files[name], sample, 2, runs=10, warmup=3)
        total = sum(shares.values())
        print(f"per-op profile, {name}: " + ", ".join(f"{op} {ms / total:.0%}" for op, ms in list(shares.items())[:4]))
    # per node: the stem (7x7, stride 2, on 3 channels) against every other convolution, FP32 and INT8
    print("\n| file | stem ms | stem share | other convolutions ms | stem vs unpruned | others vs unpruned |")
    print("|---|---|---|---|---|---|")
    base: dict[str, tuple[float, float]] = {}
    for name in [k for k in files if k.startswith(("unpruned", "pruned, round_to 8"))]:
        nodes = op_profile(files[name], sample, 2, runs=10, warmup=3, per_node=True)
        convs = [ms for node, ms in nodes.items() if node.endswith("Conv)")]  # graph order: the stem first
        stem, others = convs[0], sum(convs[1:])
        kind = name.rpartition(" ")[2]
        base.setdefault(kind, (stem, others))
        print(f"| {name} | {stem:.2f} | {stem / sum(nodes.values()):.0%} | {others:.2f} | "
              f"{base[kind][0] / stem:.2f}x faster | {base[kind][1] / others:.2f}x faster |")


if __name__ == "__main__":
    main()
