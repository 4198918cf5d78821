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
    def major(self) -> int:
        return _key(self.version)[0]

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 removed the precision flags (FP16, INT8) and the INT8 calibrator."""
        return self.major >= 11

    @property
    def has_strong_typing(self) -> bool:
        """Strongly typed networks exist from TensorRT 9.0 (NetworkDefinitionCreationFlag.STRONGLY_TYPED)."""
        return self.major >= 9

    def entry(self) -> dict:
        return tables()[self.table]

    def as_dict(self) -> dict:
        entry = self.entry()
        return {"version": self.version, "table": self.table, "why": self.why, "table_source": entry["source"],
                "opset": entry["opset"]}


def resolve(requested: str | None, profile=None) -> TrtVersion:
    """The TensorRT version a target means: ``requested`` ("10.3", "10", "11"), else the version the
    device profile's newest JetPack ships, else the latest 10.x table.

    Raises:
        UsageError: a version edgedl has no table for (older than 8.5, or a malformed string).
    """
    if requested is None and profile is not None and profile.software and profile.software.jetpack:
        jetpack = max(profile.software.jetpack, key=_key)
        trt = profile.software.jetpack[jetpack].tensorrt
        if trt:
            return _nearest(trt, f"JetPack {jetpack} on {profile.title} ships TensorRT {trt}")
    if requested is None:
        return _nearest(LATEST_10, "no version given and no device profile fixes one: the latest 10.x table")
    return _nearest(requested, "asked for")


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
        return TrtVersion(version, same[-1], why + f"; major version only: the {same[-1]} table")
    older = [k for k in known if _key(k)[0] == wanted[0] and _key(k) <= wanted]
    if not older:
        raise UsageError(f"edgedl has no op table for TensorRT {version}; known versions: {', '.join(known)} "
                         "(TensorRT older than 8.5 is not supported)")
    table = older[-1]
    if _key(table) != wanted[: len(_key(table))] or len(wanted) < len(_key(table)):
        why += f"; no {version} table: the nearest older one, {table}"
    return TrtVersion(version, table, why)
