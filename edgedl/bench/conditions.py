"""What a measurement ran under: versions, CPU, threads, governor, temperature, load."""

from __future__ import annotations

import os
import platform
import socket
from glob import glob
from importlib import metadata

PACKAGES = ("edgedl", "numpy", "torch", "onnx", "onnxruntime", "onnxscript", "torch-pruning")


def versions(packages=PACKAGES) -> dict[str, str | None]:
    """Installed versions (from package metadata: nothing is imported)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return None


def cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def host() -> dict:
    """The machine: OS, CPU, cores, memory."""
    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        memory_gb = None
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": memory_gb,
    }


def thermal() -> dict:
    """CPU frequency governor, temperatures (°C) and load average, where the OS exposes them."""
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    temps = {}
    for zone in sorted(glob("/sys/class/thermal/thermal_zone*")):
        kind, value = _read(f"{zone}/type"), _read(f"{zone}/temp")
        if kind and value and value.lstrip("-").isdigit():
            temps[kind] = int(value) / 1000.0
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"governor": governor, "temperatures_c": temps or None, "loadavg": list(load) if load else None}
