"""Where a benchmark request runs: one registry of executors, one file each (``local`` today; SSH and
adb devices plug in beside it). Each takes a :class:`~edgedl.bench.request.BenchRequest` unchanged
and returns the result dict ``edgedl bench --json`` writes, the same on every executor."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import ClassVar

from edgedl.bench.request import BenchRequest
from edgedl.errors import UsageError

EXECUTORS: dict[str, type["Executor"]] = {}
BUILTIN = ("local",)


class Executor:
    """Runs a bench request somewhere and returns its result."""

    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.name in EXECUTORS:
                raise ValueError(f"executor '{cls.name}' is defined twice")
            EXECUTORS[cls.name] = cls

    def bench(self, request: BenchRequest, scratch: Path) -> dict:  # pragma: no cover - contract
        raise NotImplementedError


def executor_for(name: str) -> Executor:
    """The executor registered as ``name``."""
    for module in BUILTIN:
        importlib.import_module(f"edgedl.bench.executors.{module}")
    if name not in EXECUTORS:
        raise UsageError(f"unknown executor '{name}'; known: {', '.join(sorted(EXECUTORS))}")
    return EXECUTORS[name]()


def __getattr__(name: str):
    if name == "LocalExecutor":  # the one most callers want, without naming its module
        from edgedl.bench.executors.local import LocalExecutor

        return LocalExecutor
    raise AttributeError(name)
