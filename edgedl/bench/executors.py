"""Where a benchmark runs. Each executor runs ``edgedl bench`` on an artifact and returns its JSON
result; today that is a fresh local process, and SSH or adb executors plug in beside it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgedl.errors import StageError


class Executor:
    """Runs ``edgedl bench`` somewhere and returns the result dict (the same JSON on every executor)."""

    name = ""

    def bench(self, artifact: Path, options: dict[str, Any], scratch: Path) -> dict:  # pragma: no cover
        raise NotImplementedError


def bench_args(options: dict[str, Any]) -> list[str]:
    """``edgedl bench`` flags for a dict of its options (None and False are left out)."""
    args: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


class LocalExecutor(Executor):
    """A fresh process on this machine, so the caller's memory and threads do not distort the figures."""

    name = "local"

    def bench(self, artifact: Path, options: dict[str, Any], scratch: Path) -> dict:
        out_json = (scratch / f"{artifact.name}.bench.json").resolve()
        # `python -m` puts the working directory first on sys.path, where a model's folder may hold a
        # numpy.py: -P (3.11+) leaves it out and keeps the user's relative paths (--energy csv:FILE) valid.
        safe = ["-P"] if sys.version_info >= (3, 11) else ["-I"]
        cmd = [sys.executable, *safe, "-m", "edgedl", "bench", str(artifact), "--json", str(out_json), "--quiet",
               *bench_args(options)]
        from edgedl.runtime.probed import child_env, digest

        # told that this process wrote or probed the artifact, so its first open needs no probe again
        proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env([digest(artifact)]))
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise StageError(f"benchmark of {artifact.name} failed: {last}")
        return json.loads(out_json.read_text())


EXECUTORS: dict[str, type[Executor]] = {cls.name: cls for cls in (LocalExecutor,)}
