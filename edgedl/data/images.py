"""A folder of images as data: ``images:FOLDER[:CxHxW]`` (or the folder itself). Subfolders are
classes (their sorted names the labels); images directly in the folder are unlabelled. Read with
Pillow, resized to the model's input size (bilinear) and normalised as the model's own
preprocessing says (a Hugging Face image processor), else with the training split's statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgedl.errors import MissingDependencyError, UsageError

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def find(folder: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """Image files, their class indices and class names (None when the folder has no class subfolders)."""
    if not folder.is_dir():
        raise UsageError(f"image folder not found: {folder}")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes:
        files, y = [], []
        for index, name in enumerate(classes):
            found = sorted(f for f in (folder / name).rglob("*") if f.suffix.lower() in SUFFIXES)
            files += found
            y += [index] * len(found)
        labels = classes
    else:
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in SUFFIXES)
        y, labels = None, None
    if not files:
        raise UsageError(f"{folder} holds no images ({', '.join(SUFFIXES)}), in class subfolders or directly")
    return files, y, labels


def read(files: list[Path], channels: int, size: tuple[int, int]) -> np.ndarray:
    """(N, C, H, W) float32 in 0..1, resized bilinearly with Pillow."""
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError("Pillow", "data", "Reading images") from None
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise UsageError(f"images are read as 1 (grey) or 3 (RGB) channels; the model takes {channels}")
    out = np.empty((len(files), channels, *size), dtype=np.float32)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert(mode).resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32)
        except Exception as exc:
            raise UsageError(f"cannot read image {path}: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from None
        out[i] = pixels.reshape(size[0], size[1], channels).transpose(2, 0, 1) / 255.0
    return out
