"""Which INT8 schemes the ONNX Runtime CPU search tries: each scheme's whole-INT8 file of the same fp32
file, side by side in one run: quality against FP32 and latency.

Schemes (edgedl.formats.onnx.quantize.SCHEMES, MinMax ranges, the same calibration samples):
  cpu_u8s8_per_tensor    unsigned asymmetric activations, one weight scale per tensor   (a candidate)
  cpu_u8s8_per_channel   unsigned asymmetric activations, one weight scale per channel  (a candidate)
  cpu_s8s8_per_channel   signed symmetric activations, per-channel weights (the candidate before)

Models:
  ppocr     PP-OCRv4's text detector (ch_PP-OCRv4_det_infer.onnx from the rapidocr_onnxruntime 1.4.4
            wheel, fetched with pip download) at 3x320x320, on crops of scikit-learn's sample photographs
            with words drawn on them: scored by the cosine of its probability map and the IoU of the
            text mask (map > 0.3) with FP32's, worst and mean over the held-out crops
  resnet18  ResNet-18 at 3x224x224 (random weights: none can be downloaded here) on crops of the same
            photographs, scored by the cosine of its logits

    .venv/bin/python benchmarks/cpu_schemes.py [--models ppocr,resnet18] [--rounds 5] [--out benchmarks/.work/cpu_schemes]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # write_images: crops of scikit-learn's sample photographs

SCHEMES = ("cpu_u8s8_per_tensor", "cpu_u8s8_per_channel", "cpu_s8s8_per_channel")
WHEEL = "rapidocr_onnxruntime==1.4.4"
DETECTOR = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
WORDS = ("edge device robot drone jetson phone latency memory energy model quantize prune export bench "
         "2026 ONNX INT8 runtime camera lidar").split()


def text_crops(count: int, size: int = 320, seed: int = 0) -> np.ndarray:
    """Crops of scikit-learn's sample photographs with 2-5 words drawn on each (DejaVu Sans, which
    matplotlib ships), normalised as PP-OCR's detector expects (ImageNet mean and std, NCHW)."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont
    from sklearn.datasets import load_sample_images

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    rng = random.Random(seed)
    photos = load_sample_images().images
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        y, x = rng.randrange(photo.shape[0] - size), rng.randrange(photo.shape[1] - size)
        crop = Image.fromarray(photo[y:y + size, x:x + size].copy())
        draw = ImageDraw.Draw(crop)
        for _ in range(rng.randrange(2, 6)):
            face = ImageFont.truetype(str(font), rng.randrange(14, 40))
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 3)))
            colour = rng.choice([(255, 255, 255), (0, 0, 0), (255, 220, 0), (20, 20, 120)])
            draw.text((rng.randrange(size - 120), rng.randrange(size - 30)), words, fill=colour, font=face)
        rgb = np.asarray(crop, dtype=np.float32) / 255.0
        out.append(((rgb - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def detector(work: Path) -> Path:
    """PP-OCRv4's detector out of the rapidocr_onnxruntime wheel (pip download, no install)."""
    path = work / "ch_PP-OCRv4_det_infer.onnx"
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work), WHEEL], check=True)
        wheel = next(work.glob("rapidocr_onnxruntime-*.whl"))
        path.write_bytes(zipfile.ZipFile(wheel).read(DETECTOR))
    return path


def resnet18(work: Path, images: Path) -> Path:
    """ResNet-18's fp32 ONNX as edgedl exports it (random weights)."""
    from edgedl import api
    from edgedl.recipe import validate_recipe

    recipe = validate_recipe({"name": "schemes-resnet18", "model": "resnet18", "data": f"images:{images}:3x224x224",
                              "seed": 0, "targets": ["onnx"], "stages": [{"stage": "export_onnx"}]}, source="benchmark")
    run = api.compress(recipe, out=work / "run", force=True, progress=False)
    return run.artifact_path("resnet18.fp32.onnx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ppocr,resnet18")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / ".work" / "cpu_schemes")
    args = parser.parse_args()
    from edgedl.bench import conditions
    from edgedl.formats.onnx import quantize as q
    from edgedl.quantization.speed import time_rounds
    from edgedl.runtime import load

    print(f"CPU: {conditions.host().get('cpu')}; INT8 instructions: {', '.join(conditions.cpu_features()) or 'none'}")
    for model in args.models.split(","):
        work = args.out / model
        if work.exists():
            shutil.rmtree(work / "files", ignore_errors=True)
        (work / "files").mkdir(parents=True, exist_ok=True)
        if model == "ppocr":
            src, x = detector(work), text_crops(48)
            np.savez(work / "text_crops.npz", x=x)  # for `edgedl compress --data` (RESULTS.md)
        else:
            import matplotlib.image
            from yolo_head import write_images

            images = write_images(work / "photos", count=24, size=224)
            src = resnet18(work, images)
            x = np.stack([matplotlib.image.imread(p)[..., :3].transpose(2, 0, 1) for p in sorted(images.glob("*.png"))])
            x = ((x - 0.45) / 0.225).astype(np.float32)
        calibration, held = x[:len(x) * 5 // 6], x[len(x) * 5 // 6:]
        prepared = work / "files" / "fp32.onnx"
        q.prepare(src, prepared)
        name = load(prepared).inputs[0].name
        feeds = [{name: calibration[i:i + 1]} for i in range(len(calibration))]
        files = {"fp32": prepared}
        for scheme in SCHEMES:
            files[scheme] = work / "files" / f"{scheme}.onnx"
            q.quantize_static(prepared, files[scheme], feeds, q.SCHEMES[scheme], "minmax", (), None,
                              work / "files" / "calibration-minmax.json")
        outputs = {}
        for k, path in files.items():
            with load(path, threads=2) as runner:
                outputs[k] = np.concatenate([next(iter(runner.run({name: held[i:i + 1]}).values()))
                                             for i in range(len(held))])
        timed = time_rounds(files, held[:1], threads=2, rounds=args.rounds)
        p50 = {k: float(np.median([r[0] for r in v])) for k, v in timed.items()}
        print(f"\n## {model}: {src.name}, {x.shape[1:]}, {len(feeds)} calibration samples, {len(held)} held out, "
              f"ONNX Runtime CPU, batch 1, 2 threads, {args.rounds} alternating rounds")
        mask = "| text-mask IoU worst | mean " if model == "ppocr" else ""
        print(f"| file | cosine worst | mean {mask}| p50 ms | vs FP32 |")
        print("|---|---|---|" + ("---|---|" if mask else "") + "---|---|")
        ref = outputs["fp32"].reshape(len(held), -1)
        for k in files:
            got = outputs[k].reshape(len(held), -1)
            cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.maximum(np.linalg.norm(got, axis=1), 1e-12)
            row = f"| {k} | {cos.min():.4f} | {cos.mean():.4f} | "
            if mask:
                a, b = ref > 0.3, got > 0.3
                iou = (a & b).sum(1) / np.maximum((a | b).sum(1), 1)
                row += f"{iou.min():.3f} | {iou.mean():.3f} | "
            print(row + f"{p50[k]:.3f} | {p50['fp32'] / p50[k]:.2f}x |")


if __name__ == "__main__":
    main()
