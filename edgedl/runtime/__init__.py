"""edgedl.runtime: load an exported artifact and run it. Needs numpy alone at import.

>>> import edgedl.runtime as rt
>>> with rt.load("runs/quickstart/artifacts/resnet8.fp32.onnx") as m:
...     logits = m(x)                       # x: float32 array shaped like m.inputs[0]
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from edgedl._fs import sha256_file
from edgedl.errors import EdgedlError, UsageError
from edgedl.runtime.base import InputError, Runner, TensorInfo
from edgedl.runtime.preprocess import Prediction
from edgedl.runtime.realtime import LatencyBudget, RateLoop
from edgedl.runtime.sidecar import read_sidecar, sidecar_path

__all__ = ["load", "Runner", "TensorInfo", "InputError", "Prediction", "RateLoop", "LatencyBudget", "backend_for",
           "BACKENDS", "FORMATS"]

# name -> (module, class). A table rather than imports, so that each backend's framework loads
# only when that backend is asked for.
BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("edgedl.runtime.onnxrt", "OnnxRuntimeRunner"),
    "litert": ("edgedl.runtime.litert", "LiteRTRunner"),
    "torch": ("edgedl.runtime.torchrt", "TorchRunner"),
}
_SUFFIXES = {".onnx": "onnxruntime", ".tflite": "litert", ".pt": "torch"}
FORMATS = {"onnx": "onnxruntime", "tflite": "litert", "torch": "torch"}  # sidecar format -> backend


def backend_for(path: str | os.PathLike, sidecar: dict | None = None) -> str:
    """Pick the backend for an artifact from its sidecar's format, else from its suffix."""
    if sidecar and sidecar.get("format") in FORMATS:
        return FORMATS[sidecar["format"]]
    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    known = ", ".join(sorted(_SUFFIXES))
    raise UsageError(f"no runtime backend for '{Path(path).name}': known file types are {known}")


def load(
    path: str | os.PathLike,
    backend: str | None = None,
    threads: int | None = None,
    device: str | None = None,
    verify: bool = True,
    preallocate: bool = False,
) -> Runner:
    """Load an artifact for inference.

    Args:
        path: the artifact file (``.onnx``, ...). Its sidecar ``<file>.json`` is read if present.
        backend: override the backend picked from the sidecar and the suffix.
        threads: intra-op threads for the backend; None keeps the backend's default.
        device: ``cpu`` (default) or an accelerator the backend supports.
        verify: refuse to load when the sidecar's sha256 does not match the file.
        preallocate: write outputs into buffers made once (ONNX Runtime IO binding, LiteRT copies
            into them) and return the same arrays every call: no per-call output allocation.
            Copy an output you keep past the next call; meant for one calling thread (another
            thread's call overwrites the same buffers).

    Returns:
        A :class:`Runner`; use it as a context manager to free native resources promptly.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"artifact not found: {path}")
    sidecar = read_sidecar(path)
    trusted = False
    if verify and sidecar and sidecar.get("sha256"):
        actual = sha256_file(path)
        if actual != sidecar["sha256"]:
            raise EdgedlError(
                f"{path.name} does not match its sidecar {sidecar_path(path).name} (sha256 differs):"
                " the file was changed after export; re-export it or load with verify=False"
            )
        trusted = True
    name = backend or backend_for(path, sidecar)
    if name not in BACKENDS:
        raise UsageError(f"unknown backend '{name}'; known: {', '.join(sorted(BACKENDS))}")
    module, cls = BACKENDS[name]
    runner_cls = getattr(importlib.import_module(module), cls)
    return runner_cls(path, sidecar=sidecar, threads=threads, device=device, trusted=trusted, preallocate=preallocate)
