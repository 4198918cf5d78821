"""A small 1-D convolutional network for sensor windows (IMU, audio features): C x T in."""

from __future__ import annotations

import torch
from torch import nn

from edgedl.models.registry import register_model


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, 5, stride, 2, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


class WithDifferences(nn.Module):
    """Appends each channel's absolute sample-to-sample change: a frozen sensor (no change at all)
    or a spiking one shows there far more plainly than in the raw signal."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = (x[:, :, 1:] - x[:, :, :-1]).abs()
        return torch.cat([x, torch.cat([diff[:, :, :1], diff], dim=2)], dim=1)


@register_model(default_input=(6, 64))
def cnn1d(num_classes=2, in_channels=6, widths=(16, 32, 64), differences=True, dropout=0.1):
    """1-D CNN over a C x T window (e.g. 6-axis IMU): strided conv blocks, global average pool."""
    layers: list[nn.Module] = [WithDifferences()] if differences else []
    cin = in_channels * (2 if differences else 1)
    for i, width in enumerate(widths):
        layers.append(_block(cin, width, 1 if i == 0 else 2))
        cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))
