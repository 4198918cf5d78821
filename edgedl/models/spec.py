"""Model specs and edgedl's checkpoint format.

A spec is any form an importer claims (:mod:`edgedl.models.importers`: a registry name,
``file.py:factory``, a checkpoint, TorchScript, ``.pt2``, a Hugging Face folder, ONNX).

A checkpoint is what ``edgedl train`` writes: the architecture spec and its options, the
state_dict and training metadata, read with ``torch.load(weights_only=True)`` (no pickled code).
The architecture it names is built from edgedl's registry; a factory it names (Python code) runs
only when the caller trusts it (``trust_model_code``) or names a factory itself (``factory``), so
opening a checkpoint never runs code the file names.
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
from edgedl.errors import EdgedlError, TrustError, UsageError

# 2: factory paths relative to the checkpoint, input_shape always recorded. 1 still loads.
CHECKPOINT_VERSION = 2
CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass
class LoadedModel:
    """A torch module and how to rebuild it."""

    module: Any
    arch: dict  # {"spec": str, "kwargs": dict}: enough to rebuild the architecture
    checkpoint: dict = field(default_factory=dict)  # metadata of the checkpoint it came from
    kind: str = "python"  # what the module is: python (its class), script (TorchScript), graph (.pt2), pickle
    notes: list = field(default_factory=list)  # what loading did that the run should say
    inputs: list | None = None  # the model's own inputs (TensorInfos) when it declares them
    hf: dict | None = None  # a Hugging Face folder's task, tokenizer or image preprocessing


def model_stem(spec: str) -> str:
    """A short file-name-safe name for a model spec: ``resnet8``, ``mynet`` (mynet.py:build), the
    file's or folder's name."""
    from edgedl.models.importers import importer_for

    base = importer_for(spec).stem(spec)
    return re.sub(r"[^A-Za-z0-9_-]+", "_", base) or "model"


def check_spec(spec: str) -> None:
    """What can be checked of a model spec without reading it: a registry name is known (with the
    nearest name when not, and without importing torch), a factory's file or a model file exists.
    Its importer's own checks (what the file holds, trust) come with the recipe's
    (``api._check_model_file``)."""
    from edgedl.models.importers import importer_for

    if spec.lower().endswith(".py"):
        raise UsageError(f"--model {spec}: name the factory in the file too, e.g. {spec}:build")
    importer = importer_for(spec)
    if importer.name in ("registry", "factory"):
        importer.check(spec)
    elif not Path(spec).exists():
        raise UsageError(f"model file not found: {spec}")


def load_model(spec: str, trust_model_code: bool = False, weights: str | None = None, **kwargs: Any) -> LoadedModel:
    """Resolve a model spec to a torch module through its importer.

    Args:
        spec: registry name, ``path/to/file.py:factory``, ``package.module:factory``, an edgedl
            checkpoint, a TorchScript file, a ``.pt2`` or a Hugging Face folder. A factory named
            here runs: the caller names it.
        trust_model_code: open forms that run code (TorchScript, pickles, a factory a checkpoint names).
        weights: a state_dict, safetensors file or edgedl checkpoint the architecture ``spec`` takes.
        **kwargs: architecture options (``num_classes``, ``in_channels``, ``input_size``, ...).
            Files with their own architecture ignore them.
    """
    from edgedl.models.importers import importer_for

    loaded = importer_for(spec).load(spec, trust=trust_model_code, weights=weights, kwargs=kwargs)
    if loaded is None:
        raise UsageError(f"'{spec}' is an ONNX file: it has no PyTorch module to load")
    return loaded


def _canonical(spec: str) -> str:
    # A file path is resolved here; save_checkpoint stores it relative to the checkpoint.
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        return f"{Path(target).resolve()}:{attr}"
    return spec


def is_factory_spec(spec: str) -> bool:
    """``file.py:fn`` or ``module:fn``: Python code that builds the model."""
    from edgedl.models.importers.factory import FactoryImporter

    return FactoryImporter.matches(spec)


def _relative_to(spec: str, folder: Path) -> str:
    """A ``file.py:fn`` spec with its path relative to ``folder`` (no trainer's folders leak, and the
    pair moves together); other specs unchanged."""
    import os

    target, _, attr = spec.rpartition(":")
    if not target.endswith(".py"):
        from edgedl.models.importers import importer_for

        if ":" not in spec and Path(spec).exists() and importer_for(spec).name not in ("registry", "factory"):
            # a file or folder the model came from (TorchScript, HF), written ./name so that it reads as a path
            relative = Path(os.path.relpath(Path(spec).resolve(), folder.resolve())).as_posix()
            return relative if "/" in relative else f"./{relative}"
        return spec
    return f"{Path(os.path.relpath(Path(target).resolve(), folder.resolve())).as_posix()}:{attr}"


def _resolved_from(spec: str, folder: Path) -> str:
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py") and not Path(target).is_absolute():
        return f"{(folder / target).resolve()}:{attr}"
    if ":" not in spec and ("/" in spec or "." in spec) and not Path(spec).is_absolute():
        return str((folder / spec).resolve())  # a path; registry names hold neither / nor .
    return spec


def _import_target(target: str, spec: str, what: str = "file") -> Any:
    """The module of a ``file.py:fn`` or ``module:fn`` spec, imported (its code runs: the caller checked
    that the user named it or trusts it)."""
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"{what} not found: {path} (from {spec})")
        stat = path.stat()  # an edited file is imported afresh (a notebook, an API session)
        name = f"edgedl_user_{abs(hash((str(path.resolve()), stat.st_mtime_ns, stat.st_size)))}"
        if name in sys.modules:
            return sys.modules[name]
        mod_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise EdgedlError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
        return module
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise UsageError(f"cannot import module '{target}' for '{spec}': {exc}") from None


def _from_factory(spec: str, kwargs: dict) -> Any:
    import torch

    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise UsageError(f"model spec '{spec}' must look like path/to/file.py:factory or module:factory")
    module = _import_target(target, spec, "model file")
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
    """Write an edgedl checkpoint atomically (architecture + state_dict + metadata).

    A factory's file path is stored relative to the checkpoint's folder.
    """
    import torch

    from edgedl.models.structure import structure_of

    path = Path(path)
    arch = dict(arch, spec=_relative_to(arch["spec"], path.parent))
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


def read_checkpoint(path: str | Path, payload: dict | None = None) -> dict:
    """The checkpoint's payload, read with ``weights_only=True``: tensors and plain values, no code.
    ``payload``: what the caller already read from ``path`` that way (checked, not read again)."""
    import torch

    from edgedl.models.importers import is_torchscript_zip, zip_names

    path = Path(path)
    if payload is not None:
        return _checked(payload, path)
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    if is_torchscript_zip(zip_names(path)):
        raise TrustError(f"{path.name} is a TorchScript program, not a checkpoint, and opening it runs its code: "
                         f"edgedl takes it as a model only when trusted (edgedl compress --model {path.name} "
                         "--trust-model-code)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from edgedl.models.importers.factory import unpickle_trusted

        unpickle_trusted(path, exc, trust=False)  # one line: pickled objects (not opened) or not a torch file
    return _checked(payload, path)


def _checked(payload: Any, path: Path) -> dict:
    """An edgedl checkpoint's payload whose format this edgedl reads, or one line saying why not."""
    version = payload.get("edgedl_checkpoint") if isinstance(payload, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise UsageError(
            f"{path} is not an edgedl checkpoint; for a bare state_dict, name the architecture "
            "as the model and load the weights in your own factory (file.py:factory)"
        )
    if version > CHECKPOINT_VERSION:
        from edgedl import __version__

        raise EdgedlError(f"{path.name} was written by a newer edgedl (checkpoint format {version}); edgedl "
                          f"{__version__} reads formats 1 to {CHECKPOINT_VERSION}: upgrade edgedl")
    return payload


def checkpoint_input_shape(payload: dict) -> list | None:
    """The per-sample input shape a checkpoint records; format 1 files written by ``edgedl train``
    did not, so it is rebuilt from the architecture options the data gave (channels, input size)."""
    meta = payload.get("meta") or {}
    if meta.get("input_shape"):
        return list(meta["input_shape"])
    kwargs = (payload.get("arch") or {}).get("kwargs") or {}
    size = kwargs.get("input_size")
    if kwargs.get("in_channels") and size:
        return [int(kwargs["in_channels"]), *([size, size] if isinstance(size, int) else list(size))]
    return None


def refuse_untrusted_factory(path: str | Path, spec: str) -> None:
    """The refusal for a checkpoint that names Python code to build its architecture."""
    path = Path(path)
    what = "the Python factory" if is_factory_spec(spec) else "the program"
    raise TrustError(
        f"{path.name} names {what} '{spec}' to build its architecture, and edgedl does not run "
        f"code a file names: pass --trust-model-code (trust_model_code=True) if you trust that code, or name "
        f"the factory yourself: --model {spec} --weights {path}")


_LOADING: set = set()  # checkpoints being rebuilt now: one that names itself, through others, is refused


def load_checkpoint(path: str | Path, trust_model_code: bool = False, factory: str | None = None,
                    payload: dict | None = None) -> LoadedModel:
    """Load an edgedl checkpoint and rebuild its model.

    Args:
        path: the ``.pt`` file.
        trust_model_code: run the factory the checkpoint names, if it names one.
        factory: build the architecture with this factory (the caller names the code) and load the
            checkpoint's weights into it.
        payload: the checkpoint as the caller already read it (``weights_only``), not read again.

    Raises:
        TrustError: the checkpoint names a factory and neither argument says to run code.
    """
    path = Path(path)
    payload = read_checkpoint(path, payload)
    arch = dict(payload["arch"])
    kwargs = dict(arch.get("kwargs") or {})
    if "input_size" in kwargs and isinstance(kwargs["input_size"], list):
        kwargs["input_size"] = tuple(kwargs["input_size"])
    spec = str(arch.get("spec", ""))
    if factory is not None:
        from edgedl.models.importers import importer_for

        if factory.lower().endswith(CHECKPOINT_SUFFIXES) and importer_for(factory).name == "checkpoint":
            raise UsageError(f"--model {factory} must be an architecture (file.py:fn, module:fn or a registry name) "
                             "to take --weights")
        built = _rebuild(_canonical(factory) if is_factory_spec(factory) else factory, kwargs, trust=True)
    else:
        from edgedl.models.importers import importer_for

        named, spec = spec, _resolved_from(spec, path.parent)
        importer = importer_for(spec)
        if importer.name == "checkpoint" and Path(spec).resolve() in _LOADING | {path.resolve()}:
            raise UsageError(f"{path.name} names a checkpoint that leads back to itself ({named}) as its architecture")
        # another .pt as the architecture is only a pickled module (which unpickles): trusted, like code
        if (is_factory_spec(spec) or importer.runs_code or importer.name == "checkpoint") and not trust_model_code:
            refuse_untrusted_factory(path, named)
        _LOADING.add(path.resolve())
        try:
            built = _rebuild(spec, kwargs, trust=trust_model_code)
        finally:
            _LOADING.discard(path.resolve())
    if payload.get("structure"):
        from edgedl.models.structure import apply_structure

        apply_structure(built.module, payload["structure"], payload["state_dict"])
    try:
        built.module.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise EdgedlError(f"checkpoint {path} does not fit its architecture: {first}") from None
    built.checkpoint = dict(payload.get("meta") or {})
    if not built.checkpoint.get("input_shape"):
        shape = checkpoint_input_shape(payload)
        if shape:
            built.checkpoint["input_shape"] = shape
    return built


def _rebuild(spec: str, kwargs: dict, trust: bool) -> LoadedModel:
    """The architecture a checkpoint names, built by its importer (weights loaded after)."""
    from edgedl.models.importers import importer_for

    importer = importer_for(spec)
    if is_factory_spec(spec):
        return LoadedModel(_from_factory(spec, kwargs), {"spec": spec, "kwargs": kwargs})
    built = importer.load(spec, trust=trust, kwargs=kwargs)
    if built is None:
        raise UsageError(f"a checkpoint cannot rebuild its architecture from the ONNX file {spec}")
    built.arch = {"spec": built.arch["spec"], "kwargs": kwargs or built.arch.get("kwargs", {})}
    return built


def _plain(obj: Any) -> Any:
    # weights_only loading accepts plain containers and scalars: turn tuples into lists.
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
