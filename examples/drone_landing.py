"""Drone landing-zone classifier: decide LAND or HOLD at 30 Hz from a downward camera.

Two steps, both runnable from the README:

    # 1. make a labelled set of synthetic aerial frames and let edgedl train, export and quantize
    .venv/bin/python examples/drone_landing.py train --out runs/drone
    # 2. fly: a camera thread delivers frames, a 30 Hz loop classifies the newest one
    .venv/bin/python examples/drone_landing.py fly --model runs/drone

``--model`` takes the run folder (``fly`` then loads the LiteRT file the run recommends: the INT8 file
when its gates passed, else the fp32 one, and says why) or an artifact file. ``fly`` reads frames
from the synthetic camera (default), from a ``.npy`` stack of HxWx3 uint8
frames, or from a video file when OpenCV is installed (``--source clip.mp4``). It needs only numpy
and one runtime backend. ``--budget-ms`` with ``--fallback`` switches to a smaller model when the
main one keeps overrunning. At the end it prints the latency percentiles, the deadline misses and,
for the synthetic camera (which knows the truth), how often the decision was right.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

LABELS = ["clear", "obstacle"]
SIZE = 32


# ---- the synthetic world ------------------------------------------------------------------------

def render(rng: np.random.Generator, obstacle: bool, size: int = SIZE) -> np.ndarray:
    """One HxWx3 uint8 aerial frame: textured grass, sometimes a landing pad, and for an
    obstacle frame one to three rocks, trees or people (dark or bright blobs)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = np.array([70, 120, 60], np.float32) * rng.uniform(0.7, 1.3)
    texture = rng.normal(0, 12, (size, size, 1)).astype(np.float32)
    shade = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None] * 0.8
    img = base + texture + shade
    if rng.random() < 0.5:  # a pale landing pad with an H, in either class
        cy, cx, r = rng.uniform(8, size - 8, 2).tolist() + [rng.uniform(4, 7)]
        pad = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
        img[pad] = [200, 200, 190]
        h = pad & ((np.abs(xx - cx + r / 2) < 1) | (np.abs(xx - cx - r / 2) < 1) | (np.abs(yy - cy) < 1))
        img[h] = [230, 230, 60]
    if obstacle:
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(2, size - 2, 2)
            r = rng.uniform(2.5, 6)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            img[blob] = rng.choice([[35, 30, 25], [20, 60, 20], [220, 80, 60]], axis=0) + rng.normal(0, 8, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_dataset(path: Path, samples: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, samples)
    x = np.stack([render(rng, bool(label)) for label in y])
    np.savez_compressed(path, x=x, y=y, labels=np.array(LABELS))
    return path


class SyntheticCamera:
    """Frames at ``fps`` in a background thread; ``read()`` gives the newest (and its truth)."""

    def __init__(self, fps: float = 30, seed: int = 1, source: str = "synthetic"):
        self.fps, self.rng = fps, np.random.default_rng(seed)
        self._frames = self._open(source)
        self._latest: tuple[np.ndarray, int | None] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.delivered = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, source: str):
        if source == "synthetic":
            def frames():
                truth = 0
                while True:
                    if self.rng.random() < 0.05:  # the scene changes now and then
                        truth = 1 - truth
                    yield render(self.rng, bool(truth)), truth
            return frames()
        path = Path(source)
        if path.suffix == ".npy":
            stack = np.load(path)
            return ((stack[i % len(stack)], None) for i in range(10**9))
        try:
            import cv2
        except ImportError:
            sys.exit(f"reading {path.name} needs OpenCV: pip install opencv-python-headless (or pass a .npy stack)")
        capture = cv2.VideoCapture(str(path))

        def video():
            while True:
                ok, frame = capture.read()
                if not ok:
                    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                yield frame[:, :, ::-1].copy(), None  # BGR -> RGB
        return video()

    def start(self) -> "SyntheticCamera":
        self._thread.start()
        while self.read() is None:
            time.sleep(0.001)
        return self

    def _run(self):
        period, due = 1.0 / self.fps, time.perf_counter()
        for frame, truth in self._frames:
            if self._stop.is_set():
                return
            with self._lock:
                self._latest = (frame, truth)
                self.delivered += 1
            due += period
            time.sleep(max(0.0, due - time.perf_counter()))

    def read(self):
        with self._lock:
            return self._latest

    def stop(self):
        self._stop.set()


# ---- the two commands ---------------------------------------------------------------------------

def train(args) -> None:
    from edgedl import api
    from edgedl.recipe import validate_recipe

    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = make_dataset(args.out.parent / f"{args.out.name}-frames.npz", args.samples)
    recipe = validate_recipe({
        "name": "drone-landing", "model": "resnet8", "data": str(data), "seed": 0, "targets": ["onnx", "tflite"],
        "stages": [{"stage": "train", "epochs": args.epochs, "lr": 3e-3, "batch_size": 64},
                   {"stage": "export_onnx"},
                   {"stage": "export_tflite", "precisions": ["fp32", "int8"], "calibration_samples": 128},
                   {"stage": "evaluate"}]})
    run = api.compress(recipe, out=args.out, force=True, progress=False).path
    print(f"trained and exported to {run}/artifacts (see {run}/report.md)")


def fly(args) -> int:
    import edgedl.runtime as rt

    if Path(args.model).is_dir():  # a run: the file it recommends, not the one a name suggests
        args.model, why = rt.recommended(args.model, "tflite")
        print(f"model: {why}")
    model = rt.load(args.model, threads=args.threads)
    fallback = rt.load(args.fallback, threads=args.threads) if args.fallback else None
    runner = rt.LatencyBudget(model, args.budget_ms, fallback=fallback) if args.budget_ms else model
    for m in (model, fallback):
        if m is not None:
            m.warmup(10)  # both: the fallback must be ready the moment the budget switches to it
    camera = SyntheticCamera(fps=args.hz, source=args.source).start()
    decisions = {"LAND": 0, "HOLD": 0}
    right = judged = 0
    streak = 0  # LAND needs several clear frames in a row: one lucky frame must not land the drone

    def tick(_):
        nonlocal right, judged, streak
        frame, truth = camera.read()
        p = runner.predict(frame)
        clear = p.label == "clear" and p.score >= args.min_score
        streak = streak + 1 if clear else 0
        decision = "LAND" if streak >= args.confirm else "HOLD"
        decisions[decision] += 1
        if truth is not None:
            judged += 1
            right += (p.class_id == truth)

    loop = rt.RateLoop(args.hz, tick).run(seconds=args.seconds)
    camera.stop()
    print(f"model {Path(args.model).name} ({model.backend}), camera {args.source}, {camera.delivered} frames delivered")
    print(loop.report())
    print(f"decisions: LAND {decisions['LAND']}, HOLD {decisions['HOLD']}")
    if judged:
        print(f"frame accuracy against the synthetic truth: {right / judged:.1%} of {judged}")
    if args.budget_ms:
        print(f"latency budget {args.budget_ms} ms: {runner.stats()}")
    model.close()
    if fallback:
        fallback.close()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="synthesise frames, train, export fp32 and INT8")
    t.add_argument("--out", type=Path, default=Path("runs/drone"))
    t.add_argument("--samples", type=int, default=3000)
    t.add_argument("--epochs", type=int, default=8)
    f = sub.add_parser("fly", help="classify camera frames at a fixed rate")
    f.add_argument("--model", required=True, help="the train step's run folder (its recommended .tflite) or a file")
    f.add_argument("--source", default="synthetic", help="synthetic, frames.npy, or a video file (needs OpenCV)")
    f.add_argument("--hz", type=float, default=30)
    f.add_argument("--seconds", type=float, default=10)
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--min-score", type=float, default=0.8)
    f.add_argument("--confirm", type=int, default=5, help="clear frames in a row before LAND")
    f.add_argument("--budget-ms", type=float, default=None)
    f.add_argument("--fallback", default=None, help="a smaller artifact to switch to when over budget")
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args)
        return 0
    return fly(args)


if __name__ == "__main__":
    sys.exit(main())
