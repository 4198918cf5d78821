"""Model registry, built-in architectures and model-spec loading."""

from edgedl.models.registry import create_model, get_entry, list_models, register_model
from edgedl.models.spec import LoadedModel, load_checkpoint, load_model, save_checkpoint

__all__ = [
    "create_model",
    "get_entry",
    "list_models",
    "register_model",
    "LoadedModel",
    "load_model",
    "load_checkpoint",
    "save_checkpoint",
]
