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


class DetectorV5(nn.Module):
    """YOLOv5's layout: per level, Concat(xy, wh, conf) on the last axis, a Reshape, then one Concat
    across levels; [batch, anchors, 4 + classes]."""

    def __init__(self, classes: int = 6, image: int = 320):
        super().__init__()
        self.image = float(image)
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU())
        self.levels = nn.ModuleList([nn.Conv2d(16, 16, 3, s, 1) for s in (2, 4)])
        self.heads = nn.ModuleList([nn.Conv2d(16, 4 + classes, 1) for _ in range(2)])

    def forward(self, x):
        f = self.stem(x)
        outs = []
        for level, head in zip(self.levels, self.heads):
            p = head(torch.relu(level(f))).flatten(2).transpose(1, 2)  # [batch, anchors, 4 + classes]
            xy = torch.sigmoid(p[..., :2]) * self.image
            wh = torch.sigmoid(p[..., 2:4]) * self.image
            conf = torch.sigmoid(p[..., 4:])
            outs.append(torch.cat([xy, wh, conf], -1).reshape(x.shape[0], -1, p.shape[-1]))
        return torch.cat(outs, 1)


def build_v5(classes: int = 6, **_):
    torch.manual_seed(0)
    return DetectorV5(classes).eval()


class SplitDetector(Detector):
    """The same head with boxes and scores as two outputs, as SSD, RetinaNet and PicoDet export them
    (and most .tflite detectors: boxes, classes, scores, count)."""

    def forward(self, x):
        f = self.backbone(x)
        return torch.sigmoid(self.box(f)).flatten(2) * self.image, torch.sigmoid(self.cls(f)).flatten(2)


def build_split(classes: int = 20, **_):
    torch.manual_seed(0)
    return SplitDetector(classes).eval()
