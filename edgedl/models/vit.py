"""A small vision transformer built from a transformers config (no download): patches, 2 to 4
encoder layers, a classifier on the [CLS] token. The same module a Hugging Face ViT folder
imports as, so both go through the same stages."""

from __future__ import annotations

from edgedl.models.registry import register_model


@register_model(default_input=(3, 32, 32))
def vit_tiny(num_classes=10, in_channels=3, input_size=(32, 32), patch_size=4, hidden=64, layers=2, heads=4):
    """ViT (transformers' ViTForImageClassification from a config): patch 4, hidden 64, 2 layers, 4 heads."""
    from edgedl.models.importers.hf import quiet_transformers, wrappers

    try:
        quiet_transformers()  # before the classes import torchao
        from transformers import ViTConfig, ViTForImageClassification
    except ImportError:
        from edgedl.errors import MissingDependencyError

        raise MissingDependencyError("transformers", "hf", "The vit_tiny model") from None
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    config = ViTConfig(image_size=list(size), patch_size=patch_size, num_channels=in_channels, hidden_size=hidden,
                       num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=hidden * 2,
                       num_labels=num_classes)
    return wrappers()[1](ViTForImageClassification(config), "image-classification")
