"""Energy per inference: one file per power source behind one contract (see base.py).

``--energy auto`` takes the device profile's sensors in order, then INA3221, NVML and RAPL, and
uses the first that can measure here; when none can, energy is null with each source's reason.
A named source that cannot measure is an error before any work.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

from edgedl.bench.energy.base import (Clock, EnergySource, EnergyUnavailable, PowerWindow, SensorLost, integrate,
                                      sampled_window)
from edgedl.errors import UsageError

# name -> "module:Class"; a source imports its library only when it is opened.
SOURCES = {
    "ina3221": "edgedl.bench.energy.ina3221:Ina3221Source",
    "rapl": "edgedl.bench.energy.rapl:RaplSource",
    "nvml": "edgedl.bench.energy.nvml:NvmlSource",
    "cmd": "edgedl.bench.energy.command:CommandSource",
    "csv": "edgedl.bench.energy.csv_file:CsvSource",
}
AUTO_ORDER = ("ina3221", "nvml", "rapl")
CHOICES = "auto, ina3221, rapl, nvml, cmd:COMMAND, csv:FILE, none"


def source_class(name: str) -> type[EnergySource]:
    module, _, cls = SOURCES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def parse_spec(spec: str) -> tuple[str, Optional[str]]:
    """``cmd:./watts.sh`` -> ("cmd", "./watts.sh"); an unknown name is a usage error naming the choices."""
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    if name not in SOURCES and name not in ("auto", "none"):
        raise UsageError(f"--energy {spec}: unknown energy source '{name}'; choose one of {CHOICES}")
    if name in ("cmd", "csv") and not arg:
        raise UsageError(f"--energy {name} needs its argument: {name}:{'COMMAND' if name == 'cmd' else 'FILE'}")
    return name, arg or None


def open_source(spec: str, root: str | Path = "/", profile=None, rails: Optional[list[str]] = None,
                **options) -> tuple[Optional[EnergySource], Optional[str]]:
    """The checked source ``spec`` names, or (None, why) for ``auto`` and ``none`` when nothing can measure.

    A named source that cannot measure raises :class:`EnergyUnavailable` with its reason.
    ``profile`` (a DeviceProfile) says which rails make the total and which sources to try first.
    """
    name, arg = parse_spec(spec)
    if name == "none":
        return None, "not measured (--energy none)"
    sensors = profile.power.sensors if profile is not None else []
    if name != "auto":
        sensor = next((s for s in sensors if s.energy == name), None)
        source = source_class(name)(root, sensor=sensor, arg=arg, rails=rails, **options)
        source.check()
        return source, None
    reasons = []
    for candidate in dict.fromkeys([s.energy for s in sensors if s.energy in AUTO_ORDER] + list(AUTO_ORDER)):
        sensor = next((s for s in sensors if s.energy == candidate), None)
        source = source_class(candidate)(root, sensor=sensor, rails=rails, **options)
        try:
            source.check()
            return source, None
        except EnergyUnavailable as exc:
            reasons.append(f"{candidate}: {exc}")
    extra = f"; {profile.power.note}" if profile is not None and profile.power.note else ""
    return None, "not measured: no power sensor here (" + "; ".join(reasons) + ")" + extra


def energy_record(source: EnergySource, window: PowerWindow, inferences: int, idle: Optional[PowerWindow],
                  replayed: bool, notes: list[str]) -> dict:
    """The JSON ``energy`` object: gross and idle-subtracted J/inference, watts, sampling, uncertainty."""
    gross = window.energy_j / inferences
    idle_w = idle.avg_w if idle is not None else None
    net = (window.energy_j - idle_w * window.seconds) / inferences if idle_w is not None else None
    uncertainty = window.uncertainty_j / inferences
    return {
        "source": source.name,
        "sensor": source.describe(),
        "scope": source.sensor.scope if source.sensor is not None else None,
        "replayed": replayed,
        "root": str(source.root),
        "j_per_inference": gross,
        "j_per_inference_net": net,
        "inferences_per_j": inferences / window.energy_j if window.energy_j > 0 else None,
        "uncertainty_j_per_inference": uncertainty,
        "uncertainty_pct": 100.0 * uncertainty / gross if gross > 0 else None,
        "idle_w": idle_w,
        "avg_w": window.avg_w,
        "peak_w": window.peak_w,
        "window_s": window.seconds,
        "inferences": inferences,
        "samples": window.samples,
        "period_s": window.period_s,
        "idle": idle.as_dict() if idle is not None else None,
        "rails_w": window.rails_w,
        "notes": notes,
    }


__all__ = ["CHOICES", "Clock", "EnergySource", "EnergyUnavailable", "PowerWindow", "SOURCES", "SensorLost",
           "energy_record", "integrate", "open_source", "parse_spec", "sampled_window", "source_class"]
