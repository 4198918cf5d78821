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

from edgedl.errors import EdgedlError, TrustError, UsageError
from edgedl.runtime.platform import version_key

TRUST_ENV = "EDGEDL_TRUSTED_ENGINES"


def trust_file(path: str | os.PathLike | None = None) -> Path:
    """The trust file: ``path``, else $EDGEDL_TRUSTED_ENGINES, else ~/.config/edgedl/trusted-engines.txt."""
    if path:
        return Path(path)
    if os.environ.get(TRUST_ENV):
        return Path(os.environ[TRUST_ENV])
    return Path.home() / ".config" / "edgedl" / "trusted-engines.txt"


def list_trusted(path: str | os.PathLike | None = None) -> list[dict]:
    """The pins of a trust file: ``{"sha256", "name", "facts"}`` per line (``sha256sum`` lines: digest,
    then the file name; what edgedl knew of the engine when it was pinned follows a ``#``)."""
    file = trust_file(path)
    if not file.is_file():
        return []
    pins = []
    for line in file.read_text(encoding="utf-8").splitlines():
        body, _, facts = line.partition("#")
        word = body.split()
        if word and len(word[0]) == 64:
            pins.append({"sha256": word[0].lower(), "name": " ".join(word[1:]) or None, "facts": facts.strip() or None})
    return pins


def read_trusted(path: str | os.PathLike | None = None) -> set[str]:
    """sha256 digests pinned in a trust file."""
    return {pin["sha256"] for pin in list_trusted(path)}


def engine_facts(sidecar: dict) -> str:
    """One line of what an engine's sidecar says: TensorRT, GPU, platform, precision, DLA core."""
    trt = sidecar.get("tensorrt") or {}
    gpu = sidecar.get("gpu") or {}
    parts = [f"TensorRT {trt.get('version', '?')}" + (" (version-compatible)" if trt.get("version_compatible") else ""),
             f"{gpu.get('name') or 'unknown GPU'} (compute capability {gpu.get('compute_capability') or '?'})"]
    if (sidecar.get("platform") or {}).get("platform"):
        parts.append(sidecar["platform"]["platform"])
    parts.append(str(sidecar.get("precision") or "?"))
    if sidecar.get("dla_core") is not None:
        parts.append(f"DLA core {sidecar['dla_core']}")
    return ", ".join(parts)


def add_trusted(engine: str | os.PathLike, path: str | os.PathLike | None = None) -> tuple[str, Path]:
    """Pin an engine's sha256 in the trust file (written atomically), with the facts its sidecar gives.

    Only an engine that ``edgedl build-engine`` wrote is pinned: its sidecar must say ``tensorrt`` and
    hold the file's sha256 (the runtime's guard needs those facts, and a file without them, an empty
    one, or another format's is not an engine edgedl can load). Returns (digest, trust file).

    Raises:
        UsageError: the file is empty, has no engine sidecar, or differs from its sidecar.
    """
    import datetime

    from edgedl._fs import atomic_write_text, sha256_file
    from edgedl.runtime.sidecar import read_sidecar, sidecar_path

    engine = Path(engine)
    if not engine.is_file() or engine.stat().st_size == 0:
        raise UsageError(f"{engine}: {'empty file' if engine.is_file() else 'no such file'}, not a TensorRT engine")
    sidecar = read_sidecar(engine)
    if not sidecar or sidecar.get("format") != "tensorrt":
        what = "no sidecar" if not sidecar else f"a sidecar that says it is {sidecar.get('format')}"
        raise UsageError(f"{engine.name} has {what} ({sidecar_path(engine).name}): edgedl pins the engines that edgedl "
                         "build-engine writes, whose sidecars record the GPU and TensorRT the runtime checks")
    digest = sha256_file(engine)
    if sidecar.get("sha256") != digest:
        raise UsageError(f"{engine.name} does not match its sidecar (sha256 differs): the file was changed after its "
                         "build; rebuild it with edgedl build-engine")
    file = trust_file(path)
    if digest in read_trusted(file):
        return digest, file
    file.parent.mkdir(parents=True, exist_ok=True)
    old = file.read_text(encoding="utf-8") if file.is_file() else "# sha256  engine  # facts (edgedl trust add)\n"
    when = datetime.date.today().isoformat()
    atomic_write_text(file, old + ("" if old.endswith("\n") else "\n")
                      + f"{digest}  {engine.name}  # {engine_facts(sidecar)}; pinned {when}\n")
    return digest, file


def version_fits(built: str, running: str, version_compatible: bool) -> str | None:
    """Why an engine built with TensorRT ``built`` cannot run on ``running``, or None.

    Without version compatibility the standard runtime takes only the version that built the engine,
    to its build number ("Version tag does not match" otherwise): every component both versions state
    must match. With it (built on 8.6 or later), a newer runtime of the same major runs it, and across
    majors only 8 -> 10 and 10 -> 11.
    """
    b, r = version_key(built), version_key(running)
    if not b or not r:
        return f"the TensorRT version it was built with ({built or 'unknown'}) cannot be compared with {running}"
    if not version_compatible:
        n = min(len(b), len(r))
        return None if b[:n] == r[:n] else f"it was built with TensorRT {built} and this device runs {running}"
    if b < (8, 6):
        return f"version compatibility needs TensorRT 8.6 or later to build; it was built with {built}"
    if r < b:
        return f"it was built with TensorRT {built}, newer than this device's {running}"
    if r[0] != b[0] and (b[0], r[0]) not in ((8, 10), (10, 11)):
        return f"a TensorRT {b[0]} version-compatible engine does not run on TensorRT {r[0]}"
    return None


def hardware_fits(built_cc: str | None, running_cc: str | None, level: str | None, jetson: bool = False) -> str | None:
    """Why an engine built for compute capability ``built_cc`` cannot run on ``running_cc``, or None.

    An unknown compute capability on either side never passes: it is what a broken CUDA binding
    (cuda-python for another CUDA major) reports, and an engine is GPU code for one architecture.
    """
    if not built_cc:
        return "its sidecar does not say which compute capability it was built for"
    if not running_cc:
        return "this device's compute capability could not be read (is cuda-python built for this device's CUDA?)"
    if level == "ampere+":
        if jetson:
            return "hardware-compatible engines do not run on JetPack"
        if version_key(built_cc) < (8, 0):
            return f"a hardware-compatible engine must be built on compute capability 8.0 or later; it was {built_cc}"
        return None if version_key(running_cc) >= (8, 0) else f"hardware-compatible (ampere+) engines need compute " \
                                                          f"capability 8.0 or later; this GPU is {running_cc}"
    if version_key(built_cc) != version_key(running_cc):
        return f"it was built for compute capability {built_cc} and this GPU is {running_cc}"
    return None


def platform_fits(built: dict | None, running: dict) -> str | None:
    """Why an engine built on one TensorRT platform cannot run on this one ("serialized engines are
    not portable across platforms": x86_64, aarch64 Jetson, aarch64 SBSA), or None.

    A sidecar without a platform (an older edgedl) is judged by the other checks alone."""
    if not built or not built.get("platform") or not running.get("platform"):
        return None
    if built["platform"] != running["platform"]:
        return f"it was built on the {built['platform']} build of TensorRT and this device runs {running['platform']}"
    return None


def dla_fits(built_core: int | None, run_core: int | None, dla_cores: int | None) -> str | None:
    """Why an engine built for a DLA cannot run on this device's DLAs, or None."""
    if built_core is None:
        return None
    if not dla_cores:
        return f"this device has no DLA (the engine is for DLA core {built_core})"
    core = built_core if run_core is None else run_core
    if core >= dla_cores:
        return f"DLA core {core} does not exist here (this device has {dla_cores}, numbered from 0)"
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
        raise UsageError(f"{path.name} does not match its sidecar (sha256 differs): the engine was changed or "
                          f"replaced after its build; {rebuild}")


def check(path: Path, sidecar: dict | None, digest: str, running: dict, trusted: Iterable[str] | None,
          trust_model_code: bool = False, dla_core: int | None = None) -> None:
    """:func:`check_origin`, then refuse an engine not built for this device's GPU, platform and TensorRT.

    Args:
        running: {"tensorrt": version, "compute_capability": "8.7", "gpu": name, "platform": ...,
            "dla_cores": n} of this device.
        dla_core: the DLA core the engine is to run on (None: the one it was built for).
    """
    check_origin(path, sidecar, digest, trusted, trust_model_code)
    if not sidecar:
        return  # only reached with trust_model_code: the user runs it as it is
    rebuild = _rebuild(sidecar)
    trt = sidecar.get("tensorrt") or {}
    level = trt.get("hardware_compatibility")
    reasons = [version_fits(trt.get("version", ""), running["tensorrt"], bool(trt.get("version_compatible"))),
               hardware_fits((sidecar.get("gpu") or {}).get("compute_capability"), running.get("compute_capability"),
                             level, bool(running.get("jetson"))),
               platform_fits(sidecar.get("platform"), running),
               dla_fits(sidecar.get("dla_core"), dla_core, running.get("dla_cores"))]
    reasons = [r for r in reasons if r]
    if reasons:
        gpu = (sidecar.get("gpu") or {}).get("name") or "another GPU"
        raise EdgedlError(f"{path.name} was built on {gpu} and cannot run here: {'; '.join(reasons)}. TensorRT engines do "
                          f"not move between GPUs, platforms or TensorRT versions: {rebuild}")
