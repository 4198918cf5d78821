"""``path/to/file.py:factory`` or ``package.module:factory``: the user's own Python, run because they
named it; with ``--weights``, a state_dict (``.pt`` read with ``weights_only=True``, or
``.safetensors``) or an edgedl checkpoint loaded into what the factory builds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from edgedl.errors import EdgedlError, TrustError, UsageError
from edgedl.models.importers import Importer, first_line, is_torchscript_zip, zip_names

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
# Where training scripts commonly keep the state_dict inside a larger dict.
_NESTED = ("state_dict", "model_state_dict", "model", "net", "module")


class FactoryImporter(Importer):
    name = "factory"
    runs_code = False  # the user's own code, run because the user named it (a file never names it here)
    opens = "imports the Python file or module the user named and calls the factory"

    @classmethod
    def matches(cls, spec: str) -> bool:
        # mypkg.pt2net:build is a factory; model.pt is a file (a Windows drive, C:\\, is not a spec here)
        return ":" in spec and Path(spec).suffix.lower() not in (".pt", ".pth", ".bin", ".pt2", ".onnx", ".safetensors")

    def check(self, spec: str, *, trust: bool = False, weights: str | None = None) -> None:
        target, _, attr = spec.rpartition(":")
        if not target or not attr:
            raise UsageError(f"model spec '{spec}' must look like path/to/file.py:factory or module:factory")
        if target.endswith(".py") and not Path(target).is_file():
            raise UsageError(f"model file not found: {target} (from --model {spec})")
        if weights is not None:
            check_weights(weights, trust)

    def load(self, spec: str, *, trust: bool = False, weights: str | None = None, kwargs: dict | None = None):
        from edgedl.models.spec import LoadedModel, _canonical, _from_factory

        kwargs = dict(kwargs or {})
        if weights is not None:
            return with_weights(lambda kw: _from_factory(spec, kw), _canonical(spec), weights, kwargs, trust)
        return LoadedModel(_from_factory(spec, kwargs), {"spec": _canonical(spec), "kwargs": kwargs})

    def stem(self, spec: str) -> str:
        target = spec.rpartition(":")[0]
        return Path(target).stem if target.endswith(".py") else target.rsplit(".", 1)[-1]


def check_weights(path: str | Path, trust: bool = False) -> None:
    """The weights file exists and holds weights (read now, before any work)."""
    read_weights(path, trust)


def read_weights(path: str | Path, trust: bool = False) -> dict:
    """``{"state_dict": {...}, "checkpoint": payload or None, "note": str or None}`` from a weights file.

    Accepts an edgedl checkpoint, a bare state_dict, a dict holding one under a usual key
    (``state_dict``, ``model``, ...), and ``.safetensors``. Nothing is unpickled: ``.pt`` files are
    read with ``weights_only=True``; a pickled module opens only with ``trust``.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        return {"state_dict": read_safetensors(path), "checkpoint": None, "note": None}
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise UsageError(f"--weights {path.name}: edgedl reads weights from .pt/.pth/.bin (a state_dict or an edgedl "
                         "checkpoint) and .safetensors files")
    import torch

    if is_torchscript_zip(zip_names(path)):
        raise UsageError(f"--weights {path.name} is a TorchScript program, not weights: pass it as the model "
                         f"(--model {path} --trust-model-code)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        payload = unpickle_trusted(path, exc, trust)
    if isinstance(payload, torch.nn.Module):
        return {"state_dict": payload.state_dict(), "checkpoint": None, "note": f"{path.name} is a pickled module "
                "(opened with --trust-model-code); its weights were taken"}
    if isinstance(payload, dict) and isinstance(payload.get("edgedl_checkpoint"), int):
        from edgedl.models.spec import read_checkpoint

        payload = read_checkpoint(path)  # its version checks
        return {"state_dict": payload["state_dict"], "checkpoint": payload, "note": None}
    state, note = _state_dict_of(payload, path)
    return {"state_dict": state, "checkpoint": None, "note": note}


def unpickle_trusted(path: Path, exc: Exception, trust: bool) -> Any:
    """A file ``weights_only`` refused: one line naming what it holds, or (trusted) the full unpickle."""
    import torch

    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if found is None:  # not a pickle of objects: a corrupt or foreign file
        text = str(exc)
        if "WeightsUnpickler error:" in text:  # torch's advice to unpickle in full comes first: skip it
            text = text.split("WeightsUnpickler error:", 1)[1]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = (lines or [type(exc).__name__])[0][:200]
        raise UsageError(f"cannot read checkpoint {path}: not a torch.save file, or a corrupt one ({reason})") from None
    what = f"pickled Python objects ({found.group(1)})" if found else "pickled Python objects"
    if not trust:
        raise TrustError(f"{path.name} holds {what}, and unpickling runs whatever code the file names: edgedl "
                         "opens it only with --trust-model-code; better, save the weights alone "
                         "(torch.save(model.state_dict(), ...) or safetensors) and pass --model file.py:build "
                         f"--weights {path.name}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc2:
        raise UsageError(f"cannot unpickle {path}: {first_line(exc2)}") from None


def _state_dict_of(payload: Any, path: Path) -> tuple[dict, str | None]:
    import torch

    def tensors(d: Any) -> bool:
        return isinstance(d, dict) and d and all(isinstance(v, torch.Tensor) for v in d.values())

    if tensors(payload):
        return dict(payload), None
    if isinstance(payload, dict):
        for key in _NESTED:
            if tensors(payload.get(key)):
                return dict(payload[key]), f"took the state_dict under '{key}' in {path.name}"
    kind = type(payload).__name__ if not isinstance(payload, dict) else f"dict with keys {sorted(payload)[:6]}"
    raise UsageError(f"{path.name} holds a {kind}, not a state_dict (a dict of tensor names to tensors)")


def read_safetensors(path: Path) -> dict:
    """A .safetensors file's tensors (the format holds no code: a header and raw buffers)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        from edgedl.errors import MissingDependencyError

        raise MissingDependencyError("safetensors", "torch", "Reading .safetensors weights") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise UsageError(f"{path} is not a readable safetensors file: {first_line(exc)}") from None


def with_weights(build: Callable[[dict], Any], spec: str, weights: str | Path, kwargs: dict, trust: bool):
    """Build the architecture (with an edgedl checkpoint's options when it is one) and load the
    weights into it, naming every key that does not fit."""
    from edgedl.models.spec import LoadedModel

    read = read_weights(weights, trust)
    payload = read["checkpoint"]
    if payload is not None:  # an edgedl checkpoint: its architecture options and pruned structure
        kwargs = dict((payload.get("arch") or {}).get("kwargs") or kwargs)
        if isinstance(kwargs.get("input_size"), list):
            kwargs["input_size"] = tuple(kwargs["input_size"])
    module = build(kwargs)
    if payload is not None and payload.get("structure"):
        from edgedl.models.structure import apply_structure

        apply_structure(module, payload["structure"], payload["state_dict"])
    load_state(module, read["state_dict"], Path(weights))
    meta = dict((payload or {}).get("meta") or {})
    if payload is not None and not meta.get("input_shape"):
        from edgedl.models.spec import checkpoint_input_shape

        shape = checkpoint_input_shape(payload)
        if shape:
            meta["input_shape"] = shape
    loaded = LoadedModel(module, {"spec": spec, "kwargs": kwargs}, meta)
    loaded.notes = [read["note"]] if read["note"] else []
    return loaded


def load_state(module: Any, state: dict, path: Path) -> None:
    """``module.load_state_dict(state)``, with a DataParallel ``module.`` prefix taken off, and one
    line naming the missing, unexpected and mis-shaped keys when they do not fit."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", shapes)):
        if keys:
            problems.append(f"{label} {len(keys)}: " + ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else ""))
    if problems:
        raise EdgedlError(f"the weights in {path.name} do not fit the model ({'; '.join(problems)}); check that the "
                          "factory builds the architecture the weights were saved from, with the same options")
    module.load_state_dict(state)
