"""Pre- and post-processing from the sidecar, in numpy alone: raw image in, model input out.

The sidecar's ``normalization`` says how the training data was made from raw samples:
``model_input = (resize(raw) * scale - mean) / std`` per channel, where ``resize`` is
``bilinear_align_corners`` (what scipy's zoom did to the digits) or ``bilinear`` (half-pixel
centres, as OpenCV and PIL). Every artifact of one model carries the same block, so
``Runner.predict`` gives the same answer whatever the file's format and precision.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edgedl.errors import UsageError

RESIZE_METHODS = ("bilinear", "bilinear_align_corners")


class Prediction(NamedTuple):
    """What ``predict()`` returns. For a classifier: the class, its label and score, and every
    class's probability; for another model these are None and ``output`` holds the result."""

    class_id: int | None
    label: str | None
    score: float | None
    scores: np.ndarray | None
    output: np.ndarray  # the model's raw (dequantized) output for this sample


class InputRangeWarning(UserWarning):
    """An image's values lie outside the range the model's training data came in."""


def check_range(image: np.ndarray, normalization: dict | None) -> None:
    """Warn when ``image`` spans values outside the sidecar's ``raw_range`` (a uint8 camera frame
    fed to a model trained on 0..16 digits scores badly, silently otherwise)."""
    span = (normalization or {}).get("raw_range")
    if not span:
        return
    img = np.asarray(image)
    low, high = float(img.min()), float(img.max())
    lo, hi = span
    margin = 0.01 * (hi - lo)
    if low < lo - margin or high > hi + margin:
        import warnings

        warnings.warn(f"the image's values span {low:g}..{high:g}, but the model was trained on raw inputs in "
                      f"{lo:g}..{hi:g} ({normalization.get('raw', 'see the sidecar')}); scale the image to that range",
                      InputRangeWarning, stacklevel=3)


def _axis_weights(size_in: int, size_out: int, align_corners: bool):
    if align_corners:
        pos = np.arange(size_out, dtype=np.float64) * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    else:
        pos = (np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5
    pos = np.clip(pos, 0, size_in - 1)
    low = np.floor(pos).astype(np.intp)
    high = np.minimum(low + 1, size_in - 1)
    frac = (pos - low).astype(np.float32)
    return low, high, frac


def resize(image: np.ndarray, height: int, width: int, method: str = "bilinear") -> np.ndarray:
    """Bilinear resize of an HxWxC float32 image."""
    if method not in RESIZE_METHODS:
        raise UsageError(f"unknown resize method '{method}'; use one of {', '.join(RESIZE_METHODS)}")
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    align = method == "bilinear_align_corners"
    y0, y1, fy = _axis_weights(h, height, align)
    x0, x1, fx = _axis_weights(w, width, align)
    fy, fx = fy[:, None, None], fx[None, :, None]
    top = image[y0][:, x0] * (1 - fx) + image[y0][:, x1] * fx
    bottom = image[y1][:, x0] * (1 - fx) + image[y1][:, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def image_to_input(image: np.ndarray, shape: tuple, layout: str | None, normalization: dict | None,
                   name: str = "input") -> np.ndarray:
    """A raw HxW or HxWxC image (uint8 or float) to a float32 batch of one for a 4-D input."""
    if len(shape) != 4:
        raise UsageError(f"predict() takes images; input '{name}' has rank {len(shape)}, so call the model "
                         "with a prepared array instead")
    layout = layout or "NCHW"
    if layout == "NCHW":
        channels, height, width = shape[1], shape[2], shape[3]
    else:
        height, width, channels = shape[1], shape[2], shape[3]
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise UsageError(f"predict() takes one HxW or HxWxC image, got an array of shape {img.shape}")
    img = img.astype(np.float32, copy=False)
    have = img.shape[2]
    if have == 4 and channels != 4:  # drop alpha
        img, have = img[:, :, :3], 3
    if have != channels:
        if have == 1:
            img = np.repeat(img, channels, axis=2)
        elif have == 3 and channels == 1:
            img = img @ np.array([[0.299], [0.587], [0.114]], np.float32)  # luminance
        else:
            raise UsageError(f"the image has {have} channels, input '{name}' takes {channels}")
    norm = normalization or {}
    if isinstance(height, int) and isinstance(width, int):
        img = resize(img, height, width, norm.get("resize", "bilinear"))
    img = img * np.float32(norm.get("scale", 1.0))
    if norm.get("mean") is not None:
        img = img - np.asarray(norm["mean"], np.float32)
    if norm.get("std") is not None:
        img = img / np.asarray(norm["std"], np.float32)
    if layout == "NCHW":
        img = img.transpose(2, 0, 1)
    return np.ascontiguousarray(img[None], dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def to_prediction(output: np.ndarray, labels: list[str] | None) -> Prediction:
    """Softmax over one sample's logits (or probabilities), best class first."""
    row = np.asarray(output, np.float32).reshape(-1)
    probs = softmax(row)
    best = int(probs.argmax())
    label = labels[best] if labels and best < len(labels) else str(best)
    return Prediction(best, label, float(probs[best]), probs, row)
