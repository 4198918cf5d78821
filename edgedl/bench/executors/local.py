"""A fresh process on this machine, so the caller's memory and threads do not distort the figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgedl.bench.executors import Executor
from edgedl.bench.request import BenchRequest
from edgedl.errors import StageError


class LocalExecutor(Executor):
    scheme = "local"

    @property
    def label(self) -> str:
        return "local"

    def bench(self, request: BenchRequest, scratch: Path) -> dict:
        from edgedl.runtime.probed import child_env, digest

        artifact = Path(request.artifact)
        sent = scratch / f"{artifact.name}.request.json"
        out_json = (scratch / f"{artifact.name}.bench.json").resolve()
        request.write(sent)
        # `python -m` puts the working directory first on sys.path, where a model's folder may hold a
        # numpy.py: -P (3.11+) leaves it out and keeps the user's relative paths (--energy csv:FILE) valid.
        safe = ["-P"] if sys.version_info >= (3, 11) else ["-I"]
        cmd = [sys.executable, *safe, "-m", "edgedl", "bench", "--request", str(sent.resolve()), "--json",
               str(out_json), "--quiet"]
        # told that this process wrote or probed the artifact, so its first open needs no probe again
        proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env([digest(artifact)]))
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise StageError(f"benchmark of {artifact.name} failed: {last}")
        result = json.loads(out_json.read_text())
        host = result.get("conditions", {}).get("host") or {}
        result["device"] = {"on": "local", "label": "local", "profile": None, "hostname": host.get("hostname")}
        return result
