"""Model specs: a registry name, ``file.py:factory``, ``package.module:factory``, or a checkpoint.

A checkpoint is what ``edgedl train`` writes: the architecture spec and its options, the
state_dict and training metadata. It loads with ``torch.load(weights_only=True)``, so opening a
checkpoint never runs code from it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedl._fs import atomic_write_bytes
from edgedl.errors import EdgedlError, UsageError

CHECKPOINT_VERSION = 1
CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass
class LoadedModel:
    """A torch module and how to rebuild it."""

    module: Any
    arch: dict  # {"spec": str, "kwargs": dict}: enough to rebuild the architecture
    checkpoint: dict = field(default_factory=dict)  # metadata of the checkpoint it came from


def model_stem(spec: str) -> str:
    """A short file-name-safe name for a model spec: ``resnet8``, ``build`` (file.py:build), ``model``."""
    if ":" in spec and not spec.lower().endswith((".pt", ".pth", ".onnx")):
        base = spec.rpartition(":")[2]
    else:
        base = Path(spec).name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]+", "_", base) or "model"


def is_checkpoint_spec(spec: str) -> bool:
    return spec.lower().endswith(CHECKPOINT_SUFFIXES)


def load_model(spec: str, **kwargs: Any) -> LoadedModel:
    """Resolve a model spec to a torch module.

    Args:
        spec: registry name, ``path/to/file.py:factory``, ``package.module:factory`` or an
            edgedl checkpoint (``.pt``).
        **kwargs: architecture options (``num_classes``, ``in_channels``, ``input_size``, ...).
            A checkpoint ignores them: its architecture is fixed.
    """
    if is_checkpoint_spec(spec):
        return load_checkpoint(spec)
    if ":" in spec:
        return LoadedModel(_from_factory(spec, kwargs), {"spec": _canonical(spec), "kwargs": kwargs})
    from edgedl.models.registry import create_model

    return LoadedModel(create_model(spec, **kwargs), {"spec": spec, "kwargs": kwargs})


def _canonical(spec: str) -> str:
    # A file path is stored absolute so that a checkpoint still finds it from another folder.
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        return f"{Path(target).resolve()}:{attr}"
    return spec


def _from_factory(spec: str, kwargs: dict) -> Any:
    import torch

    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise UsageError(f"model spec '{spec}' must look like path/to/file.py:factory or module:factory")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"model file not found: {path}")
        name = f"edgedl_user_{abs(hash(str(path.resolve())))}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:
            raise EdgedlError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"cannot import module '{target}' for model spec '{spec}': {exc}") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise UsageError(f"'{attr}' is not a callable in {target}")
    # Pass only the options the factory declares, so plain `def build(): ...` works too.
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = {k: v for k, v in kwargs.items() if takes_any or k in params}
    model = factory(**accepted)
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def save_checkpoint(path: str | Path, model: Any, arch: dict, **meta: Any) -> None:
    """Write an edgedl checkpoint atomically (architecture + state_dict + metadata)."""
    import torch

    from edgedl.models.structure import structure_of

    payload = {
        "edgedl_checkpoint": CHECKPOINT_VERSION,
        "arch": _plain(arch),
        "structure": structure_of(model),  # restores pruned channel counts on load
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": _plain(meta),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> LoadedModel:
    """Load an edgedl checkpoint with ``weights_only=True`` and rebuild its model."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EdgedlError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(payload, dict) or payload.get("edgedl_checkpoint") != CHECKPOINT_VERSION:
        raise UsageError(
            f"{path} is not an edgedl checkpoint; for a bare state_dict, name the architecture "
            "as the model and load the weights in your own factory (file.py:factory)"
        )
    arch = payload["arch"]
    kwargs = dict(arch.get("kwargs") or {})
    if "input_size" in kwargs and isinstance(kwargs["input_size"], list):
        kwargs["input_size"] = tuple(kwargs["input_size"])
    built = load_model(arch["spec"], **kwargs)
    if payload.get("structure"):
        from edgedl.models.structure import apply_structure

        apply_structure(built.module, payload["structure"], payload["state_dict"])
    try:
        built.module.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise EdgedlError(f"checkpoint {path} does not fit its architecture: {first}") from None
    built.checkpoint = dict(payload.get("meta") or {})
    return built


def _plain(obj: Any) -> Any:
    # weights_only loading accepts plain containers and scalars: turn tuples into lists.
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
