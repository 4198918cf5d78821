"""Record and restore the shapes of a structurally pruned model without pickling code.

A pruned module has the same class tree as its architecture but fewer channels. The checkpoint
stores each layer's integer shape attributes; loading rebuilds the architecture, applies them,
resizes parameters and buffers to the saved shapes, then loads the state_dict. Everything stays
plain data, so ``torch.load(weights_only=True)`` still opens it.
"""

from __future__ import annotations

from typing import Any

# Integer attributes that describe a layer's shape (Conv*, Linear, BatchNorm*, GroupNorm, ...).
SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
               "num_channels", "num_groups", "embedding_dim", "num_embeddings", "hidden_size", "input_size",
               "num_attention_heads", "all_head_size")  # a transformer's attention after heads are pruned


def structure_of(model: Any) -> dict[str, dict[str, int]]:
    """Shape attributes of every layer that has them, keyed by module name."""
    out = {}
    for name, module in model.named_modules():
        attrs = {a: getattr(module, a) for a in SHAPE_ATTRS if isinstance(getattr(module, a, None), int)}
        if attrs:
            out[name] = attrs
    return out


def apply_structure(model: Any, structure: dict[str, dict[str, int]], state_dict: dict) -> None:
    """Resize ``model`` in place to the saved structure so that ``state_dict`` loads into it."""
    import torch

    modules = dict(model.named_modules())
    for name, attrs in structure.items():
        module = modules.get(name)
        if module is not None:
            for attr, value in attrs.items():
                setattr(module, attr, int(value))
    for key, tensor in state_dict.items():
        owner_name, _, leaf = key.rpartition(".")
        owner = modules.get(owner_name)
        if owner is None:
            continue
        current = getattr(owner, leaf, None)
        if isinstance(current, torch.Tensor) and current.shape != tensor.shape:
            fresh = torch.empty(tensor.shape, dtype=current.dtype)
            if isinstance(current, torch.nn.Parameter):
                setattr(owner, leaf, torch.nn.Parameter(fresh, requires_grad=current.requires_grad))
            else:
                owner._buffers[leaf] = fresh
