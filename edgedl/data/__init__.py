"""Datasets behind a data spec: ``digits[:CxHxW]``, ``path/to/file.npz``, ``random:CxHxW``.

Every dataset comes as fixed, seeded train/val/test splits of numpy arrays already normalised
for the model; ``normalization`` says how raw inputs map to model inputs, so that the sidecar
can tell a device app the same thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from edgedl.errors import MissingDependencyError, UsageError

KNOWN_SPECS = ("digits[:CxHxW], random:CxHxW, path/to/file.npz (array x, or one named after the model input, "
               "and optionally y)")
_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray | None

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for start in range(0, len(self.x), batch_size):
            stop = start + batch_size
            yield self.x[start:stop], None if self.y is None else self.y[start:stop]


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int | None
    labels: list[str] | None = None
    normalization: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def labeled(self) -> bool:
        return self.test.y is not None

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise UsageError(f"unknown split '{name}'; use train, val or test")
        return getattr(self, name)


def calibration_samples(dataset: "Dataset", count: int, seed: int, field: str) -> np.ndarray:
    """``count`` samples drawn (seeded, without replacement) from the training split only.

    Calibration never sees the validation or test split, so no figure reported on them is
    tuned on them. ``field`` names the recipe field in the error when there are too few.
    """
    train = dataset.train
    if count > len(train):
        raise UsageError(f"{field} is {count} but the training split has only {len(train)} samples; lower "
                         f"{field.rsplit('.', 1)[-1]} or bring more data")
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(train.x[rng.choice(len(train), count, replace=False)])


def parse_shape(text: str, spec: str) -> tuple[int, int, int]:
    match = _SHAPE.match(text)
    if not match or 0 in (shape := tuple(int(g) for g in match.groups())):
        raise UsageError(f"data spec '{spec}': shape must be CxHxW with positive sizes, e.g. 3x32x32")
    return shape


def load_dataset(spec: str, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15) -> Dataset:
    """Load the dataset a spec names, split with ``seed`` (the same seed gives the same split)."""
    name, _, arg = spec.partition(":")
    if name == "digits":
        return _digits(spec, parse_shape(arg, spec) if arg else None, seed, val_fraction, test_fraction)
    if name == "random":
        if not arg:
            raise UsageError(f"data spec '{spec}' needs a shape: random:CxHxW, e.g. random:3x224x224")
        return _random(spec, parse_shape(arg, spec), seed)
    if spec.lower().endswith(".npz"):
        return _npz(Path(spec), seed, val_fraction, test_fraction)
    raise UsageError(f"unknown dataset '{spec}'; known: {KNOWN_SPECS}")


def stratified_split(y: np.ndarray, seed: int, val_fraction: float, test_fraction: float):
    """Indices of train/val/test, drawn per class so each split keeps the class balance."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    return tuple(rng.permutation(np.concatenate(p)) for p in parts)


def _random_split(n: int, seed: int, val_fraction: float, test_fraction: float):
    idx = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    return idx[n_test + n_val :], idx[n_test : n_test + n_val], idx[:n_test]


def _digits(spec, shape, seed, val_fraction, test_fraction) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise MissingDependencyError("scikit-learn", "data", "The digits dataset") from None
    bunch = load_digits()
    raw = bunch.images.astype(np.float32) / 16.0  # (N, 8, 8) in [0, 1]
    channels, height, width = shape or (1, 8, 8)
    if (height, width) != (8, 8):
        from scipy.ndimage import zoom

        raw = zoom(raw, (1, height / 8, width / 8), order=1).astype(np.float32)
    x = np.repeat(raw[:, None], channels, axis=1)
    y = bunch.target.astype(np.int64)
    tr, va, te = stratified_split(y, seed, val_fraction, test_fraction)
    # Normalisation statistics come from the training split alone.
    mean, std = float(x[tr].mean()), float(x[tr].std())
    x = ((x - mean) / std).astype(np.float32)
    return Dataset(
        name=spec,
        train=Split(x[tr], y[tr]),
        val=Split(x[va], y[va]),
        test=Split(x[te], y[te]),
        input_shape=(channels, height, width),
        num_classes=10,
        labels=[str(i) for i in range(10)],
        # model_input = (resize(raw) * scale - mean) / std, raw being 8x8 images of 0..16 intensities;
        # scipy's zoom(order=1) is bilinear with aligned corners
        normalization={"scale": 1 / 16, "mean": [mean] * channels, "std": [std] * channels,
                       "resize": "bilinear_align_corners", "raw": "8x8 grey, 0..16"},
    )


def _random(spec, shape, seed, n: int = 64) -> Dataset:
    rng = np.random.default_rng(seed)
    split = Split(rng.standard_normal((n, *shape), dtype=np.float32), None)
    return Dataset(
        name=spec,
        train=split,
        val=split,
        test=split,
        input_shape=shape,
        num_classes=None,
        notes=["random data has no labels: accuracy is not available, latency is"],
    )


def _npz(path: Path, seed, val_fraction, test_fraction) -> Dataset:
    if not path.is_file():
        raise UsageError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            files = dict(arrays)
    except Exception as exc:
        raise UsageError(f"cannot read {path} as .npz: {exc}") from None
    inputs = ["x"] if "x" in files else [k for k in files if k not in ("y", "labels")]
    if len(inputs) != 1:
        raise UsageError(f"{path} has arrays {sorted(files)}; it needs 'x' or one array named after the "
                         "model's input (and optionally 'y' labels and 'labels' class names)")
    x = np.ascontiguousarray(files[inputs[0]])
    if x.dtype == np.float64:
        x = x.astype(np.float32)
    y = files.get("y")
    notes = []
    if y is not None:
        y = np.asarray(y).astype(np.int64).reshape(-1)
        if len(y) != len(x):
            raise UsageError(f"{path}: x has {len(x)} samples but y has {len(y)}")
        tr, va, te = stratified_split(y, seed, val_fraction, test_fraction)
        num_classes = int(y.max()) + 1
    else:
        tr, va, te = _random_split(len(x), seed, val_fraction, test_fraction)
        num_classes = None
        notes.append(f"{path.name} has no labels 'y': accuracy is not available")
    take = (lambda idx: None) if y is None else (lambda idx: y[idx])
    normalization = None
    if x.dtype == np.uint8 and x.ndim == 4 and x.shape[-1] in (1, 3, 4):
        # Raw HxWxC images: to NCHW float, scaled to 0..1 and standardised per channel with the
        # training split's statistics; the sidecar tells a device app the same recipe.
        x = x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        mean = x[tr].mean(axis=(0, 2, 3))
        std = x[tr].std(axis=(0, 2, 3)) + 1e-6
        x = np.ascontiguousarray((x - mean[:, None, None]) / std[:, None, None], dtype=np.float32)
        normalization = {"scale": 1 / 255, "mean": mean.tolist(), "std": std.tolist(), "resize": "bilinear",
                         "raw": "HxWxC uint8"}
    labels = [str(v) for v in files["labels"].tolist()] if "labels" in files else None
    if labels is not None and num_classes and len(labels) < num_classes:
        raise UsageError(f"{path}: 'labels' names {len(labels)} classes but y has {num_classes}")
    return Dataset(
        name=str(path),
        train=Split(x[tr], take(tr)),
        val=Split(x[va], take(va)),
        test=Split(x[te], take(te)),
        input_shape=tuple(x.shape[1:]),
        num_classes=num_classes,
        labels=labels,
        normalization=normalization,
        notes=notes,
    )
