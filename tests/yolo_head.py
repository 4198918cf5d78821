"""A YOLO-style detector head the tests build (no weights to download): one output of shape
[batch, 4 + classes, anchors] holding box coordinates in pixels (0..320) and class scores (0..1) in
the same tensor, joined by a Concat, as YOLOv8's exported head is. Its weights are seeded, not
trained: the class scores sit around 0.5, which one INT8 range spent on 0..320 rounds to 0."""

from __future__ import annotations

import torch
from torch import nn


class Detector(nn.Module):
    def __init__(self, classes: int = 20, image: int = 320):
        super().__init__()
        self.image = float(image)
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU())
        self.box = nn.Conv2d(32, 4, 1)
        self.cls = nn.Conv2d(32, classes, 1)

    def forward(self, x):
        f = self.backbone(x)
        boxes = torch.sigmoid(self.box(f)).flatten(2) * self.image  # x, y, w, h in pixels
        scores = torch.sigmoid(self.cls(f)).flatten(2)  # one score per class and anchor
        return torch.cat([boxes, scores], 1)


def build(classes: int = 20, **_):
    torch.manual_seed(0)
    return Detector(classes).eval()


def write_images(folder, count: int = 24, size: int = 64):
    """Crops of scikit-learn's two sample photographs (real images), as PNG files."""
    from pathlib import Path

    import matplotlib.image
    import numpy as np
    from sklearn.datasets import load_sample_images

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = photos[i % len(photos)]
        top, left = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
        matplotlib.image.imsave(folder / f"crop{i:02d}.png", photo[top:top + size, left:left + size])
    return folder
