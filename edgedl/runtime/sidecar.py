"""The JSON sidecar written beside every artifact: what the runtime needs to feed it correctly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgedl.errors import EdgedlError, UsageError

SIDECAR_SUFFIX = ".json"
# 2: normalization records raw_range (the value range of raw inputs). 1 still reads.
SIDECAR_VERSION = 2
# The keys a sidecar has about its own file; a derived artifact (quantized, an engine) writes its own.
SIDECAR_OWN_KEYS = ("edgedl_sidecar", "artifact", "sha256", "format", "precision")


def inherited_sidecar(artifact: str | os.PathLike, **own: Any) -> dict[str, Any]:
    """What a file derived from ``artifact`` (quantized, built, trained for INT8) keeps of its sidecar:
    everything but the keys about the file itself, plus the derived file's ``own`` keys."""
    return {**{k: v for k, v in (read_sidecar(artifact) or {}).items() if k not in SIDECAR_OWN_KEYS}, **own}


def sidecar_path(artifact: str | os.PathLike) -> Path:
    """Return the sidecar's path for an artifact: ``model.onnx`` -> ``model.onnx.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SIDECAR_SUFFIX)


def read_sidecar(artifact: str | os.PathLike) -> dict[str, Any] | None:
    """Read the sidecar of ``artifact``; None when there is none (a bare file from elsewhere)."""
    path = sidecar_path(artifact)
    if not path.exists():
        return None
    import json

    from edgedl._fs import read_text

    try:
        data = json.loads(read_text(path, "sidecar"))
    except (ValueError, RecursionError) as exc:  # RecursionError: thousands of nested brackets
        raise UsageError(f"cannot read sidecar {path}: {str(exc)[:200]}; delete it or re-export") from None
    version = data.get("edgedl_sidecar") if isinstance(data, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UsageError(f"{path} is not an edgedl sidecar; delete it or re-export")
    if version > SIDECAR_VERSION:
        from edgedl import __version__

        raise EdgedlError(f"{path.name} was written by a newer edgedl (sidecar format {version}); edgedl {__version__} "
                          f"reads formats 1 to {SIDECAR_VERSION}: upgrade edgedl")
    return data
