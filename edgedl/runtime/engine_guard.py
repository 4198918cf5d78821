"""Whether a TensorRT engine may load here: its origin, its hash, its GPU and its TensorRT version.

An engine is native code built for one GPU architecture and one TensorRT version. Its origin is
confirmed by the user, not by the sidecar that travels with it: the engine's sha256 must be pinned
in the app (``trusted_engines=``) or in a trust file on the device (``edgedl trust add``), so that an
unattended robot loads only what was deployed to it. Then the sidecar's compute capability and
TensorRT version must fit the running device, within what version- and hardware-compatible builds
allow (TensorRT's Engine Compatibility guide and support matrix).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from edgedl.errors import EdgedlError, TrustError

TRUST_ENV = "EDGEDL_TRUSTED_ENGINES"


def trust_file(path: str | os.PathLike | None = None) -> Path:
    """The trust file: ``path``, else $EDGEDL_TRUSTED_ENGINES, else ~/.config/edgedl/trusted-engines.txt."""
    if path:
        return Path(path)
    if os.environ.get(TRUST_ENV):
        return Path(os.environ[TRUST_ENV])
    return Path.home() / ".config" / "edgedl" / "trusted-engines.txt"


def read_trusted(path: str | os.PathLike | None = None) -> set[str]:
    """sha256 digests in a trust file (``sha256sum`` lines: digest, then an optional name; # comments)."""
    file = trust_file(path)
    if not file.is_file():
        return set()
    digests = set()
    for line in file.read_text(encoding="utf-8").splitlines():
        word = line.split("#", 1)[0].split()
        if word and len(word[0]) == 64:
            digests.add(word[0].lower())
    return digests


def add_trusted(engine: str | os.PathLike, path: str | os.PathLike | None = None) -> tuple[str, Path]:
    """Pin an engine's sha256 in the trust file (written atomically). Returns (digest, trust file)."""
    from edgedl._fs import atomic_write_text, sha256_file

    digest = sha256_file(engine)
    file = trust_file(path)
    if digest in read_trusted(file):
        return digest, file
    file.parent.mkdir(parents=True, exist_ok=True)
    old = file.read_text(encoding="utf-8") if file.is_file() else "# sha256  engine  (edgedl trust add)\n"
    atomic_write_text(file, old + ("" if old.endswith("\n") else "\n") + f"{digest}  {Path(engine).name}\n")
    return digest, file


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(text).split(".") if p.isdigit())


def version_fits(built: str, running: str, version_compatible: bool) -> str | None:
    """Why an engine built with TensorRT ``built`` cannot run on ``running``, or None.

    Without version compatibility the versions must match. With it (built on 8.6 or later), a newer
    runtime of the same major runs it, and across majors only 8 -> 10 and 10 -> 11.
    """
    b, r = _version(built), _version(running)
    if not version_compatible:
        n = min(len(b), len(r), 3)
        return None if b[:n] == r[:n] else f"it was built with TensorRT {built} and this device runs {running}"
    if b < (8, 6):
        return f"version compatibility needs TensorRT 8.6 or later to build; it was built with {built}"
    if r < b:
        return f"it was built with TensorRT {built}, newer than this device's {running}"
    if r[0] != b[0] and (b[0], r[0]) not in ((8, 10), (10, 11)):
        return f"a TensorRT {b[0]} version-compatible engine does not run on TensorRT {r[0]}"
    return None


def hardware_fits(built_cc: str | None, running_cc: str | None, level: str | None) -> str | None:
    """Why an engine built for compute capability ``built_cc`` cannot run on ``running_cc``, or None."""
    if not built_cc or not running_cc:
        return None if not built_cc else "this device's compute capability could not be read"
    if level == "ampere+":
        return None if _version(running_cc) >= (8, 0) else f"hardware-compatible (ampere+) engines need compute " \
                                                          f"capability 8.0 or later; this GPU is {running_cc}"
    if _version(built_cc) != _version(running_cc):
        return f"it was built for compute capability {built_cc} and this GPU is {running_cc}"
    return None


def _rebuild(sidecar: dict | None) -> str:
    return (f"rebuild it on this device: edgedl build-engine {sidecar['source_onnx']['name']}"
            if sidecar and sidecar.get("source_onnx") else "rebuild it on this device with edgedl build-engine")


def check_origin(path: Path, sidecar: dict | None, digest: str, trusted: Iterable[str] | None,
                 trust_model_code: bool = False) -> None:
    """Refuse an engine whose sha256 is not pinned, or that differs from its sidecar (no TensorRT needed).

    Args:
        digest: the engine file's sha256.
        trusted: digests the app pins; None reads the trust file.
        trust_model_code: the caller said to run this engine whatever its origin (interactive use).
    """
    rebuild = _rebuild(sidecar)
    pinned = set(trusted) if trusted is not None else read_trusted()
    if not trust_model_code and digest not in pinned:
        raise TrustError(f"{path.name} is a TensorRT engine (native code) whose sha256 {digest[:16]}... is not pinned: "
                         f"run `edgedl trust add {path}` on this device (or pass trusted_engines=[...] to load, or "
                         "--trust-model-code once to run it interactively)")
    if not sidecar:
        if trust_model_code:
            return
        raise EdgedlError(f"{path.name} has no sidecar ({path.name}.json), so its GPU and TensorRT version are unknown; "
                          f"{rebuild}")
    if sidecar.get("sha256") and sidecar["sha256"] != digest:
        raise EdgedlError(f"{path.name} does not match its sidecar (sha256 differs): the engine was changed or "
                          f"replaced after its build; {rebuild}")


def check(path: Path, sidecar: dict | None, digest: str, running: dict, trusted: Iterable[str] | None,
          trust_model_code: bool = False) -> None:
    """:func:`check_origin`, then refuse an engine not built for this device's GPU and TensorRT.

    Args:
        running: {"tensorrt": version, "compute_capability": "8.7", "gpu": name} of this device.
    """
    check_origin(path, sidecar, digest, trusted, trust_model_code)
    if not sidecar:
        return  # only reached with trust_model_code: the user runs it as it is
    rebuild = _rebuild(sidecar)
    trt = sidecar.get("tensorrt") or {}
    reasons = [version_fits(trt.get("version", "?"), running["tensorrt"], bool(trt.get("version_compatible"))),
               hardware_fits((sidecar.get("gpu") or {}).get("compute_capability"), running.get("compute_capability"),
                             trt.get("hardware_compatibility"))]
    reasons = [r for r in reasons if r]
    if reasons:
        gpu = (sidecar.get("gpu") or {}).get("name") or "another GPU"
        raise EdgedlError(f"{path.name} was built on {gpu} and cannot run here: {'; '.join(reasons)}. TensorRT engines do "
                          f"not move between GPUs or TensorRT versions: {rebuild}")
