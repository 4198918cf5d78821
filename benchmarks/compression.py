"""INT8 vs FP32, pruning, and the full stack, on ResNet-18 and MobileNetV2 at 224x224.

Two edgedl runs produce the artifacts, with accuracy measured on digits (upsampled to 3x224x224)
through edgedl.runtime:
  1. per model: train -> export_onnx -> quantize int8 -> evaluate      (INT8 vs FP32)
  2. ResNet-18 from run 1: prune 50% -> distill -> export -> quantize -> evaluate   (pruning, full stack)
Then every artifact is timed side by side in this one process: ONNX Runtime, CPU, batch 1,
2 threads, rounds alternating the order, medians of per-round p50s.

    .venv/bin/python benchmarks/compression.py [--epochs 4] [--rounds 5] [--out benchmarks/.work]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DATA = "digits:3x224x224"


def compress(recipe: dict, out: Path) -> dict:
    from edgedl import api
    from edgedl.recipe import validate_recipe

    return api.compress(validate_recipe(recipe), out=out, force=True, progress=False).manifest


def quantize_stage() -> dict:
    return {"stage": "quantize", "precision": "int8", "calibration_samples": 128, "threads": 2,
            "max_accuracy_drop": 1.0, "on_gate_miss": "warn"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/.work"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    manifests = {}
    for model in ("resnet18", "mobilenetv2_100"):
        manifests[model] = compress({
            "name": f"int8-{model}", "model": model, "data": DATA, "seed": 0,
            "stages": [{"stage": "train", "epochs": args.epochs, "lr": 1e-3, "batch_size": 32},
                       {"stage": "export_onnx"}, quantize_stage(), {"stage": "evaluate"}]}, args.out / f"int8-{model}")
    base = args.out / "int8-resnet18" / "artifacts" / "resnet18.pt"
    manifests["stack"] = compress({
        "name": "stack-resnet18", "model": str(base), "data": DATA, "seed": 0,
        "stages": [{"stage": "prune", "ratio": 0.5, "finetune_epochs": 2, "lr": 1e-3, "batch_size": 32},
                   {"stage": "distill", "epochs": args.epochs, "lr": 1e-3, "batch_size": 32},
                   {"stage": "export_onnx"}, quantize_stage(), {"stage": "evaluate"}]}, args.out / "stack-resnet18")

    artifacts = {}
    for key, manifest in manifests.items():
        run = args.out / ("stack-resnet18" if key == "stack" else f"int8-{key}")
        for a in manifest["artifacts"]:
            if a["format"] == "onnx":
                artifacts[f"{key}:{a['name']}"] = (run / a["path"], a)
    from edgedl.bench import side_by_side

    sample = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    p50 = side_by_side({k: v[0] for k, v in artifacts.items()}, sample, threads=2, rounds=args.rounds,
                       runs=args.runs, min_seconds=1.0)
    rows = {k: {"p50_ms": p50[k], "accuracy": a["metrics"]["accuracy"], "size_bytes": a["size_bytes"],
                "macs": a["metrics"]["macs"], "params": a["metrics"]["params"],
                "quantization": {q: a["quantization"][q] for q in ("scheme", "float_layers", "accuracy_gate", "speed_gate")}
                if "quantization" in a else None}
            for k, (_, a) in artifacts.items()}
    from edgedl.bench import conditions

    result = {"rows": rows, "seconds": time.time() - started, "args": vars(args) | {"out": str(args.out)},
              "conditions": {"versions": conditions.versions(), "host": conditions.host(), "threads": 2, "batch": 1}}
    (args.out / "compression.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
