"""The benchmark as a plain, typed, versioned request: built once from the command line, a recipe's
benchmark stage or the Python API, and sent unchanged to wherever it runs (a fresh local process
today; an SSH or adb device through the same executors). ``edgedl bench --request FILE`` runs one.

A request never grants trust: ``--trust-model-code`` is said on the command line that runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgedl.errors import UsageError

REQUEST_VERSION = 1


class BenchRequest(BaseModel):
    """What ``edgedl bench`` measures and how: the artifact and every option of :func:`edgedl.api.bench`."""

    model_config = ConfigDict(extra="forbid")

    edgedl_bench_request: Literal[1] = REQUEST_VERSION
    artifact: str
    data: Optional[str] = None
    runs: int = Field(100, ge=1)
    warmup: int = Field(10, ge=0)
    min_seconds: float = Field(1.0, ge=0)
    batch: int = Field(1, ge=1)
    threads: Optional[int] = Field(None, ge=1)
    input_shapes: dict[str, list[int]] = Field(default_factory=dict)
    device: Optional[str] = None
    energy: str = "auto"
    sysfs_root: str = "/"
    rails: Optional[list[str]] = None
    idle_seconds: float = Field(2.0, ge=0)
    cpus: Optional[list[int]] = None
    backend: Optional[str] = None
    compute: Optional[str] = None
    profile_ops: bool = False
    until_stable: Optional[float] = Field(None, gt=0)
    sustained: Optional[float] = Field(None, gt=0)
    cooldown: float = Field(0.0, ge=0)  # seconds idle before the model loads: a device cools after the last run

    @classmethod
    def of(cls, **options) -> "BenchRequest":
        """A request from :func:`edgedl.api.bench`'s options; a value out of range is one line naming
        its command-line option (``--runs must be at least 1, got 0``)."""
        options = {k: (str(v) if k in ("artifact", "sysfs_root") else v) for k, v in options.items()
                   if v is not None or cls.model_fields[k].default is None}  # None: the default
        try:
            return cls(**options)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else ""
            flag = "--" + field.replace("_", "-")
            limit = (first.get("ctx") or {}).get("ge", (first.get("ctx") or {}).get("gt"))
            if first["type"] in ("greater_than_equal", "greater_than") and limit is not None:
                word = "at least" if first["type"] == "greater_than_equal" else "more than"
                raise UsageError(f"{flag} must be {word} {limit}, got {first['input']}") from None
            raise UsageError(f"{flag}: {first['msg']}") from None

    def run(self, trust_model_code: bool = False) -> dict:
        """The result of this request, measured in this process (:func:`edgedl.bench.session.measure`)."""
        from edgedl.bench.session import measure

        return measure(self, trust_model_code)

    def write(self, path: str | Path) -> None:
        from edgedl._fs import atomic_write_json

        atomic_write_json(path, self.model_dump(mode="json"))

    @classmethod
    def read(cls, path: str | Path) -> "BenchRequest":
        """A request file, validated; a wrong field is one line naming it."""
        import json

        from edgedl._fs import read_text

        try:
            raw = json.loads(read_text(path, "bench request"))
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"bench request {path} is not valid JSON: {str(exc)[:200]}") from None
        version = raw.get("edgedl_bench_request") if isinstance(raw, dict) else None
        if isinstance(version, int) and version > REQUEST_VERSION:
            raise UsageError(f"bench request {path} is format {version}; this edgedl reads format {REQUEST_VERSION}: "
                             "install the same edgedl on both ends")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise UsageError(f"bench request {path}: {where}: {first['msg']}") from None
