"""Memory a benchmark records: the process's resident set now and at its peak, its children's
peak, and the system's available memory (which is what a Jetson's GPU allocations come out of:
CPU and GPU share one memory there)."""

from __future__ import annotations

import sys

from edgedl.bench.latency import peak_rss_mb


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rss_mb() -> float | None:
    """Resident memory of this process now, MiB."""
    return _status_mb("VmRSS")


def children_peak_mb() -> float | None:
    """The largest peak resident memory of the children this process has waited for, MiB."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if not peak:
        return None
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def available_mb(root: str = "/") -> float | None:
    """MemAvailable from /proc/meminfo, MiB (system-wide)."""
    try:
        with open(f"{root.rstrip('/')}/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


__all__ = ["available_mb", "children_peak_mb", "peak_rss_mb", "rss_mb"]
