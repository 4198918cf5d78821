"""Jetson power monitors: INA3221 through hwmon (JetPack 5/6), JetPack 4's ina3221x IIO layout, and
the INA238 that reports microwatts (Thor).

hwmon gives per channel ``inN_label``, ``inN_input`` (bus voltage, mV) and ``currN_input`` (mA),
and no power file, so P = V * I. Channels labelled NC are not connected; the INA3221's sum
channel (in7, curr4) adds currents of rails that may overlap, so it is never read. Which rails
make the total comes from the device profile (VDD_IN on Orin Nano/NX, the module rails summed on
AGX Orin) or from ``--rails``; a sub-rail is never added to the rail it is part of.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from edgedl.bench.energy.base import EnergySource, EnergyUnavailable

DRIVERS = "sys/bus/i2c/drivers"


class Channel(NamedTuple):
    label: str
    kind: str  # "vi": mV and mA files; "uw": a microwatt power file; "mw": a milliwatt power file
    files: tuple[Path, ...]
    where: str


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def find_channels(root: Path) -> list[Channel]:
    """Every connected power channel under ``root``, in a stable order."""
    channels: list[Channel] = []
    for hwmon in sorted((root / DRIVERS / "ina3221").glob("*/hwmon/hwmon*")):
        for n in (1, 2, 3):  # in4-6 are shunt voltages, in7/curr4 the sum channel
            volts, amps = hwmon / f"in{n}_input", hwmon / f"curr{n}_input"
            if not volts.exists() or not amps.exists() or _text(hwmon / f"in{n}_enable") == "0":
                continue
            label = _text(hwmon / f"in{n}_label") or f"{hwmon.parent.parent.name}:{n}"
            if label.upper() == "NC" or "sum" in label.lower():
                continue
            channels.append(Channel(label, "vi", (volts, amps), str(hwmon)))
    for hwmon in sorted((root / DRIVERS / "ina238").glob("*/hwmon/hwmon*")):
        power = hwmon / "power1_input"
        if power.exists():
            label = next((t for t in (_text(hwmon / f) for f in ("label", "power1_label", "in1_label")) if t),
                         hwmon.parent.parent.name)
            channels.append(Channel(label, "uw", (power,), str(hwmon)))
    for iio in sorted((root / DRIVERS / "ina3221x").glob("*/iio:device*")):
        for n in (0, 1, 2):
            label, power = _text(iio / f"rail_name_{n}"), iio / f"in_power{n}_input"
            if label and power.exists() and label.upper() != "NC":
                channels.append(Channel(label, "mw", (power,), str(iio)))
    return channels


def read_watts(channel: Channel) -> float:
    if channel.kind == "vi":
        millivolts, milliamps = (float(p.read_text()) for p in channel.files)
        return millivolts * milliamps / 1e6
    value = float(channel.files[0].read_text())
    return value / 1e6 if channel.kind == "uw" else value / 1e3


class Ina3221Source(EnergySource):
    """Sums the total's rails at every sample; reports each rail's average alongside."""

    name = "ina3221"
    kind = "power"

    def check(self) -> None:
        self.channels = find_channels(self.root)
        if not self.channels:
            raise EnergyUnavailable(f"no INA3221/INA238 power monitor under {self.root / DRIVERS} (ina3221 hwmon, "
                                    "ina3221x IIO or ina238): this is not a Jetson, or the driver is not loaded")
        labels = [c.label for c in self.channels]
        total = self.rails or (self.sensor.total if self.sensor is not None else None)
        if not total:
            if "VDD_IN" not in labels:
                raise EnergyUnavailable(f"which rails make up the total is not known for this board (rails: "
                                        f"{', '.join(labels)}): pass --device PROFILE or --rails A,B")
            total = ["VDD_IN"]
        missing = [r for r in total if r not in labels]
        if missing:
            raise EnergyUnavailable(f"rail(s) {', '.join(missing)} not found; the power monitor has "
                                    f"{', '.join(labels)}: pass --rails with the ones that make up the total")
        self._check_not_double_counted(total)
        self.total = list(total)
        self._by_label = {c.label: c for c in self.channels}
        self._last: dict = {}
        self._read()

    def _check_not_double_counted(self, total: list[str]) -> None:
        if self.sensor is None:
            return
        parents = {r.label: r.parent for r in self.sensor.rails if r.role == "sub_rail"}
        for rail in total:
            if parents.get(rail) in total:
                raise EnergyUnavailable(f"rail {rail} is part of {parents[rail]}: adding both counts it twice")

    def describe(self) -> str:
        driver = {"vi": "INA3221 (hwmon)", "uw": "INA238 (hwmon, microwatts)", "mw": "INA3221 (ina3221x IIO)"}
        kinds = sorted({driver[self._by_label[r].kind] for r in self.total})
        scope = self.sensor.scope if self.sensor is not None else "module"
        return f"{' + '.join(self.total)} on {', '.join(kinds)}, {scope} power"

    def _read(self) -> float:
        self._last = {c.label: read_watts(c) for c in self.channels}
        return sum(self._last[r] for r in self.total)

    def _read_rails(self) -> dict:
        return dict(self._last)
