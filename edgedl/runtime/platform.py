"""Which TensorRT platform this machine is: what an engine records and what the guard compares.

TensorRT ships one build per platform and serialized engines "are not portable across platforms"
(TensorRT support matrix): x86_64, aarch64 Jetson (L4T, JetPack 6 and older) and aarch64 SBSA
(Arm servers, and Jetson from JetPack 7, whose Thor and Orin use the SBSA build). Read under a root
folder so that a recorded tree can stand in for a device. Standard library only: the runtime imports it.
"""

from __future__ import annotations

import platform as _platform
import re
from pathlib import Path

FIRST_SBSA_L4T = 38  # JetPack 7 (Jetson Linux 38) moved Jetson to the SBSA CUDA and TensorRT builds


def version_key(text: str | None) -> tuple[int, ...]:
    """``"10.3.0.30"`` -> (10, 3, 0, 30); parts that are not numbers are left out (empty for None)."""
    return tuple(int(p) for p in str(text or "").split(".") if p.isdigit())


def read_file(root: Path, rel: str) -> str | None:
    """A small text file under ``root`` (NULs of device-tree strings as spaces), or None."""
    try:
        return (root / rel).read_text(encoding="utf-8", errors="replace").replace("\x00", " ").strip()
    except OSError:
        return None


def l4t_release(root: str | Path = "/") -> str | None:
    """L4T version from /etc/nv_tegra_release ('# R36 (release), REVISION: 4.3, ...' -> '36.4.3')."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", read_file(Path(root), "etc/nv_tegra_release") or "")
    return f"{match.group(1)}.{match.group(2)}" if match else None


def machine(root: str | Path = "/") -> str:
    """The CPU architecture: this machine's, or the one a recorded tree's /proc/cpuinfo describes."""
    root = Path(root)
    if root == Path("/"):
        return _platform.machine()
    cpuinfo = read_file(root, "proc/cpuinfo") or ""
    return "aarch64" if "CPU implementer" in cpuinfo else "x86_64" if "vendor_id" in cpuinfo else _platform.machine()


def platform_name(arch: str, l4t: str | None) -> str:
    """``x86_64``, ``aarch64-jetson`` (L4T before 38) or ``aarch64-sbsa``."""
    if arch.lower() in ("x86_64", "amd64"):
        return "x86_64"
    if l4t and version_key(l4t)[:1] < (FIRST_SBSA_L4T,):
        return "aarch64-jetson"
    return "aarch64-sbsa"


def this_platform(root: str | Path = "/") -> dict:
    """This machine's TensorRT platform, whether it is a Jetson, and its L4T release.

    A Jetson is known by /etc/nv_tegra_release or by its device tree (``nvidia,tegra``, which
    containers see even without the release file); without the L4T release its platform is None:
    JetPack 6 and 7 both run Orin, on different TensorRT builds.
    """
    root = Path(root)
    l4t = l4t_release(root)
    compatible = read_file(root, "proc/device-tree/compatible") or read_file(root, "sys/firmware/devicetree/base/compatible")
    jetson = l4t is not None or "nvidia,tegra" in (compatible or "")
    arch = machine(root)
    return {"platform": None if jetson and l4t is None else platform_name(arch, l4t if jetson else None),
            "jetson": jetson, "l4t": l4t}
