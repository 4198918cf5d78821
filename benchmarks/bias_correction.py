"""What bias correction (edgedl/formats/onnx/bias.py) changes in ONNX INT8, side by side in one run.

Per model, the same prepared (and, as the quantize stage does, equalized) fp32 file and the same
calibration samples; each CPU scheme's whole-INT8 file with and without bias correction, scored on
held-out samples. On the hard model, also the quantize stage as a user runs it (its defaults, the
search and the float fallback included) with `bias_correction` true and false: what it kept, how
many layers it left in float, its test accuracy and latency (timed side by side in one process:
ONNX Runtime, CPU, batch 1, 2 threads, alternating rounds, medians of per-round p50s).

Models:
  hard   MobileNetV2-0.5 on digits at 1x32x32, trained here, with two residual-stream channels 100x
         the rest (tests/outlier_mobilenet.py), scored by test accuracy (269 digits)
  ppocr  PP-OCRv4's text detector (the rapidocr_onnxruntime 1.4.4 wheel, benchmarks/cpu_schemes.py
         fetches it) on photo crops with words drawn on them, scored by the cosine of its probability
         map and the IoU of its text mask (map > 0.3) with FP32's, mean over the held-out crops

    .venv/bin/python benchmarks/bias_correction.py [--models hard,ppocr] [--rounds 5] [--out benchmarks/.work/bias]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

SCHEMES = ("cpu_u8s8_per_tensor", "cpu_u8s8_per_channel")


def whole_int8(src: Path, feeds: list[dict], work: Path, methods=("minmax",)) -> dict[tuple, Path]:
    """Each scheme's whole-INT8 file of ``src`` (prepared and equalized as the stage does), with and
    without bias correction, per calibration method."""
    from edgedl.formats.onnx import quantize as q
    from edgedl.formats.onnx.equalize import equalize

    prepared = work / "prepared.onnx"
    q.prepare(src, prepared)
    equalize(prepared, feeds)
    files = {("fp32", "", False): prepared}
    for method in methods:
        for corrected in (False, True):
            backend = q.OnnxBackend(prepared, feeds, "cpu", method, cache_dir=work, bias_correction=corrected)
            for scheme in SCHEMES:
                files[(scheme, method, corrected)] = work / f"{scheme}-{method}-{'bc' if corrected else 'plain'}.onnx"
                backend.quantize(scheme, files[(scheme, method, corrected)])
                if corrected:
                    print(f"  {scheme} {method}: {backend.corrections[str(files[(scheme, method, corrected)])]}")
    return files


def hard(args, work: Path) -> None:
    from edgedl import api
    from edgedl.artifacts import predict
    from edgedl.data import load_dataset
    from edgedl.quantization.speed import time_rounds
    from edgedl.recipe import validate_recipe

    runs = {}
    for corrected in (False, True):
        recipe = validate_recipe({
            "name": "bias-hard", "model": str(ROOT / "tests" / "outlier_mobilenet.py") + ":build",
            "data": "digits:1x32x32", "seed": 0, "targets": ["onnx"],
            "stages": [{"stage": "export_onnx"},
                       {"stage": "quantize", "precision": "int8", "calibration_samples": 128, "threads": 2,
                        "on_gate_miss": "warn", "bias_correction": corrected},
                       {"stage": "evaluate", "split": "test"}]}, source="benchmark")
        runs[corrected] = api.compress(recipe, out=work / f"run-{corrected}", force=True, progress=False)
    data = load_dataset("digits:1x32x32", seed=0)
    first = runs[False]
    fp32 = first.artifact_path("outlier_mobilenet.fp32.onnx")
    feeds = [{"input": data.train.x[i:i + 1]} for i in range(128)]
    files = whole_int8(fp32, feeds, work / "files")
    print(f"\n## hard: whole-INT8 files, MinMax, 128 calibration digits, test accuracy over {len(data.test.y)}")
    print("| file | bias correction off | on |\n|---|---|---|")
    accuracy = {k: float((predict(p, data.test.x).argmax(1) == data.test.y).mean()) for k, p in files.items()}
    print(f"| FP32 | {accuracy[('fp32', '', False)]:.2%} | |")
    for scheme in SCHEMES:
        print(f"| {scheme} | {accuracy[(scheme, 'minmax', False)]:.2%} | {accuracy[(scheme, 'minmax', True)]:.2%} |")
    kept = {}
    for corrected, run in runs.items():
        record = next(a for a in run.manifest["artifacts"] if a["precision"] == "int8")
        kept[corrected] = (run.artifact_path(record["name"]), record)
    timed = time_rounds({"fp32": fp32, **{str(k): p for k, (p, _) in kept.items()}}, data.test.x[:1], threads=2,
                        rounds=args.rounds)
    p50 = {k: float(np.median([r[0] for r in v])) for k, v in timed.items()}
    print("\n## hard: the quantize stage (defaults; bias_correction as given), test split")
    print("| bias_correction | kept | calibration | layers in float | bias layers corrected | val quality (gate) "
          "| test accuracy | p50 ms | vs FP32 |\n|---|---|---|---|---|---|---|---|---|")
    fp32_record = next(a for a in first.manifest["artifacts"] if a["name"] == "outlier_mobilenet.fp32.onnx")
    print(f"| (FP32) | | | | | | {fp32_record['metrics']['accuracy']:.2%} | {p50['fp32']:.3f} | 1.00x |")
    for corrected, (_, record) in kept.items():
        q = record["quantization"]
        print(f"| {str(corrected).lower()} | {q['scheme']} | {q['calibration']['method']} | {len(q['float_layers'])} | "
              f"{q.get('bias_correction', {}).get('layers', '-')} | {q['quality']:.4f} ({'met' if q['accuracy_gate'] else 'missed'}) | "
              f"{record['metrics']['accuracy']:.2%} | {p50[str(corrected)]:.3f} | {p50['fp32'] / p50[str(corrected)]:.2f}x |")
    (work / "summary.json").write_text(json.dumps({"whole_int8": {"|".join(map(str, k)): v for k, v in accuracy.items()},
                                                   "p50_ms": p50}, indent=1))


def ppocr(args, work: Path) -> None:
    from cpu_schemes import detector, text_crops

    from edgedl.artifacts import predict

    src, x = detector(work), text_crops(48)
    calibration, held = x[:40], x[40:]
    feeds = [{"x": calibration[i:i + 1]} for i in range(len(calibration))]
    files = whole_int8(src, feeds, work / "files", methods=("minmax", "percentile"))
    outputs = {k: predict(p, held, batch_size=1).reshape(len(held), -1) for k, p in files.items()}
    ref = outputs[("fp32", "", False)]
    print(f"\n## ppocr: whole-INT8 files, {len(feeds)} calibration crops, {len(held)} held out (mean over them)")
    print("| scheme | calibration | cosine off | on | text-mask IoU off | on |\n|---|---|---|---|---|---|")
    for scheme in SCHEMES:
        for method in ("minmax", "percentile"):
            row = f"| {scheme} | {method} |"
            cells = {}
            for corrected in (False, True):
                got = outputs[(scheme, method, corrected)]
                cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.maximum(np.linalg.norm(got, axis=1), 1e-12)
                a, b = ref > 0.3, got > 0.3
                iou = (a & b).sum(1) / np.maximum((a | b).sum(1), 1)
                cells[corrected] = (cos.mean(), iou.mean())
            print(row + f" {cells[False][0]:.4f} | {cells[True][0]:.4f} | {cells[False][1]:.3f} | {cells[True][1]:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="hard,ppocr")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / ".work" / "bias")
    args = parser.parse_args()
    from edgedl.bench import conditions

    print(f"CPU: {conditions.host().get('cpu')}; INT8 instructions: {', '.join(conditions.cpu_features()) or 'none'}")
    for model in args.models.split(","):
        work = args.out / model
        shutil.rmtree(work / "files", ignore_errors=True)
        (work / "files").mkdir(parents=True, exist_ok=True)
        {"hard": hard, "ppocr": ppocr}[model](args, work)


if __name__ == "__main__":
    main()
