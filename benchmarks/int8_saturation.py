"""8-bit against 7-bit INT8 weights, as this host's ONNX Runtime kernels run them: what saturation costs.

On an x86 CPU without VNNI or AMX, ONNX Runtime's u8s8 kernels add each pair of u8 x s8 products in 16
bits (VPMADDUBSW), which saturates once two products near the ends of their ranges meet; 7-bit weights
(reduce_range) keep every pair in range, at half the weight levels. Each model's per-channel file
(cpu_u8s8_per_channel, MinMax ranges, bias correction on, the same calibration samples) is written with
8-bit and with 7-bit weights; for each: its quality against FP32 as this CPU's integer kernels run it,
the same for its Q/DQ as defined (compute='cpu-qdq', graph optimizations off: what a CPU with VNNI or
an Arm CPU computes, up to rounding), how far the kernels are from the definition, and p50s timed side
by side in one process. On a CPU with VNNI the kernels follow the definition for both files.

Models:
  recognizer  PP-OCRv4's text recognizer (ch_PP-OCRv4_rec_infer.onnx from the rapidocr_onnxruntime
              1.4.4 wheel, benchmarks/text_recognizer.py's lines): cosine of its character
              probabilities and 1 - CER of its reading against FP32's, 10 held-out lines
  mobilenet   tests/outlier_mobilenet.py:quick (MobileNetV2-0.5 on digits, trained here, two outlier
              channels, equalized first as the quantize stage does): accuracy on the test split (269)
  resnet18    ResNet-18 at 3x224x224, random weights (none can be downloaded), on photo crops:
              cosine of its logits

    .venv/bin/python benchmarks/int8_saturation.py [--models recognizer,mobilenet,resnet18] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
WORK = ROOT / "benchmarks" / ".work" / "int8_saturation"


def recognizer():
    import text_recognizer as tr

    x, _ = tr.lines(64)
    src = tr.fetch()
    return src, x[:-10], x[-10:], None, lambda out, ref: tr.same_text(out, None, ref)


def mobilenet():
    from edgedl import api
    from edgedl.data import calibration_samples, load_dataset
    from edgedl.recipe import validate_recipe

    recipe = validate_recipe({"model": str(ROOT / "tests" / "outlier_mobilenet.py") + ":quick",
                              "data": "digits:1x32x32", "seed": 0, "targets": ["onnx"],
                              "stages": [{"stage": "export_onnx"}]}, source="benchmark")
    run = api.compress(recipe, out=WORK / "mobilenet-run", force=True, progress=False, trust_model_code=True)
    data = load_dataset("digits:1x32x32", seed=0)
    calibration = calibration_samples(data, 128, 0, "test").samples
    return run.artifact_path("outlier_mobilenet.fp32.onnx"), calibration, data.test.x, data.test.y, None


def resnet18():
    import matplotlib.image
    from cpu_schemes import resnet18 as export
    from yolo_head import write_images

    images = write_images(WORK / "photos", count=24, size=224)
    x = np.stack([matplotlib.image.imread(p)[..., :3].transpose(2, 0, 1) for p in sorted(images.glob("*.png"))])
    x = ((x - 0.45) / 0.225).astype(np.float32)
    return export(WORK / "resnet18", images), x[:16], x[16:], None, None


def cosine(a, b) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.mean((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="recognizer,mobilenet,resnet18")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from edgedl.artifacts import predict
    from edgedl.bench import conditions
    from edgedl.formats.onnx import quantize as q
    from edgedl.formats.onnx.equalize import equalize
    from edgedl.quantization.speed import median_round, time_rounds
    from edgedl.runtime import load

    print(f"CPU: {conditions.host().get('cpu')}; INT8 instructions: {', '.join(conditions.cpu_features()) or 'none'}; "
          f"saturating kernels here: {'yes' if q.saturating_products() else 'no'}")
    for model in args.models.split(","):
        work = WORK / model
        shutil.rmtree(work / "files", ignore_errors=True)
        (work / "files").mkdir(parents=True)
        src, calibration, held, labels, measure = {"recognizer": recognizer, "mobilenet": mobilenet,
                                                   "resnet18": resnet18}[model]()
        prepared = work / "files" / "fp32.onnx"
        q.prepare(src, prepared)
        name = load(prepared).inputs[0].name
        feeds = [{name: calibration[i:i + 1]} for i in range(len(calibration))]
        equalize(prepared, feeds)  # as the quantize stage does (a no-op where no stream has outliers)
        files = {"fp32": prepared}
        for bits in (8, 7):
            backend = q.OnnxBackend(prepared, feeds, "cpu", "minmax", cache_dir=work / "files", bias_correction=True,
                                    reduce_range=bits == 7)
            files[f"{bits}-bit weights"] = work / "files" / f"int8-{bits}bit.onnx"
            backend.quantize("cpu_u8s8_per_channel", files[f"{bits}-bit weights"])
        reference = predict(prepared, held, batch_size=1)
        timed = time_rounds(dict(files), held[:1], threads=2, rounds=args.rounds)
        p50 = {k: v[median_round(v)][0] for k, v in timed.items()}
        kind = "accuracy" if labels is not None else "1 - CER vs FP32" if measure else "cosine vs FP32"
        print(f"\n### {model}: {src.name}, {len(feeds)} calibration samples, {len(held)} held out, "
              f"ONNX Runtime CPU, batch 1, 2 threads, {args.rounds} alternating rounds")
        extra = kind != "cosine vs FP32"  # the cosine column beside another measure
        print(f"| file | {kind}, kernels | {kind}, Q/DQ as defined | {'cosine vs FP32, kernels | ' if extra else ''}"
              f"kernels vs definition: cosine | p50 ms | vs FP32 |")
        print("|---|---|---|" + ("---|" if extra else "") + "---|---|---|")
        for key, path in files.items():
            kernels = predict(path, held, batch_size=1)
            defined = predict(path, held, batch_size=1, compute="cpu-qdq")

            def score(out):
                if labels is not None:
                    return f"{100 * float((out.argmax(1) == labels).mean()):.2f}%"
                return f"{measure(out, reference):.4f}" if measure else f"{cosine(out, reference):.4f}"

            print(f"| {key} | {score(kernels)} | {score(defined)} | "
                  f"{f'{cosine(kernels, reference):.4f} | ' if extra else ''}{cosine(kernels, defined):.5f} | {p50[key]:.3f} | {p50['fp32'] / p50[key]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
