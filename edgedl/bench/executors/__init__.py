"""Where a benchmark request runs: one registry of executors, one file each (``local``, ``ssh``,
``adb``). Each takes a :class:`~edgedl.bench.request.BenchRequest` unchanged and returns the result
dict ``edgedl bench --json`` writes, the same on every executor.

An executor is chosen by the address the user gives with ``--on``: ``local`` (a fresh process on
this machine), ``ssh://[user@]host[:port]``, ``adb://SERIAL``, or a bare name, which is a host
alias of the SSH client's configuration (``~/.ssh/config``). Adding an executor is one file here
that subclasses :class:`Executor` with its ``scheme``, and its module's name in ``BUILTIN``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import ClassVar

from edgedl.bench.request import BenchRequest
from edgedl.errors import UsageError

EXECUTORS: dict[str, type["Executor"]] = {}
BUILTIN = ("local", "ssh", "adb")
BARE_NAME = "ssh"  # the scheme a bare --on NAME means: a host alias of the SSH client's configuration


class Executor:
    """Runs a bench request somewhere and returns its result.

    Attributes:
        scheme: what an address starts with (``ssh`` in ``ssh://host``); ``local`` is a bare word.
        address: the address as the user gave it (``ssh://pi@10.0.0.7``, ``orin``).
    """

    scheme: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.scheme:
            if cls.scheme in EXECUTORS:
                raise ValueError(f"executor '{cls.scheme}' is defined twice")
            EXECUTORS[cls.scheme] = cls

    def __init__(self, address: str = "local", **options):
        self.address = address
        self.options = options

    @property
    def label(self) -> str:
        """How results and progress lines name this device."""
        return self.address

    def validate(self, request: BenchRequest) -> None:
        """Before anything reaches a device, without I/O: refuse (``UsageError``) what this executor
        cannot carry out as asked, rather than measure something else."""

    def check(self, request: BenchRequest | None = None) -> dict:
        """Before any work: the device is reachable and can run ``request`` (edgedl and the artifact's
        backend installed); returns what the device says of itself (``facts``). Raises
        :class:`~edgedl.errors.DeviceError` with one line when it cannot."""
        return {}

    def bench(self, request: BenchRequest, scratch: Path) -> dict:  # pragma: no cover - contract
        raise NotImplementedError


def _load_builtin() -> None:
    for module in BUILTIN:
        importlib.import_module(f"edgedl.bench.executors.{module}")


def scheme_of(address: str) -> str:
    """``ssh`` for ``ssh://host``, ``local`` for ``local``, the bare-name scheme for ``orin``."""
    if "://" in address:
        return address.split("://", 1)[0].lower()
    return "local" if address == "local" else BARE_NAME


def executor_for(address: str = "local", **options) -> Executor:
    """The executor that reaches ``address`` (``local``, ``ssh://...``, ``adb://...`` or a host alias)."""
    _load_builtin()
    if not address or address != address.strip():
        raise UsageError(f"--on '{address}': give local, ssh://[user@]host[:port], adb://SERIAL or an ssh host alias")
    scheme = scheme_of(address)
    if scheme not in EXECUTORS:
        raise UsageError(f"--on {address}: unknown scheme '{scheme}://'; known: "
                         f"{', '.join(s + '://' for s in sorted(EXECUTORS) if s != 'local')} and local")
    return EXECUTORS[scheme](address, **options)


def __getattr__(name: str):
    if name == "LocalExecutor":  # the one most callers want, without naming its module
        from edgedl.bench.executors.local import LocalExecutor

        return LocalExecutor
    raise AttributeError(name)
