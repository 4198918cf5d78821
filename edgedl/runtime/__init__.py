"""edgedl.runtime: load an exported artifact and run it. Needs numpy alone at import.

>>> import edgedl.runtime as rt
>>> with rt.load("runs/quickstart/artifacts/resnet8.fp32.onnx") as m:
...     logits = m(x)                       # x: float32 array shaped like m.inputs[0]
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from edgedl.errors import UsageError
from edgedl.runtime.backends import BACKENDS, Backend
from edgedl.runtime.base import InputError, Runner, TensorInfo
from edgedl.runtime.preprocess import InputRangeWarning, Prediction
from edgedl.runtime.realtime import LatencyBudget, RateLoop
from edgedl.runtime.sidecar import read_sidecar, sidecar_path

__all__ = ["load", "recommended", "Runner", "TensorInfo", "InputError", "InputRangeWarning", "Prediction", "RateLoop", "LatencyBudget", "backend_for",
           "backend_for_format", "BACKENDS", "Backend"]


def recommended(run_dir: str | os.PathLike, fmt: str) -> tuple[Path, str]:
    """The artifact of format ``fmt`` (``onnx``, ``tflite``) that a compress run recommends, and why.

    A reduced-precision file its gates passed (``recommended`` in the manifest) is the choice; when
    none passed, the run's float file, with the reasons the others were not recommended. This is what
    an app should load rather than a file name guessed from the precision.

    Raises:
        UsageError: no run (manifest.json) there, or no artifact of that format in it.
    """
    import json

    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"{run_dir} is not an edgedl run (no manifest.json); give an artifact file or a run folder")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        artifacts = [a for a in manifest["artifacts"] if a["format"] == fmt and a["path"] and a["precision"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{manifest_path} is not a readable edgedl manifest ({type(exc).__name__}: {exc})") from None
    if not artifacts:
        raise UsageError(f"the run in {run_dir} has no {fmt} artifact; add the {fmt} target to its recipe")
    passed = [a for a in artifacts if a.get("recommended") is True]
    if passed:
        choice = passed[-1]
        return run_dir / choice["path"], f"{choice['name']}: recommended by its run ({choice.get('summary', '')})"
    floats = [a for a in artifacts if a["precision"] == "fp32"] or artifacts
    choice = floats[-1]
    others = [f"{a['name']} is not recommended ({a.get('summary', 'no verdict')})" for a in artifacts
              if a.get("recommended") is False]
    return run_dir / choice["path"], f"{choice['name']}" + (f": {'; '.join(others)}" if others else "")


def backend_for_format(fmt: str) -> Backend | None:
    """The backend that runs an artifact format, or None."""
    return next((b for b in BACKENDS.values() if b.format == fmt), None)


def backend_for(path: str | os.PathLike, sidecar: dict | None = None) -> Backend:
    """The backend for an artifact: from its sidecar's format, else from its suffix."""
    by_format = backend_for_format(sidecar.get("format")) if sidecar else None
    if by_format is not None:
        return by_format
    suffix = Path(path).suffix.lower()
    for backend in BACKENDS.values():
        if suffix in backend.suffixes:
            return backend
    known = ", ".join(sorted(s for b in BACKENDS.values() for s in b.suffixes))
    hint = ("; a model to bring in (TorchScript, .pt2, a folder) goes through `edgedl compress --model "
            f"{Path(path).name}`, which writes files these run" if Path(path).suffix.lower() in (".pt2", ".ts", ".zip")
            else "")
    raise UsageError(f"no runtime backend for '{Path(path).name}': known file types are {known}{hint}")


def load(
    path: str | os.PathLike,
    backend: str | None = None,
    threads: int | None = None,
    compute: str | None = None,
    verify: bool = True,
    preallocate: bool = False,
    trust_model_code: bool = False,
    factory: str | None = None,
    device: str | None = None,
    trusted_engines: "list[str] | None" = None,
) -> Runner:
    """Load an artifact for inference.

    Args:
        path: the artifact file (``.onnx``, ...). Its sidecar ``<file>.json`` is read if present.
        backend: override the backend picked from the sidecar and the suffix.
        threads: intra-op threads for the backend; None keeps the backend's default.
        compute: the compute unit: ``cpu`` (default), ``cuda`` or ``tensorrt`` (ONNX Runtime's execution
            providers, the torch backend's CUDA), ``cpu-qdq`` (ONNX Runtime with graph optimizations off:
            Q/DQ pairs computed as defined, in float, not fused into integer kernels, as a file made for
            TensorRT computes there), ``xnnpack`` or ``cpu-no-xnnpack`` (LiteRT).
        verify: refuse to load when the sidecar's sha256 does not match the file.
        preallocate: write outputs into buffers made once (ONNX Runtime IO binding, LiteRT copies
            into them) and return the same arrays every call: no per-call output allocation.
            Copy an output you keep past the next call; meant for one calling thread (another
            thread's call overwrites the same buffers).

        trust_model_code: a PyTorch checkpoint names the Python factory that builds its
            architecture; run that code. Off by default: opening a file never runs code it names
            (registry architectures need no trust).
        factory: build a checkpoint's architecture with this factory (``file.py:fn`` or
            ``module:fn``) that you name, instead of the one the file names.
        trusted_engines: sha256 digests of the TensorRT engines this app may load (pinned in the app);
            None reads the device's trust file (``edgedl trust add``). An engine is native code: its
            origin is what the user pins, never what its sidecar says.
        device: the old name of ``compute``; it still works, with a DeprecationWarning (a device is
            a device profile everywhere else in edgedl).

    Returns:
        A :class:`Runner`; use it as a context manager to free native resources promptly.
    """
    if device is not None:
        import warnings

        warnings.warn("edgedl.runtime.load(device=...) is now compute=...", DeprecationWarning, stacklevel=2)
        compute = compute or device
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"artifact not found: {path}")
    sidecar = read_sidecar(path)
    trusted = False
    if verify and sidecar and sidecar.get("sha256"):
        from edgedl._fs import sha256_file

        actual = sha256_file(path)
        if actual != sidecar["sha256"]:
            raise UsageError(
                f"{path.name} does not match its sidecar {sidecar_path(path).name} (sha256 differs):"
                " the file was changed after export; re-export it (from Python, load(path, verify=False) runs it as it is)"
            )
        trusted = True
    if backend is None:
        chosen = backend_for(path, sidecar)
    elif backend in BACKENDS:
        chosen = BACKENDS[backend]
    else:
        raise UsageError(f"unknown backend '{backend}'; known: {', '.join(sorted(BACKENDS))}")
    module, _, cls = chosen.runner.partition(":")
    runner_cls = getattr(importlib.import_module(module), cls)
    return runner_cls(path, sidecar=sidecar, threads=threads, compute=compute, trusted=trusted, preallocate=preallocate,
                      trust_model_code=trust_model_code, factory=factory, trusted_engines=trusted_engines)
