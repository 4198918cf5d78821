"""The device a run measures on: one place that says which machine the figures come from.

Today that is the host edgedl runs on; device profiles (a Jetson, a phone) plug in here.
"""

from __future__ import annotations

from edgedl.bench import conditions


def host_device() -> dict:
    """This machine, as the manifest's ``device`` record."""
    return {"name": "host", "kind": "cpu", "description": conditions.cpu_model(),
            "note": "figures were measured on the machine that ran edgedl"}


def resolve_device(name: str | None = None) -> dict:
    """The device a recipe or command names; None (or ``host``) is this machine."""
    if name in (None, "host"):
        return host_device()
    from edgedl.errors import UsageError

    raise UsageError(f"unknown device '{name}'; known: host (device profiles come with edgedl's device support)")
