"""A real third-party text recognizer through edgedl's INT8: PP-OCRv4's recognition model.

The model is `ch_PP-OCRv4_rec_infer.onnx` from the rapidocr_onnxruntime 1.4.4 wheel (pip download, no
install): PaddleOCR's SVTR-LCNet recognizer (a PP-LCNetV3 convolutional backbone, two attention
blocks, a CTC head), 3x48xW in, per-step probabilities over 6625 characters out (its dictionary is
in the file's metadata). Its text lines are made here: words drawn in DejaVu (which matplotlib
ships) on light crops of scikit-learn's sample photographs, resized to height 48 and padded to width
320, RapidOCR's input width (a line longer than that is squeezed into it; RapidOCR widens the batch
instead, which this fixed-width set leaves out). A reading is the CTC greedy decode; `same_text` below, the quantize stage's
measure for it, is 1 - the character error rate of a file's reading against the float file's.

Parts, side by side in one run:
  files   whole-INT8 files (MinMax ranges, equalized and bias-corrected as the quantize stage makes
          them) of each CPU scheme, and per-channel files with only the convolutions or only the
          MatMuls in INT8 (where the reading is lost): the gate's default measure (cosine), the
          reading's 1 - CER against FP32's and the lines read exactly as FP32 reads them, on
          held-out lines; p50 side by side (ONNX Runtime, CPU, batch 1, 2 threads, alternating
          rounds, medians of per-round p50s)
  default the quantize stage as a user first runs it, judged by the gate's default measure (cosine
          of the probabilities; the run fails where the gate refuses, and keeps what it measured):
            edgedl compress --model W/ch_PP-OCRv4_rec_infer.onnx --data W/lines.npz --quantize int8 --no-bench
  stage   the quantize stage as a user runs it, the reading as its measure:
            edgedl compress --model W/ch_PP-OCRv4_rec_infer.onnx --data W/lines.npz --quantize int8 \\
              --set stages.quantize.metric=benchmarks/text_recognizer.py:same_text --trust-model-code

    .venv/bin/python benchmarks/text_recognizer.py [--parts files,default,stage] [--lines 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work" / "recognizer"
WHEEL = "rapidocr_onnxruntime==1.4.4"
MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
WORDS = ("edge device quantize model export latency memory energy robot drone camera phone jetson tensor "
         "layer channel batch kernel accuracy speed 2026 v1.3 OCR-42 #17 $9.99 total invoice receipt date "
         "name address city Berlin Paris Tokyo node graph python numpy").split()
HELD_OUT = 10  # the files part's held-out lines (the stage draws its own split: 44 train, 10 val, 10 test)
BLANK = 0  # CTC's blank: the dictionary's entries start at 1, and its last is the space RapidOCR appends


def fetch(work: Path = WORK) -> Path:
    """The recognizer out of the rapidocr_onnxruntime wheel (pip download, no install)."""
    work.mkdir(parents=True, exist_ok=True)
    dst = work / Path(MEMBER).name
    if not dst.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work), WHEEL], check=True)
        dst.write_bytes(zipfile.ZipFile(next(work.glob("rapidocr_onnxruntime-*.whl"))).read(MEMBER))
    return dst


def lines(count: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``count`` text lines as the recognizer takes them (N x 3 x 48 x 320, (x / 255 - 0.5) / 0.5) and
    the words drawn on each."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont
    from sklearn.datasets import load_sample_images

    rng, photos = random.Random(seed), load_sample_images().images
    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    out, texts = np.zeros((count, 3, 48, 320), np.float32), []
    for i in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 5)))
        size = rng.randrange(24, 34)
        font = ImageFont.truetype(str(fonts / rng.choice(["DejaVuSans.ttf", "DejaVuSerif.ttf"])), size)
        w, h = int(font.getlength(text)) + 16, size + 14
        photo = photos[i % len(photos)]
        top, left = rng.randrange(photo.shape[0] - h), rng.randrange(max(1, photo.shape[1] - w))
        background = photo[top:top + h, left:left + w].astype(np.float32) * 0.35 + 255 * 0.65
        image = Image.fromarray(background.astype(np.uint8)).resize((w, h))
        ImageDraw.Draw(image).text((8, 4), text, fill=tuple(rng.randrange(70) for _ in range(3)), font=font)
        width = min(320, int(np.ceil(48 * w / h)))
        a = np.asarray(image.resize((width, 48), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255
        out[i, :, :, :width] = (a - 0.5) / 0.5
        texts.append(text)
    return out, texts


def _greedy(prob: np.ndarray) -> np.ndarray:
    """CTC greedy decode of one line's (steps x characters) probabilities: character indices."""
    idx = prob.argmax(-1)
    keep = (idx != BLANK) & np.concatenate([[True], idx[1:] != idx[:-1]])
    return idx[keep]


def _edits(a, b) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _reading(prob: np.ndarray, space: int) -> list[int]:
    """A line's characters, leading and trailing spaces dropped (FP32 itself adds or drops them)."""
    chars = list(_greedy(prob))
    while chars and chars[0] == space:
        chars.pop(0)
    while chars and chars[-1] == space:
        chars.pop()
    return chars


def same_text(outputs, labels, reference) -> float:
    """The quantize stage's measure for this recognizer: 1 - the character error rate of the file's
    reading against the float file's, over every line (edit distance over the float reading's length; below
    0 where a file reads far more than the float file)."""
    space = reference.shape[-1] - 1
    errors = chars = 0
    for o, r in zip(outputs, reference):
        ours, theirs = _reading(o, space), _reading(r, space)
        errors, chars = errors + _edits(ours, theirs), chars + max(len(theirs), 1)
    return 1.0 - errors / chars


def files_part(src: Path, x: np.ndarray, rounds: int) -> None:
    from edgedl.artifacts import predict
    from edgedl.formats.onnx import quantize as q
    from edgedl.formats.onnx.equalize import equalize
    from edgedl.quantization.quality import Quality
    from edgedl.quantization.speed import median_round, time_rounds

    calibration, held = x[:-HELD_OUT], x[-HELD_OUT:]
    feeds = [{"x": calibration[i:i + 1]} for i in range(len(calibration))]
    prepared = WORK / "prepared.onnx"
    q.prepare(src, prepared)
    equalize(prepared, feeds)  # as the quantize stage does, and bias correction on (its default)
    (WORK / "calibration-minmax.json").unlink(missing_ok=True)
    backend = q.OnnxBackend(prepared, feeds, "cpu", "minmax", cache_dir=WORK, bias_correction=True)
    files = {"fp32": prepared}
    for scheme in ("cpu_u8s8_per_tensor", "cpu_u8s8_per_channel", "cpu_u8s8_weighted"):
        files[scheme] = WORK / f"{scheme}.onnx"
        backend.quantize(scheme, files[scheme])
    for ops in ("Conv", "MatMul"):  # where the reading is lost: one kind of layer in INT8, per-channel
        files[f"per-channel, {ops} only"] = WORK / f"{ops}-only.onnx"
        q.quantize_static(prepared, files[f"per-channel, {ops} only"], feeds,
                          dataclasses.replace(q.SCHEMES["cpu_u8s8_per_channel"], op_types=(ops,)),
                          cache=WORK / "calibration-minmax.json")
    split = type("Split", (), {"x": held, "y": None})()
    gate = Quality(split, prepared, classifier=False, use_labels=False)
    reference = predict(prepared, held, batch_size=1)
    space = reference.shape[-1] - 1
    timed = time_rounds(dict(files), held[:1], threads=2, rounds=rounds)
    p50 = {k: v[median_round(v)][0] for k, v in timed.items()}
    print(f"\n## files: MinMax ranges from {len(feeds)} lines, {len(held)} held out")
    print("| file | gate's cosine | reading: 1 - CER vs FP32 | lines read as FP32 reads them | p50 ms | vs FP32 |")
    print("|---|---|---|---|---|---|")
    for key, path in files.items():
        out = predict(path, held, batch_size=1)
        same = sum(_reading(o, space) == _reading(r, space) for o, r in zip(out, reference))
        print(f"| {key} | {gate(path):.4f} | {same_text(out, None, reference):.4f} | {same}/{len(held)} | "
              f"{p50[key]:.2f} | {p50['fp32'] / p50[key]:.2f}x |")


def stage_part(src: Path, metric: bool = True) -> None:
    command = [str(Path(sys.executable).parent / "edgedl"), "compress", "--model", str(src), "--data",
               str(WORK / "lines.npz"), "--quantize", "int8"]
    command += (["--set", "stages.quantize.metric=benchmarks/text_recognizer.py:same_text", "--trust-model-code"]
                if metric else ["--no-bench"])
    command += ["--out", str(WORK / ("run" if metric else "run-default")), "--force"]
    print(f"\n## stage: {' '.join(command)}")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT)
    print(f"exit {done.returncode}, took {time.perf_counter() - start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="files,stage", help="files, default (13 min here), stage")
    parser.add_argument("--lines", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from edgedl.bench import conditions

    print(f"CPU: {conditions.host().get('cpu')}; INT8 instructions: {', '.join(conditions.cpu_features()) or 'none'}")
    src = fetch()
    x, texts = lines(args.lines)
    np.savez(WORK / "lines.npz", x=x)
    import onnxruntime as ort

    session = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    read = session.run(None, {"x": x})[0]
    chars = ["", *session.get_modelmeta().custom_metadata_map["character"].splitlines(), " "]
    exact = sum("".join(chars[i] for i in _greedy(p)).strip().replace(" ", "") == t.replace(" ", "")
                for p, t in zip(read, texts))
    print(f"FP32 reads {exact} of {len(texts)} lines exactly as drawn (spaces aside)")
    parts = args.parts.split(",")
    if "files" in parts:
        files_part(src, x, args.rounds)
    if "default" in parts:
        stage_part(src, metric=False)
    if "stage" in parts:
        stage_part(src)


if __name__ == "__main__":
    main()
