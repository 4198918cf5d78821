"""LiteRT fp32 vs full-integer INT8 for ResNet-18 and MobileNetV2 at 224x224 (issue 4).

Per model, two edgedl runs from the same checkpoint:
  1. export_tflite [fp32, int8, int8_float_io] with ai-edge-quantizer -> evaluate;
  2. export_tflite [int8] with litert-torch's PT2E quantizer -> evaluate;
both calibrated on the same 128-sample draw from the training split. Accuracy is measured on each
.tflite file (digits test split upsampled to 3x224x224, 269 images); since one image is 0.37
points, each INT8 file's outputs are also compared with the fp32 file's on the whole test split
(mean cosine, top-1 agreement), a finer measure of quantization error. Then every file is timed
side by side in this process: LiteRT with XNNPACK, CPU, batch 1, 2 threads, alternating rounds,
medians of per-round p50s.

With --ablate (default on), MobileNetV2's speed is taken apart: the same network with every
3x3 depthwise convolution given a 1x1 kernel (the same op, stride and layout, 1/9 of its
arithmetic; timing only, no accuracy meaning), converted and quantized the same way. The
difference from the full network is what 8/9 of the depthwise arithmetic costs in fp32 and INT8.
(Replacing the blocks with identities or strided slices does not work: LiteRT then inserts layout
transposes that cost more than the convolutions.)

The models are the checkpoints trained by benchmarks/compression.py (trained here if absent).

    .venv/bin/python benchmarks/litert.py [--rounds 5] [--out benchmarks/.work] [--no-ablate]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch.nn as nn

DATA = "digits:3x224x224"
CALIBRATION = 128


def main() -> None:
    from edgedl import api
    from edgedl.bench import conditions, side_by_side
    from edgedl.recipe import validate_recipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/.work"))
    parser.add_argument("--no-ablate", dest="ablate", action="store_false")
    args = parser.parse_args()
    started, rows, ablation = time.time(), {}, None
    sample = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for model in ("resnet18", "mobilenetv2_100"):
        checkpoint = args.out / f"int8-{model}" / "artifacts" / f"{model}.pt"
        if not checkpoint.exists():
            api.compress(validate_recipe({"name": f"train-{model}", "model": model, "data": DATA, "targets": [],
                                          "stages": [{"stage": "train", "epochs": args.epochs, "lr": 1e-3,
                                                      "batch_size": 32}]}),
                         out=args.out / f"int8-{model}", force=True, progress=False)
        files = {}
        for quantizer, precisions in (("ai-edge-quantizer", ["fp32", "int8", "int8_float_io"]), ("pt2e", ["int8"])):
            run = api.compress(validate_recipe({
                "name": f"litert-{model}-{quantizer}", "model": str(checkpoint), "data": DATA, "seed": 0,
                "targets": ["tflite"],
                "stages": [{"stage": "export_tflite", "precisions": precisions, "quantizer": quantizer,
                            "calibration_samples": CALIBRATION}, {"stage": "evaluate"}]}),
                out=args.out / f"litert-{model}-{quantizer}", force=True, progress=False)
            for a in run.manifest["artifacts"]:
                if a["format"] == "tflite":
                    key = a["precision"] if quantizer != "pt2e" else "int8-pt2e"
                    files[key] = (run.path / a["path"], a)
        agreement = _agreement_with_fp32({k: path for k, (path, _) in files.items()})
        p50 = side_by_side({k: path for k, (path, _) in files.items()}, sample, threads=2, rounds=args.rounds,
                           min_seconds=1.0)
        rows[model] = {k: {"p50_ms": p50[k], "accuracy": a["metrics"]["accuracy"], "size_bytes": a["size_bytes"],
                           "vs_fp32_on_test": agreement.get(k)} for k, (_, a) in files.items()}
        if model == "mobilenetv2_100" and args.ablate:
            ablation = _ablate_depthwise(checkpoint, sample, args.out / "litert-ablation", args.rounds)
    result = {"rows": rows, "depthwise_ablation": ablation, "seconds": time.time() - started,
              "conditions": {"versions": conditions.versions(conditions.PACKAGES + ("ai-edge-litert", "litert-torch",
                                                                                     "ai-edge-quantizer", "torchao")),
                             "host": conditions.host(), "threads": 2, "batch": 1, "calibration_samples": CALIBRATION}}
    (args.out / "litert.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def _agreement_with_fp32(paths: dict) -> dict:
    """Each quantized file's outputs against the fp32 file's, on the whole test split."""
    from edgedl.data import load_dataset
    from edgedl.artifacts import compare
    from edgedl.artifacts import predict

    x = load_dataset(DATA, seed=0).test.x
    reference = predict(paths["fp32"], x)
    return {k: compare(reference, predict(path, x)) for k, path in paths.items() if k != "fp32"}


def _ablate_depthwise(checkpoint: Path, sample: np.ndarray, work: Path, rounds: int) -> dict:
    """p50 of MobileNetV2 with and without its depthwise convolutions, fp32 and INT8, side by side."""
    from edgedl.formats.tflite import convert as litert_convert
    from edgedl.bench import side_by_side
    from edgedl.data import calibration_samples, load_dataset
    from edgedl.models.spec import load_model

    work.mkdir(parents=True, exist_ok=True)
    full = load_model(str(checkpoint)).module.eval()
    stripped = copy.deepcopy(full)
    replaced = 0
    for module in list(stripped.modules()):
        for child_name, conv in list(module.named_children()):
            if isinstance(conv, nn.Conv2d) and conv.groups > 1 and conv.groups == conv.in_channels:
                # the same op, layout and stride with a 1x1 kernel: 8/9 of its arithmetic gone
                setattr(module, child_name, nn.Conv2d(conv.in_channels, conv.out_channels, 1, conv.stride, 0,
                                                      groups=conv.groups, bias=conv.bias is not None))
                replaced += 1
    calibration = calibration_samples(load_dataset(DATA, seed=0), CALIBRATION, 0, "calibration").samples
    paths = {}
    for label, module in (("full", full), ("dw1x1", stripped)):
        fp32 = work / f"{label}.fp32.tflite"
        litert_convert.convert(module, sample, fp32)
        int8 = work / f"{label}.int8.tflite"
        litert_convert.quantize(fp32, int8, "int8", calibration)
        paths[f"{label}/fp32"], paths[f"{label}/int8"] = fp32, int8
    p50 = side_by_side(paths, sample, threads=2, rounds=rounds, min_seconds=1.0)
    saved = {p: p50[f"full/{p}"] - p50[f"dw1x1/{p}"] for p in ("fp32", "int8")}
    return {"depthwise_layers_changed": replaced, "p50_ms": p50, "ms_saved_by_1x1": saved,
            "share_of_p50": {p: saved[p] / p50[f"full/{p}"] for p in ("fp32", "int8")},
            "speedup_full": p50["full/fp32"] / p50["full/int8"],
            "speedup_with_1x1": p50["dw1x1/fp32"] / p50["dw1x1/int8"]}


if __name__ == "__main__":
    main()
