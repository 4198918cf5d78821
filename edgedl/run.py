"""A run directory: the manifest, the artifacts with their sidecars, and the report.

Write order keeps the manifest honest: an artifact's files are moved into ``artifacts/`` and its
sidecar written before the manifest (replaced atomically) names it. A run that fails or is
interrupted leaves a manifest whose every artifact exists, with the failed stage marked.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedl._fs import atomic_write_json, sha256_file
from edgedl.artifacts import METRIC_KEYS, write_sidecar
from edgedl.bench import conditions
from edgedl.devices import host_device
from edgedl.errors import UsageError

if TYPE_CHECKING:
    from edgedl.recipe import Recipe

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def default_run_dir(recipe: "Recipe") -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{recipe.name}-{stamp}"


class RunDir:
    """The folder of one run and its manifest."""

    def __init__(self, path: str | Path, recipe: "Recipe", force: bool = False, device: dict | None = None):
        self.path = Path(path)
        if not self.is_free(self.path, force):
            if self.path.is_dir():
                shutil.rmtree(self.path)
            else:
                self.path.unlink()
        self.artifacts_dir = self.path / "artifacts"
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        self.manifest: dict[str, Any] = {
            "edgedl_manifest": MANIFEST_VERSION,
            "status": "running",
            "created": _now(),
            "finished": None,
            "recipe": recipe.model_dump(mode="json"),
            "versions": conditions.versions(),
            "host": conditions.host(),
            "device": device or host_device(),
            "stages": [],
            "artifacts": [],
            "notes": [],
        }
        self.save()

    @staticmethod
    def is_free(path: Path, force: bool) -> bool:
        """True if ``path`` can hold a new run; raises unless ``force`` when it holds something."""
        taken = path.exists() and (not path.is_dir() or any(path.iterdir()))
        if taken and not force:
            raise UsageError(f"run directory {path} already exists; pass --force to replace it or choose another --out")
        return not taken

    # ---- manifest -------------------------------------------------------------------------
    def save(self) -> None:
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def stage_started(self, name: str, index: int) -> dict:
        record = {"index": index, "stage": name, "status": "running", "started": _now(), "seconds": None, "error": None}
        self.manifest["stages"].append(record)
        self.save()
        return record

    def stage_finished(self, record: dict, seconds: float, error: str | None = None,
                       measured: dict | None = None) -> None:
        record["status"] = "failed" if error else "done"
        record["seconds"] = round(seconds, 3)
        record["error"] = error
        record.update(measured or {})  # a failed stage's findings (StageError.measured)
        self.save()

    def finish(self, status: str) -> None:
        self.manifest["status"] = status
        self.manifest["finished"] = _now()
        self.save()

    def tempdir(self) -> Path:
        """A scratch folder inside the run (same filesystem, so moves are renames)."""
        return Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.path))

    # ---- artifacts ------------------------------------------------------------------------
    def artifact(self, name: str) -> dict:
        for record in self.manifest["artifacts"]:
            if record["name"] == name:
                return record
        raise KeyError(name)

    def artifact_path(self, record: dict) -> Path:
        return self.path / record["path"]

    def add_artifact(
        self,
        produced: Path,
        *,
        name: str,
        format: str,
        precision: str,
        stage: str,
        sidecar: dict | None = None,
        extra_files: tuple[Path, ...] = (),
        parent: str | None = None,
        metrics: dict | None = None,
        notes: dict | None = None,
        extra: dict | None = None,
    ) -> dict:
        """Move a produced file (and its companions) into artifacts/, then record it."""
        if any(r["name"] == name for r in self.manifest["artifacts"]):
            raise UsageError(f"artifact name '{name}' is used twice in this run")
        dest = self.artifacts_dir / name
        for companion in extra_files:
            shutil.move(str(companion), self.artifacts_dir / companion.name)
        shutil.move(str(produced), dest)
        files = [dest] + [self.artifacts_dir / c.name for c in extra_files]
        if sidecar is not None:
            digest = write_sidecar(dest, format, precision, sidecar)["sha256"]
        else:
            digest = sha256_file(dest)
        from edgedl.runtime import probed

        probed.mark(digest)  # written by this process's exporters and quantizers, not brought from elsewhere
        record = {
            "name": name,
            "path": str(dest.relative_to(self.path)),
            "format": format,
            "precision": precision,
            "produced_by": stage,
            "parent": parent,
            "size_bytes": sum(f.stat().st_size for f in files),
            "files": [str(f.relative_to(self.path)) for f in files],
            "sha256": digest,
            "metrics": {key: None for key in METRIC_KEYS},
            "notes": {},
            **(extra or {}),
        }
        record["metrics"].update(metrics or {})
        record["notes"].update(notes or {})
        self.manifest["artifacts"].append(record)
        self.save()
        return record

    def set_metrics(self, record: dict, metrics: dict | None = None, notes: dict | None = None, **extra: Any) -> None:
        """Update an artifact's metrics (and reasons for the ones that stay null), then save."""
        record["metrics"].update(metrics or {})
        for key, value in (metrics or {}).items():
            if value is not None:
                record["notes"].pop(key, None)
        record["notes"].update(notes or {})
        record.update(extra)
        self.save()

    def explain_missing(self) -> None:
        """Give every metric still null a reason, so no figure is silently absent."""
        stages = {s["stage"] for s in self.manifest["stages"] if s["status"] == "done"}
        for record in self.manifest["artifacts"]:
            for key, value in record["metrics"].items():
                if value is None and key not in record["notes"]:
                    if key == "accuracy" and "evaluate" not in stages:
                        why = "not measured: the recipe has no evaluate stage"
                    elif key in ("latency_ms", "throughput_ips", "peak_rss_mb") and "benchmark" not in stages:
                        why = "not measured: the recipe has no benchmark stage"
                    else:
                        why = "not measured for this artifact"
                    record["notes"][key] = why
        self.save()

    def cleanup(self) -> None:
        for tmp in self.path.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
