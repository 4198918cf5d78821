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

    def run(self, trust_model_code: bool = False) -> dict:
        """The result of :func:`edgedl.api.bench` for this request, here."""
        from edgedl import api

        options = self.model_dump(exclude={"edgedl_bench_request"})
        return api.bench(**options, trust_model_code=trust_model_code)

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
