"""Recurrent sequence classifiers for sensor windows (IMU, audio features): C x T in, like cnn1d."""

from __future__ import annotations

import torch
from torch import nn

from edgedl.models.registry import register_model


class RNNClassifier(nn.Module):
    """A GRU or LSTM over the window's time steps; the last step's state classifies it."""

    def __init__(self, cell: str, num_classes: int, in_channels: int, hidden: int, layers: int):
        super().__init__()
        kind = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = kind(in_channels, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.transpose(1, 2))  # N x C x T -> N x T x C
        return self.head(out[:, -1])


@register_model(default_input=(6, 64))
def gru(num_classes=2, in_channels=6, hidden=64, layers=1):
    """GRU over a C x T window (e.g. 6-axis IMU): the last step's state to a linear head."""
    return RNNClassifier("gru", num_classes, in_channels, hidden, layers)


@register_model(default_input=(6, 64))
def lstm(num_classes=2, in_channels=6, hidden=64, layers=1):
    """LSTM over a C x T window (e.g. 6-axis IMU): the last step's state to a linear head."""
    return RNNClassifier("lstm", num_classes, in_channels, hidden, layers)
