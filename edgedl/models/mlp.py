"""A multilayer perceptron over flattened inputs."""

from __future__ import annotations

import math

from torch import nn

from edgedl.models.registry import register_model


@register_model(default_input=(1, 8, 8))
def mlp(num_classes=10, in_channels=1, input_size=(8, 8), hidden=(128, 64), dropout=0.1):
    """MLP over a flattened C x H x W input; ``input_size`` is (H, W) or one int."""
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    features = in_channels * math.prod(input_size)
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(features, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)
