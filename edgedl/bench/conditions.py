"""What a measurement ran under: versions, CPU, threads, governor, temperature, load."""

from __future__ import annotations

import os
import platform
import socket
from glob import glob
from importlib import metadata

PACKAGES = ("edgedl", "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "torch-pruning",
            "ai-edge-litert", "litert-torch", "ai-edge-quantizer", "tensorrt", "polygraphy", "nvidia-ml-py")
# CPU features that decide INT8 speed: VNNI and AMX on x86, dot product and i8mm on Arm.
INT8_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
                 "asimd", "asimddp", "i8mm", "bf16", "sve", "sve2")


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


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The INT8-relevant features this CPU reports (x86 ``flags``, Arm ``Features``)."""
    text = cpuinfo if cpuinfo is not None else (_read("/proc/cpuinfo") or "")
    found: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found.update(value.split())
    return [f for f in INT8_FEATURES if f in found]


def cpu_clocks_mhz() -> dict | None:
    """Current, minimum and maximum frequency over the CPUs (MHz), where cpufreq exposes them."""
    cur = [_read(p) for p in glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")]
    cur = [int(v) / 1000 for v in cur if v and v.isdigit()]
    top = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if not cur:
        return None
    return {"min": min(cur), "max": max(cur), "cpuinfo_max": int(top) / 1000 if top and top.isdigit() else None}


def jetson(root: str = "/") -> dict | None:
    """nvpmodel's power mode and the GPU clock on a Jetson; None elsewhere."""
    base = root.rstrip("/")
    if _read(f"{base}/etc/nv_tegra_release") is None:
        return None
    status = _read(f"{base}/var/lib/nvpmodel/status") or ""  # "pmode:0001 fmode:..."
    mode = status.split("pmode:", 1)[1].split()[0] if "pmode:" in status else None
    gpu = [_read(p) for p in glob(f"{base}/sys/class/devfreq/*.gpu/cur_freq") + glob(f"{base}/sys/class/devfreq/*ga10b/cur_freq")]
    return {"nvpmodel_mode": int(mode) if mode and mode.isdigit() else mode,
            "gpu_mhz": int(gpu[0]) / 1e6 if gpu and gpu[0] and gpu[0].isdigit() else None,
            "jetson_clocks": "not read (needs root: run `sudo jetson_clocks --show` and record it)"}


def cpu_busy_seconds() -> float | None:
    """CPU time all processes have spent busy since boot, in seconds (from /proc/stat)."""
    line = (_read("/proc/stat") or "").split("\n", 1)[0].split()
    if not line or line[0] != "cpu":
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in line[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
