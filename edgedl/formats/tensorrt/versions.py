"""Which TensorRT a target means, and what that version can and cannot do.

The op tables (``onnx_ops.yaml``) are generated from onnx-tensorrt's ``docs/operators.md`` by
``scripts/tensorrt_op_table.py``. A version without its own table uses the nearest older table of
the same major version, and the lint says so.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from edgedl.errors import UsageError

TABLE_FILE = Path(__file__).with_name("onnx_ops.yaml")
LATEST_10 = "10.15"
# The devices whose DLA TensorRT 11 supports (11.4.1 release notes: AGX Orin under JetPack 7.2.2 or later).
DLA_ON_11 = ("jetson-agx-orin-64gb",)


@functools.lru_cache(maxsize=1)
def tables() -> dict:
    import yaml

    return yaml.safe_load(TABLE_FILE.read_text(encoding="utf-8"))["versions"]


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


@dataclass(frozen=True)
class TrtVersion:
    """A TensorRT version and the op table that describes it."""

    version: str  # what the user or the device profile asked for, e.g. "10.3" or "10.7.0"
    table: str  # the key of the op table used, e.g. "10.3"
    why: str  # where the version came from

    @property
    def key(self) -> tuple[int, ...]:
        return _key(self.version)

    @property
    def major(self) -> int:
        return self.key[0]

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 removed the precision flags (FP16, INT8) and the INT8 calibrator."""
        return self.major >= 11

    @property
    def has_strong_typing(self) -> bool:
        """Strongly typed networks exist from TensorRT 9.0 (NetworkDefinitionCreationFlag.STRONGLY_TYPED)."""
        return self.major >= 9

    @property
    def has_compatibility_modes(self) -> bool:
        """Version- and hardware-compatible engines exist from 8.6: ``BuilderFlag.VERSION_COMPATIBLE``,
        ``HardwareCompatibilityLevel`` and trtexec's ``--versionCompatible`` and
        ``--hardwareCompatibilityLevel`` (none of them in 8.5's headers, bindings or trtexec)."""
        return self.key >= (8, 6)

    @property
    def parser_flags_for_compatibility(self) -> list[str]:
        """ONNX parser flags a version- or hardware-compatible build needs. 8.6's parser has
        NATIVE_INSTANCENORM off by default and says the flag "is required when building
        version-compatible or hardware-compatible engines" (NvOnnxParser.h, 8.6-GA); from 10.0 it is on."""
        return ["NATIVE_INSTANCENORM"] if (8, 6) <= self.key < (10,) else []

    @property
    def has_memory_pools(self) -> bool:
        """trtexec's ``--memPoolSize`` (and ``set_memory_pool_limit``) arrived in 8.4; 8.2 has ``--workspace``."""
        return self.key >= (8, 4)

    @property
    def runs_edgedl_runtime(self) -> bool:
        """edgedl's runner uses name-based I/O (``set_input_shape``, ``execute_async_v3``): TensorRT 8.5 and later."""
        return self.key >= (8, 5)

    def dla_missing(self, profile=None) -> str | None:
        """Why this TensorRT builds nothing for a DLA (of ``profile``, when given), or None where it does.

        NVIDIA's "Working with DLA" (11.4.1): 10.7 was the last 10.x release with DLA, 11.0 to 11.3 had
        none, 11.4.0 only on Windows on ARM, and 11.4.1 supports it on Jetson AGX Orin under JetPack 7.2.2
        or later (not on Thor).
        """
        if (10, 8) <= self.key < (11,):
            return f"TensorRT {self.version} has no DLA support (10.7 was the last 10.x release with DLA)"
        if (11,) <= self.key < (11, 4, 1):
            return (f"TensorRT {self.version} has no DLA support on Jetson (11.0 to 11.3 had none; 11.4.1 brings it "
                    "back on AGX Orin under JetPack 7.2.2 or later)")
        if self.major >= 11 and profile is not None and profile.name not in DLA_ON_11:
            return f"TensorRT {self.version} supports DLA on Jetson AGX Orin only, not on {profile.title}"
        return None

    def entry(self) -> dict:
        return tables()[self.table]

    def as_dict(self) -> dict:
        entry = self.entry()
        return {"version": self.version, "table": self.table, "why": self.why, "table_source": entry["source"],
                "opset": entry["opset"]}


def resolve(requested: str | None, profile=None) -> TrtVersion:
    """The TensorRT version a target means: ``requested`` ("10.3", "10", "11"), else the version the
    device profile's default JetPack ships, else the latest 10.x table.

    Raises:
        UsageError: a version edgedl has no table for (older than 8.2, or a malformed string), or a
            device profile with no TensorRT.
    """
    if profile is not None:
        require_tensorrt(profile)
    release = profile.software.release() if profile is not None and profile.software else None
    if requested is None and release and release[1].tensorrt:
        jetpack, shipped = release
        return _nearest(shipped.tensorrt, f"JetPack {jetpack} on {profile.title} ships TensorRT {shipped.tensorrt}")
    if requested is None:
        return _nearest(LATEST_10, "no version given and no device profile fixes one: the latest 10.x table")
    return _nearest(requested, "asked for")


def require_tensorrt(profile) -> None:
    """Refuse a device without TensorRT in one line that names the devices that have it."""
    if "tensorrt" in profile.runtimes:
        return
    from edgedl.devices import list_profiles

    having = [p.name for p in list_profiles() if "tensorrt" in p.runtimes]
    targets = [t for r, t in (("onnxruntime", "onnx"), ("litert", "tflite")) if r in profile.runtimes]
    raise UsageError(f"{profile.title} has no TensorRT (it runs {', '.join(profile.runtimes)}): the tensorrt target "
                     f"is for {', '.join(having)}" + (f"; target {' or '.join(targets)} for this device" if targets else ""))


def edgedl_on_device(release, trt: TrtVersion) -> str | None:
    """Why ``edgedl build-engine`` and edgedl's runtime cannot run on a JetPack release, or None.

    edgedl needs Python 3.10 (JetPack's TensorRT bindings exist for its own Python only) and TensorRT's
    name-based I/O (8.5).
    """
    if release is not None and release.python and _key(release.python) < (3, 10):
        return (f"edgedl needs Python 3.10 or later, and this JetPack's TensorRT bindings are for its Python "
                f"{release.python}")
    if not trt.runs_edgedl_runtime:
        return f"edgedl's runtime needs TensorRT 8.5 or later (name-based I/O), not {trt.version}"
    return None


def _nearest(version: str, why: str) -> TrtVersion:
    try:
        wanted = _key(version)
    except ValueError:
        raise UsageError(f"TensorRT version '{version}' is not a version number; use e.g. tensorrt:10.3") from None
    known = sorted(tables(), key=_key)
    if len(wanted) == 1:  # "10" means the newest table of that major
        same = [k for k in known if _key(k)[0] == wanted[0]]
        if not same:
            raise UsageError(f"no TensorRT {version}.x op table; known versions: {', '.join(known)}")
        # what the version can do follows the table it stands for: "10" is 10.15 (no DLA), "8" is 8.6
        return TrtVersion(same[-1], same[-1], why + f"; major version {version} only: the newest table, {same[-1]}")
    older = [k for k in known if _key(k)[0] == wanted[0] and _key(k) <= wanted]
    if not older:
        raise UsageError(f"edgedl has no op table for TensorRT {version}; known versions: {', '.join(known)} "
                         "(TensorRT older than 8.2 is not supported)")
    table = older[-1]
    if _key(table) != wanted[: len(_key(table))] or len(wanted) < len(_key(table)):
        why += f"; no {version} table: the nearest older one, {table}"
    return TrtVersion(version, table, why)
