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


def child_env() -> dict[str, str]:
    """The environment for a child edgedl process: this one's, with what it probed added."""
    inherited = [d for d in os.environ.get(ENV, "").split(",") if d]
    return {**os.environ, ENV: ",".join(sorted(set(inherited) | _SEEN))}
