"""An external meter's recording: ``--energy csv:FILE``, a CSV of timestamped watts (a Joulescope or
lab power analyzer export, or any logger) aligned to the run's window by its timestamps.

The file needs a header with a time column (``timestamp``, ``time`` or ``unix_time``: Unix
seconds, or ISO 8601 with a time zone) and either a power column (``watts``, ``power``,
``power_w``) or current and voltage columns (``current``/``current_a`` and
``voltage``/``voltage_v``). The windows are taken on the wall clock, so the meter's clock must
agree with this machine's (NTP); the file is read when a window ends.
"""

from __future__ import annotations

import csv
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from edgedl.bench.energy.base import EnergySource, EnergyUnavailable, PowerWindow, SensorLost, sampled_window

TIME = ("timestamp", "time", "unix_time", "time_s")
POWER = ("watts", "power", "power_w", "w")
CURRENT = ("current", "current_a", "amps", "i")
VOLTAGE = ("voltage", "voltage_v", "volts", "v")


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    return next((lowered.index(n) for n in names if n in lowered), None)


def _seconds(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        if stamp.tzinfo is None:
            raise ValueError(f"timestamp '{value}' has no time zone; write it in UTC ('Z') or as Unix seconds")
        return stamp.timestamp()


def read_trace(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(times in Unix seconds, watts) from a meter's CSV, sorted by time."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh) if r and not r[0].lstrip().startswith("#")]
    if len(rows) < 2:
        raise ValueError(f"{path} has no samples")
    header, body = rows[0], rows[1:]
    t_col, p_col = _column(header, TIME), _column(header, POWER)
    i_col, v_col = _column(header, CURRENT), _column(header, VOLTAGE)
    if t_col is None or (p_col is None and (i_col is None or v_col is None)):
        raise ValueError(f"{path}: header {header} needs a time column ({'/'.join(TIME)}) and watts "
                         f"({'/'.join(POWER)}) or current and voltage columns")
    times = np.array([_seconds(r[t_col]) for r in body])
    if p_col is not None:
        watts = np.array([float(r[p_col]) for r in body])
    else:
        watts = np.array([float(r[i_col]) * float(r[v_col]) for r in body])
    order = np.argsort(times, kind="stable")
    return times[order], watts[order]


class CsvSource(EnergySource):
    name = "csv"
    kind = "trace"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.clock is time.monotonic:  # the meter's timestamps are wall-clock time
            self.clock = time.time

    def check(self) -> None:
        if not self.arg:
            raise EnergyUnavailable("--energy csv:FILE needs the meter's CSV file")
        self.path = Path(self.arg)
        if not self.path.parent.is_dir():
            raise EnergyUnavailable(f"folder of the meter's CSV does not exist: {self.path.parent}")

    def describe(self) -> str:
        return f"external meter recording {self.path.name}"

    def start(self, threaded: bool = True) -> None:
        self._t0 = self.clock()

    def poll(self, at=None) -> None:  # the meter samples on its own
        return None

    def stop(self) -> PowerWindow:
        t1 = self.clock()
        try:
            times, watts = read_trace(self.path)
        except (OSError, ValueError) as exc:
            raise SensorLost(f"the meter's CSV cannot be read: {exc}") from None
        if len(times) == 0 or times[0] > self._t0 or times[-1] < t1:
            span = f"{times[0]:.3f}..{times[-1]:.3f}" if len(times) else "nothing"
            raise SensorLost(f"the meter's CSV covers {span} (Unix seconds) but the window was {self._t0:.3f}..{t1:.3f}: "
                             "record through the whole run and check that the meter's clock is this machine's")
        return sampled_window(times, watts, self._t0, t1)
