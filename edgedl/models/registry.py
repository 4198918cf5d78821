"""Model registry: ``@register_model`` on a factory, then ``create_model(name, ...)`` (as timm)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

from edgedl.errors import UsageError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable
    default_input: tuple[int, ...]  # (C, H, W) the architecture was designed for; (C, T) for 1-D models
    description: str
    task: str = "classification"  # or "reconstruction": trained, judged and evaluated on its own input


_REGISTRY: dict[str, ModelEntry] = {}
# The built-in models and the module that registers each: a name is checked, and only its module
# imported (they import torch), without importing the others (tests/test_second_hour.py holds it to them).
BUILTIN = {"cnn1d": "cnn1d", "conv_autoencoder": "autoencoder", "gru": "rnn", "lstm": "rnn", "mlp": "mlp", "mobilenetv2_050": "mobilenet",
           "mobilenetv2_100": "mobilenet", "resnet8": "resnet", "resnet18": "resnet", "vit_tiny": "vit"}


def register_model(name: str | None = None, *, default_input=(3, 224, 224), description: str = "",
                   task: str = "classification"):
    """Register a factory ``f(num_classes, in_channels, input_size, **kw) -> nn.Module``."""

    def wrap(fn: Callable) -> Callable:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model '{key}' is registered twice")
        doc = description or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        _REGISTRY[key] = ModelEntry(key, fn, tuple(default_input), doc, task)
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, or containing it when it has no wildcard, sorted."""
    _ensure_builtin()
    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def check_name(name: str) -> None:
    """Refuse an unknown model name at once, with the nearest known name, before torch is imported."""
    import difflib

    known = sorted(set(BUILTIN) | set(_REGISTRY))
    if name in known:
        return
    lower = {k.lower(): k for k in known}
    guess = [lower[name.lower()]] if name.lower() in lower else difflib.get_close_matches(name, known, n=1)
    raise UsageError(f"unknown model '{name}'" + (f" (did you mean '{guess[0]}'?)" if guess else "")
                     + f"; registered models: {', '.join(known)} (edgedl models lists them)")


def get_entry(name: str) -> ModelEntry:
    check_name(name)
    if name not in _REGISTRY:
        import importlib

        importlib.import_module(f"edgedl.models.{BUILTIN[name]}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs):
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: size of the classifier output.
        in_channels: channels of the input image (or features, for 1-D models).
        **kwargs: architecture options, e.g. ``input_size=(8, 8)`` for ``mlp``.
    """
    entry = get_entry(name)
    if entry.task != "classification":
        kwargs.pop("num_classes", None)
        num_classes = None
    try:
        return entry.factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as exc:
        raise UsageError(f"model '{name}' does not take these options: {exc}") from None


def _ensure_builtin() -> None:
    # Importing the definitions registers them; done lazily so the registry module stays cheap.
    from edgedl.models import autoencoder, cnn1d, mlp, mobilenet, resnet, rnn, vit  # noqa: F401
