"""The JSON sidecar written beside every artifact: what the runtime needs to feed it correctly."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgedl.errors import EdgedlError

SIDECAR_SUFFIX = ".json"
SIDECAR_VERSION = 1


def sidecar_path(artifact: str | os.PathLike) -> Path:
    """Return the sidecar's path for an artifact: ``model.onnx`` -> ``model.onnx.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SIDECAR_SUFFIX)


def read_sidecar(artifact: str | os.PathLike) -> dict[str, Any] | None:
    """Read the sidecar of ``artifact``; None when there is none (a bare file from elsewhere)."""
    path = sidecar_path(artifact)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EdgedlError(f"cannot read sidecar {path}: {exc}; delete it or re-export") from None
    if not isinstance(data, dict) or data.get("edgedl_sidecar") != SIDECAR_VERSION:
        raise EdgedlError(
            f"{path} is not an edgedl sidecar (version {SIDECAR_VERSION}); delete it or re-export"
        )
    return data
