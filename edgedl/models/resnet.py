"""ResNets: a CIFAR-style ResNet-8 for small inputs and the ImageNet ResNet-18.

Layer names follow torchvision's, so its ResNet-18 state_dict loads into ``resnet18``.
"""

from __future__ import annotations

import torch
from torch import nn

from edgedl.models.registry import register_model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet of BasicBlocks. ``stem='imagenet'`` is 7x7/2 + max-pool, ``'cifar'`` is 3x3/1."""

    def __init__(self, blocks, widths, num_classes=10, in_channels=3, stem="imagenet"):
        super().__init__()
        first = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, first, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, first, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(first)
        self.relu = nn.ReLU(inplace=True)
        layers, in_planes = [], first
        for i, (n, width) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(in_planes, width, stride)]
            stage += [BasicBlock(width, width) for _ in range(n - 1)]
            layers.append(nn.Sequential(*stage))
            in_planes = width
        self.layer1, self.layer2, self.layer3 = layers[:3]
        self.layer4 = layers[3] if len(layers) > 3 else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model(default_input=(3, 32, 32))
def resnet8(num_classes=10, in_channels=3, input_size=None, width=16):
    """ResNet-8, CIFAR-style (3x3 stem, 3 stages of one block): small inputs, 78k parameters."""
    del input_size  # global pooling: any input size of at least 4x4 works
    return ResNet([1, 1, 1], [width, width * 2, width * 4], num_classes, in_channels, stem="cifar")


@register_model(default_input=(3, 224, 224))
def resnet18(num_classes=1000, in_channels=3, input_size=None):
    """ResNet-18, ImageNet-style (7x7/2 stem and max-pool): 224x224 inputs, 11.7M parameters."""
    del input_size
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels, stem="imagenet")
