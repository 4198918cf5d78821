"""Which files a native parser (protobuf for ONNX, the LiteRT flatbuffer reader) may open in this
process without a child process parsing them first.

A file from elsewhere may crash a native parser and take the process with it, so its first open
happens in a child (``probe``); then its sha256 is remembered here. Files this process wrote (an
export, a quantized copy) count as probed, and a parent process hands its list to the children
it starts (``EDGEDL_PROBED``). Nothing that travels with a model counts: a sidecar's sha256 only
says the file is the one the sidecar describes, not that it is safe to parse.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "EDGEDL_PROBED"
_SEEN: set[str] = set()


def digest(path: str | os.PathLike) -> str:
    from edgedl._fs import sha256_file

    return sha256_file(path)


def seen(sha256: str) -> bool:
    """Whether a file with this sha256 was probed here or by the parent process."""
    return sha256 in _SEEN or sha256 in os.environ.get(ENV, "").split(",")


def mark(sha256: str) -> None:
    _SEEN.add(sha256)


def child_env(digests: list[str]) -> dict[str, str]:
    """The environment for a child edgedl process that opens these files: this one's, with those of
    them this process probed or wrote (only those: the list stays short)."""
    return {**os.environ, ENV: ",".join(d for d in digests if seen(d))}


def in_child(path: str | os.PathLike, script: str, parser: str, prefix: str = "", timeout: float = 120) -> None:
    """Open ``path`` with ``script`` (``python -c``, the path as its argument) in a child process
    first, unless this process or its parent did before; a child that dies (a parser's segfault)
    or fails is one UsageError line here, and this process lives.

    Args:
        parser: what crashed, for the message (``the ONNX parser``).
        prefix: put before the child's last line of stderr when it fails with an error.
    """
    import subprocess
    import sys
    import tempfile

    from edgedl.errors import UsageError

    sha256 = digest(path)
    if seen(sha256):
        return
    try:
        # In an empty folder: `python -c` puts the working directory first on sys.path, and the model's
        # own folder (a cloned repository) may hold a numpy.py the child would import.
        with tempfile.TemporaryDirectory(prefix="edgedl-probe-") as empty:
            proc = subprocess.run([sys.executable, "-c", script, str(Path(path).resolve())], capture_output=True,
                                  text=True, timeout=timeout, cwd=empty)
    except subprocess.TimeoutExpired:
        raise UsageError(f"{parser} did not finish reading {path} within {timeout:.0f} s; the file may be corrupt") from None
    if proc.returncode < 0:
        raise UsageError(f"{path} is corrupt: {parser} crashed reading it (signal {-proc.returncode})")
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip() and not line.startswith("INFO:")]
        raise UsageError(prefix + (lines or ["unknown error"])[-1])
    mark(sha256)
