"""Datasets behind a data spec: ``digits[:CxHxW]``, ``path/to/file.npz``, ``random:CxHxW``.

Every dataset comes as fixed, seeded train/val/test splits of numpy arrays already normalised
for the model; ``normalization`` says how raw inputs map to model inputs, so that the sidecar
can tell a device app the same thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgedl.data.feeds import Samples, resolve
from edgedl.errors import MissingDependencyError, UsageError

KNOWN_SPECS = ("digits[:CxHxW], digits:seq (rows as 8 time steps of 8 features), random:CxHxW, path/to/file.npz (array x, or one array per model input name, "
               "and optionally y), images:FOLDER[:CxHxW] (class subfolders), text:FILE (a sentence per line)")
_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")


@dataclass
class Split:
    x: Any  # an array of samples, or Samples keyed by input name (multi-input models)
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
    synthetic: bool = False  # random data: latency only

    @property
    def labeled(self) -> bool:
        return self.test.y is not None

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise UsageError(f"unknown split '{name}'; use train, val or test")
        return getattr(self, name)


# Below this many calibration samples edgedl warns (and still runs). NVIDIA's guidance is about
# 500 images for ImageNet; benchmarks/calibration.py measured, on digits with ResNet-8, that at 32
# samples 59% of activation ranges come out over 10% narrower than from the whole training split
# (16% at 256), so real inputs get clipped; accuracy on that easy set held even at 4 samples.
CALIBRATION_FLOOR = 32


@dataclass
class Calibration:
    """Samples drawn for calibration, how many were asked for, and a warning when too few."""

    samples: Any
    requested: int
    warning: str | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def record(self) -> dict:
        return {"samples": len(self), "requested": self.requested, "split": "train",
                **({"warning": self.warning} if self.warning else {})}


def calibration_samples(dataset: "Dataset", count: int, seed: int, field: str) -> Calibration:
    """Up to ``count`` samples drawn (seeded, without replacement) from the training split only.

    Calibration never sees the validation or test split, so no figure reported on them is tuned
    on them. A smaller training split gives all it has; below :data:`CALIBRATION_FLOOR` the
    result carries a warning naming ``field``.
    """
    train = dataset.train
    take = min(count, len(train))
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(len(train), take, replace=False))
    x = train.x[index]
    samples = x if isinstance(x, Samples) else np.ascontiguousarray(x)
    warning = None
    if dataset.synthetic:
        warning = (f"calibrated on {take} samples of random data: INT8 ranges are not representative, so its "
                   "speed figures hold and its accuracy does not")
    elif take < min(count, CALIBRATION_FLOOR):
        warning = (f"{field}: only {take} training samples to calibrate on ({count} asked for); ranges from fewer "
                   f"than {CALIBRATION_FLOOR} samples may clip real inputs: bring more data")
    return Calibration(samples, count, warning)


def parse_shape(text: str, spec: str) -> tuple[int, int, int]:
    match = _SHAPE.match(text)
    if not match or 0 in (shape := tuple(int(g) for g in match.groups())):
        raise UsageError(f"data spec '{spec}': shape must be CxHxW with positive sizes, e.g. 3x32x32")
    return shape


def load_dataset(spec: str, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
                 inputs: list | None = None, tokenizer: dict | None = None,
                 normalization: dict | None = None, classes: list[str] | None = None) -> Dataset:
    """Load the dataset a spec names, split with ``seed`` (the same seed gives the same split).

    ``inputs`` (the model's TensorInfos, when known) lets an .npz hold one array per input name and
    sizes images; ``tokenizer`` (``{"file", "max_length"}``) turns ``text:FILE`` into ids and masks;
    ``normalization`` is the model's own image preprocessing (else the training split's statistics);
    ``classes`` the model's own class names in its output order (a Hugging Face config's id2label),
    which text and image labels are matched to by name.
    """
    name, _, arg = spec.partition(":")
    if name == "text":
        return _text(spec, Path(arg), tokenizer, inputs, seed, val_fraction, test_fraction, classes)
    if name == "images" or (":" not in spec and Path(spec).is_dir()):
        folder, _, shape = (arg if name == "images" else spec).partition(":")
        return _images(spec, Path(folder), parse_shape(shape, spec) if shape else None, inputs, normalization,
                       seed, val_fraction, test_fraction, classes)
    if name == "digits" and arg == "seq":
        return _digit_sequences(spec, seed, val_fraction, test_fraction)
    if name == "digits":
        return _digits(spec, parse_shape(arg, spec) if arg else None, seed, val_fraction, test_fraction)
    if name == "random":
        if not arg:
            raise UsageError(f"data spec '{spec}' needs a shape: random:CxHxW, e.g. random:3x224x224")
        return _random(spec, parse_shape(arg, spec), seed)
    if spec.lower().endswith(".npz"):
        return _npz(Path(spec), seed, val_fraction, test_fraction, inputs)
    from edgedl.data.source import is_code_spec

    if is_code_spec(spec):
        return _from_code(spec, seed, val_fraction, test_fraction, inputs)
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
                       "resize": "bilinear_align_corners", "raw": "8x8 grey, 0..16", "raw_range": [0, 16]},
    )


def _digit_sequences(spec, seed, val_fraction, test_fraction) -> Dataset:
    """The digits as sequences for sensor-window models (C x T, like an IMU window): each image's 8
    rows are 8 time steps of 8 features (its columns)."""
    images = _digits(spec, None, seed, val_fraction, test_fraction)
    for split in (images.train, images.val, images.test):
        split.x = np.ascontiguousarray(split.x[:, 0].transpose(0, 2, 1))  # (N, columns=C, rows=T)
    images.input_shape = (8, 8)
    images.normalization = None  # a sequence model's app feeds its sensor window as the training data was
    return images


def _random(spec, shape, seed, n: int = 64) -> Dataset:
    """Distinct random arrays for each split: ``n`` to calibrate on, ``n // 4`` held out."""
    rng = np.random.default_rng(seed)
    make = lambda count: Split(rng.standard_normal((count, *shape), dtype=np.float32), None)  # noqa: E731
    return Dataset(
        name=spec,
        train=make(n),
        val=make(n // 4),
        test=make(n // 4),
        input_shape=shape,
        num_classes=None,
        notes=["random data has no labels: accuracy is not available, latency is"],
        synthetic=True,
    )


def _unlabelled_split(n: int, seed: int, val_fraction: float):
    """Without labels there is no accuracy to report, so no test split is kept apart: the training
    split (calibration) keeps the rest, and the validation split is held out for agreement with the
    float model; ``test`` is the same held-out samples."""
    idx = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    return idx[n_val:], idx[:n_val], idx[:n_val]


def _from_code(spec: str, seed, val_fraction, test_fraction, inputs) -> Dataset:
    """Samples a user's function gives, split and shaped as an .npz of the same arrays would be."""
    from edgedl.data.source import load_samples

    arrays, y = load_samples(spec)
    if y is not None:
        arrays["y"] = y
    return _npz(Path(spec.rpartition(":")[0]), seed, val_fraction, test_fraction, inputs, files=arrays, name=spec)


def _npz(path: Path, seed, val_fraction, test_fraction, inputs=None, files: dict | None = None,
         name: str | None = None) -> Dataset:
    if files is None:
        if not path.is_file():
            raise UsageError(f"data file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as arrays:
                files = dict(arrays)
        except Exception as exc:
            raise UsageError(f"cannot read {path} as .npz: {exc}") from None
    named = {k: v for k, v in files.items() if k not in ("y", "labels")}
    y = files.get("y")
    if inputs is not None and (len(inputs) > 1 or "x" not in named):
        x: Any = resolve(named, inputs, source=str(path))
        sample_shape = tuple(x.first().shape[1:]) if (x.stacked or x.whole) else ()
    else:
        keys = ["x"] if "x" in named else list(named)
        if len(keys) != 1:
            raise UsageError(f"{path} has arrays {sorted(files)}; a single-input model needs 'x' (and optionally 'y' "
                             "labels and 'labels' class names); a multi-input model needs one array per input name")
        x = np.ascontiguousarray(named[keys[0]])
        if x.dtype == np.float64:
            x = x.astype(np.float32)
        sample_shape = tuple(x.shape[1:])
    n = len(x)
    notes = []
    if y is not None:
        y = np.asarray(y).astype(np.int64).reshape(-1)
        if len(y) != n:
            raise UsageError(f"{path}: x has {n} samples but y has {len(y)}")
        tr, va, te = stratified_split(y, seed, val_fraction, test_fraction)
        num_classes = int(y.max()) + 1
    else:
        tr, va, te = _unlabelled_split(n, seed, val_fraction)
        num_classes = None
        notes.append(f"{path.name} has no labels 'y': accuracy is not available; {len(tr)} samples calibrate, "
                     f"{len(va)} are held out to compare quantized and float outputs")
    take = (lambda idx: None) if y is None else (lambda idx: y[idx])
    normalization = None
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4 and x.shape[-1] in (1, 3, 4):
        # Raw HxWxC images: to NCHW float, scaled to 0..1 and standardised per channel with the
        # training split's statistics; the sidecar tells a device app the same recipe.
        x = x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        mean = x[tr].mean(axis=(0, 2, 3))
        std = x[tr].std(axis=(0, 2, 3)) + 1e-6
        x = np.ascontiguousarray((x - mean[:, None, None]) / std[:, None, None], dtype=np.float32)
        sample_shape = tuple(x.shape[1:])
        normalization = {"scale": 1 / 255, "mean": mean.tolist(), "std": std.tolist(), "resize": "bilinear",
                         "raw": "HxWxC uint8", "raw_range": [0, 255]}
    labels = [str(v) for v in files["labels"].tolist()] if "labels" in files else None
    if labels is not None and num_classes and len(labels) < num_classes:
        raise UsageError(f"{path}: 'labels' names {len(labels)} classes but y has {num_classes}")
    return Dataset(
        name=name or str(path),
        train=Split(x[tr], take(tr)),
        val=Split(x[va], take(va)),
        test=Split(x[te], take(te)),
        input_shape=sample_shape,
        num_classes=num_classes,
        labels=labels,
        normalization=normalization,
        notes=notes,
    )


def _split_arrays(n: int, y, seed, val_fraction, test_fraction):
    if y is not None:
        return stratified_split(y, seed, val_fraction, test_fraction)
    return _unlabelled_split(n, seed, val_fraction)


def class_order(found: list[str], classes: list[str] | None, spec: str) -> list[str]:
    """The class names in output order: the model's own (every name in the data must be one of
    them), else the data's names sorted (numerically when they are all numbers)."""
    names = sorted(set(found), key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))
    if classes is None:
        return names
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise UsageError(f"data spec '{spec}': classes {unknown[:5]} are not among the model's labels "
                         f"({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''}); name them as the model does")
    return list(classes)


def _text(spec: str, path: Path, tokenizer: dict | None, inputs, seed, val_fraction, test_fraction,
          classes=None) -> Dataset:
    from edgedl.data.text import read_lines, tokenize

    if tokenizer is None:
        raise UsageError(f"data spec '{spec}': text data needs a model with a tokenizer (a Hugging Face folder with "
                         "tokenizer.json); for other models give token ids as .npz keyed by input name")
    sentences, names = read_lines(path)
    arrays = tokenize(sentences, tokenizer, [i.name for i in inputs] if inputs else ["input_ids", "attention_mask"])
    labels = class_order(names, classes, spec) if names else None
    y = np.array([labels.index(n) for n in names], dtype=np.int64) if names else None
    tr, va, te = _split_arrays(len(sentences), y, seed, val_fraction, test_fraction)
    x = Samples(stacked=arrays)
    take = (lambda idx: None) if y is None else (lambda idx: y[idx])
    notes = [] if y is not None else [f"{path.name} has no labels (label<TAB>sentence lines): quality is agreement "
                                      "with the float model"]
    return Dataset(name=spec, train=Split(x[tr], take(tr)), val=Split(x[va], take(va)), test=Split(x[te], take(te)),
                   input_shape=(int(tokenizer["max_length"]),), num_classes=len(labels) if labels else None,
                   labels=labels, notes=notes)


def _images(spec: str, folder: Path, shape, inputs, normalization, seed, val_fraction, test_fraction,
            classes=None) -> Dataset:
    from edgedl.data.images import find, read

    if shape is None and inputs and len(inputs) == 1 and len(inputs[0].shape) == 4 and all(
            isinstance(d, int) for d in inputs[0].shape[1:]):
        shape = tuple(inputs[0].shape[1:])
    if shape is None:
        raise UsageError(f"data spec '{spec}': give the size the model takes, images:{folder}:3x224x224")
    files, y, labels = find(folder)
    x = read(files, shape[0], tuple(shape[1:]))
    if labels is not None:  # folder names, matched to the model's own order (or sorted, numbers as numbers)
        order = class_order(labels, classes, spec)
        y = [order.index(labels[i]) for i in y]
        labels = order
    y = np.array(y, dtype=np.int64) if y is not None else None
    tr, va, te = _split_arrays(len(files), y, seed, val_fraction, test_fraction)
    if normalization:
        mean = np.array(normalization["mean"], np.float32)[:, None, None]
        std = np.array(normalization["std"], np.float32)[:, None, None]
        x = (x * 255.0 * float(normalization["scale"]) - mean) / std
    else:
        mean, std = x[tr].mean(axis=(0, 2, 3)), x[tr].std(axis=(0, 2, 3)) + 1e-6
        x = (x - mean[:, None, None]) / std[:, None, None]
        normalization = {"scale": 1 / 255, "mean": mean.tolist(), "std": std.tolist(), "resize": "bilinear",
                         "raw": "HxWxC uint8", "raw_range": [0, 255]}
    x = np.ascontiguousarray(x, dtype=np.float32)
    take = (lambda idx: None) if y is None else (lambda idx: y[idx])
    notes = [] if y is not None else [f"{folder.name} has no class subfolders: quality is agreement with the float model"]
    return Dataset(name=spec, train=Split(x[tr], take(tr)), val=Split(x[va], take(va)), test=Split(x[te], take(te)),
                   input_shape=tuple(shape), num_classes=len(labels) if labels else None, labels=labels,
                   normalization=normalization, notes=notes)
