"""A convolutional autoencoder for anomaly detection: it learns to reconstruct normal inputs, and
the reconstruction error is the anomaly score (high: unlike what it was trained on)."""

from __future__ import annotations

from torch import nn

from edgedl.models.registry import register_model


@register_model(default_input=(1, 8, 8), task="reconstruction")
def conv_autoencoder(num_classes=None, in_channels=1, input_size=(8, 8), width=16, code=8):
    """Conv encoder (two stride-2 convs) to a ``code``-channel map, transposed-conv decoder back to C x H x W."""
    del num_classes  # it reconstructs its input: no classes
    height, width_px = (input_size, input_size) if isinstance(input_size, int) else input_size
    if height % 4 or width_px % 4:
        from edgedl.errors import UsageError

        raise UsageError(f"conv_autoencoder needs a height and width divisible by 4, got {height}x{width_px}")
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, 2, 1), nn.ReLU(),
        nn.Conv2d(width, code, 3, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(code, width, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(width, in_channels, 4, 2, 1),
    )
