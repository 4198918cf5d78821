"""Which TensorRT platform this machine is: what an engine records and what the guard compares.

TensorRT ships one build per platform and serialized engines "are not portable across platforms"
(TensorRT support matrix): x86_64, aarch64 Jetson (L4T, JetPack 6 and older) and aarch64 SBSA
(Arm servers, and Jetson from JetPack 7, whose Thor and Orin use the SBSA build). Read under a root
folder so that a recorded tree can stand in for a device. numpy-free: the runtime imports it.
"""

from __future__ import annotations

import platform as _platform
import re
from pathlib import Path

PLATFORMS = ("x86_64", "aarch64-jetson", "aarch64-sbsa")
FIRST_SBSA_L4T = 38  # JetPack 7 (Jetson Linux 38) moved Jetson to the SBSA CUDA and TensorRT builds


def l4t_release(root: str | Path = "/") -> str | None:
    """L4T version from /etc/nv_tegra_release ('# R36 (release), REVISION: 4.3, ...' -> '36.4.3')."""
    try:
        text = (Path(root) / "etc/nv_tegra_release").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def platform_name(machine: str, l4t: str | None) -> str:
    """``x86_64``, ``aarch64-jetson`` (L4T before 38) or ``aarch64-sbsa``."""
    if machine.lower() in ("x86_64", "amd64"):
        return "x86_64"
    if l4t and int(l4t.split(".")[0]) < FIRST_SBSA_L4T:
        return "aarch64-jetson"
    return "aarch64-sbsa"


def this_platform(root: str | Path = "/") -> dict:
    """This machine's TensorRT platform, whether it is a Jetson, and its L4T release."""
    l4t = l4t_release(root)
    return {"platform": platform_name(_platform.machine(), l4t), "jetson": l4t is not None, "l4t": l4t}
