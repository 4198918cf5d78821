"""CPU package energy through Linux powercap's RAPL counters (Intel, and AMD Zen on recent kernels).

Each package zone ``/sys/class/powercap/intel-rapl:N`` has ``energy_uj``, a counter that wraps to
zero past ``max_energy_range_uj``. Core and uncore are sub-zones of the package and are not added
to it; dram, where it exists, is reported apart. Since CVE-2020-8694 (Platypus) the counters are
readable by root only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgedl.bench.energy.base import EnergySource, EnergyUnavailable

POWERCAP = "sys/class/powercap"
ROOT_ONLY = ("RAPL energy counters are readable only by root since CVE-2020-8694 ({path}): run the bench as root, or "
             "let your user read them until the next boot with `sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj`")


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


class RaplSource(EnergySource):
    """Sums the package counters; each step between readings is taken modulo the counter's range."""

    name = "rapl"
    kind = "counter"
    min_window_s = 0.1  # the counters update about every millisecond
    reader: Callable[[Path], str] = staticmethod(_read_text)  # tests swap in a reader that raises

    def _zones(self) -> list[Path]:
        return sorted(p for p in (self.root / POWERCAP).glob("intel-rapl:*") if p.name.count(":") == 1)

    def check(self) -> None:
        self.packages = self._zones()
        if not self.packages:
            raise EnergyUnavailable(f"no RAPL zones under {self.root / POWERCAP}: this CPU or kernel does not expose "
                                    "powercap RAPL (virtual machines usually do not)")
        ranges = []
        for zone in self.packages:
            try:
                ranges.append(int(self.reader(zone / "max_energy_range_uj")))
                int(self.reader(zone / "energy_uj"))
            except PermissionError:
                raise EnergyUnavailable(ROOT_ONLY.format(path=zone / "energy_uj")) from None
        # Each package wraps on its own; steps are corrected per package in _read's running total.
        self._ranges = ranges
        self._last = [int(self.reader(z / "energy_uj")) for z in self.packages]
        self._total_uj = 0

    def describe(self) -> str:
        names = [self.reader(z / "name") if (z / "name").exists() else z.name for z in self.packages]
        return f"RAPL {' + '.join(names)} (CPU package energy)"

    def _read(self) -> float:
        """Cumulative joules since check(), unwrapped per package (read at least once per wrap period)."""
        for i, zone in enumerate(self.packages):
            now = int(self.reader(zone / "energy_uj"))
            step = now - self._last[i]
            if step < 0:  # the counter passed max_energy_range_uj and started again from zero
                step += self._ranges[i]
            self._total_uj += step
            self._last[i] = now
        return self._total_uj / 1e6

    def _counter_uncertainty(self, avg_w: float) -> float:
        return 2 * 1e-3 * avg_w  # about one update period (1 ms) of lag at each end
