"""LiteRT fp32 vs full-integer INT8 for ResNet-18 and MobileNetV2 at 224x224 (issue 4).

Per model, one edgedl run: export_tflite [fp32, int8] -> evaluate (accuracy on digits upsampled to
3x224x224, on each .tflite file), then both files timed side by side in this process: LiteRT with
XNNPACK, CPU, batch 1, 2 threads, alternating rounds, medians of per-round p50s.
The models are the checkpoints trained by benchmarks/compression.py (trained here if absent).

    .venv/bin/python benchmarks/litert.py [--rounds 5] [--out benchmarks/.work]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DATA = "digits:3x224x224"


def main() -> None:
    from edgedl import api
    from edgedl.bench import conditions, side_by_side
    from edgedl.recipe import validate_recipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/.work"))
    args = parser.parse_args()
    started, rows = time.time(), {}
    sample = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for model in ("resnet18", "mobilenetv2_100"):
        checkpoint = args.out / f"int8-{model}" / "artifacts" / f"{model}.pt"
        if not checkpoint.exists():
            api.compress(validate_recipe({"name": f"train-{model}", "model": model, "data": DATA, "targets": [],
                                          "stages": [{"stage": "train", "epochs": args.epochs, "lr": 1e-3,
                                                      "batch_size": 32}]}),
                         out=args.out / f"int8-{model}", force=True, progress=False)
        run = api.compress(validate_recipe({
            "name": f"litert-{model}", "model": str(checkpoint), "data": DATA, "seed": 0, "targets": ["tflite"],
            "stages": [{"stage": "export_tflite", "precisions": ["fp32", "int8"], "calibration_samples": 128},
                       {"stage": "evaluate"}]}), out=args.out / f"litert-{model}", force=True, progress=False)
        artifacts = {a["precision"]: a for a in json.loads((run / "manifest.json").read_text())["artifacts"]
                     if a["format"] == "tflite"}
        p50 = side_by_side({k: run / a["path"] for k, a in artifacts.items()}, sample, threads=2,
                           rounds=args.rounds, min_seconds=1.0)
        rows[model] = {k: {"p50_ms": p50[k], "accuracy": a["metrics"]["accuracy"], "size_bytes": a["size_bytes"]}
                       for k, a in artifacts.items()}
    result = {"rows": rows, "seconds": time.time() - started,
              "conditions": {"versions": conditions.versions(conditions.PACKAGES + ("ai-edge-litert", "litert-torch",
                                                                                     "ai-edge-quantizer")),
                             "host": conditions.host(), "threads": 2, "batch": 1}}
    (args.out / "litert.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
