"""2:4 semi-structured sparsity: in every group of 4 consecutive input weights, 2 are zero.

Ampere and Orin GPUs run such weights on sparse tensor cores when TensorRT is told to
(``BuilderFlag.SPARSE_WEIGHTS``); the artifact's sidecar records the pattern for the builder.
Imported only where torch is already in use.
"""

from __future__ import annotations

import torch
from torch.nn.utils import parametrize


class _Masked(torch.nn.Module):
    """Parametrization: the weight times a fixed 0/1 mask (gradients reach only kept weights)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def mask_2_4(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest-magnitude weights of every 4 along the input dimension."""
    groups = weight.detach().reshape(weight.shape[0], -1, 4).abs()
    mask = torch.zeros_like(groups).scatter_(-1, groups.topk(2, dim=-1).indices, 1.0)
    return mask.reshape(weight.shape)


def eligible_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Dense Conv2d/Linear layers whose inputs per output are a multiple of 4."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and getattr(m, "groups", 1) == 1
            and m.weight[0].numel() % 4 == 0]


def apply_2_4(model: torch.nn.Module, skip: tuple[torch.nn.Module, ...] = ()) -> list[str]:
    """Mask eligible layers (but ``skip``) to the 2:4 pattern; the masks hold through training."""
    names = []
    for name, module in eligible_layers(model):
        if module not in skip:
            parametrize.register_parametrization(module, "weight", _Masked(mask_2_4(module.weight)))
            names.append(name)
    return names


def finalize_2_4(model: torch.nn.Module) -> None:
    """Bake the masks into plain weights (zeros where masked) so the model exports normally."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

