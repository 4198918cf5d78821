"""File helpers shared by the runtime and the pipeline: atomic writes and hashing (stdlib only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    import hashlib  # here, not at the top: `import edgedl.runtime` pays for none of these

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A reader sees the old file or the new one, never a partial write.
    """
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_writable(path: str | os.PathLike, what: str, folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: a file ``path`` (or a run folder
    when ``folder``) must be creatable in its nearest existing folder. The check writes a temporary
    file there and removes it, so /proc, a read-only mount or a missing permission fail now, in one
    line, not after the work.

    Raises:
        UsageError: naming ``what`` (the flag), the path and why.
    """
    import tempfile

    from edgedl.errors import UsageError

    path = Path(path)
    if not folder and path.is_dir():
        raise UsageError(f"{what} {path}: is a folder; give a file name")
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path}: is a file; give a folder")
    base = path if folder and path.is_dir() else path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not folder and base != path.parent:
        raise UsageError(f"{what} {path}: folder {path.parent} does not exist; create it or choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgedl-write-check-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot write in {base} ({exc.strerror or type(exc).__name__}); choose "
                         "another path") from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    import json

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


TEXT_LIMIT = 4 << 20  # bytes: a recipe, sidecar or profile larger than this is not one


def read_text(path: str | os.PathLike, what: str, limit: int = TEXT_LIMIT) -> str:
    """A small UTF-8 text file (recipe, sidecar, profile, config), or one UsageError line naming the
    file and what is wrong: missing, too large to be what it claims, or not UTF-8 text."""
    from edgedl.errors import UsageError

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limit:
            raise UsageError(f"{what} {path} is {size} bytes, over the {limit >> 20} MiB a {what} may hold")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """A small YAML file as plain data (``safe_load``: no Python tags), or one UsageError line:
    missing, too large, not UTF-8, not YAML, or using aliases (``*name``), which are refused because
    a few hundred bytes of nested aliases expand to gigabytes once the recipe is written out."""
    import yaml

    from edgedl.errors import UsageError

    text = read_text(path, what)
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise UsageError(f"{what} {path} uses YAML aliases (*name); write the values out")
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise UsageError(f"cannot read {what} {path}: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None
