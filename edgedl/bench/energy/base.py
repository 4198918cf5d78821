"""The contract every power source follows, and the arithmetic they share.

A source is started and stopped around a window (idle, then inference) and returns a
:class:`PowerWindow`: energy, average and peak watts, sample count and period, and an uncertainty
from the sampling. Sources read files under a root folder (``/`` on a device, a recorded or
synthetic tree in tests and replays) and take the clock as an argument, so a test can drive
them against known ground truth without depending on this machine's timing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edgedl.errors import EdgedlError

Clock = Callable[[], float]


class EnergyUnavailable(EdgedlError):
    """The source cannot measure here; the message says why and what to do."""


class SensorLost(EdgedlError):
    """A sensor stopped answering during a window (unplugged, driver unloaded)."""


@dataclass
class PowerWindow:
    """What a source measured over one window."""

    seconds: float
    energy_j: float
    avg_w: float
    peak_w: float
    samples: int
    period_s: Optional[float]
    uncertainty_j: float
    rails_w: dict = field(default_factory=dict)  # average watts per rail read (sub-rails included)

    def as_dict(self) -> dict:
        return asdict(self)


def integrate(times, watts, t0: float, t1: float) -> float:
    """Energy (J) of piecewise-linear power through (times, watts) over [t0, t1].

    The samples must cover the window; the ends are interpolated between the samples around them.
    """
    t = np.asarray(times, dtype=float)
    p = np.asarray(watts, dtype=float)
    if len(t) == 0 or t[0] > t0 + 1e-9 or t[-1] < t1 - 1e-9:
        raise ValueError("the samples do not cover the window")
    inside = (t > t0) & (t < t1)
    tt = np.concatenate([[t0], t[inside], [t1]])
    pp = np.concatenate([[np.interp(t0, t, p)], p[inside], [np.interp(t1, t, p)]])
    return float(np.sum((pp[1:] + pp[:-1]) * np.diff(tt)) / 2.0)


def sampled_window(times, watts, t0: float, t1: float, rails: dict | None = None) -> PowerWindow:
    """A window from power samples: trapezoidal energy, with an uncertainty of the standard error of
    the mean power times the window plus half a sample period of the power swing at each edge."""
    t = np.asarray(times, dtype=float)
    p = np.asarray(watts, dtype=float)
    seconds = t1 - t0
    energy = integrate(t, p, t0, t1)
    inside = p[(t >= t0) & (t <= t1)]
    period = float(np.median(np.diff(t))) if len(t) > 1 else None
    spread = float(inside.std(ddof=1)) if len(inside) > 1 else 0.0
    statistical = seconds * spread / np.sqrt(max(len(inside), 1))
    edges = (period or 0.0) * float(inside.max() - inside.min()) if len(inside) else 0.0
    return PowerWindow(seconds=seconds, energy_j=energy, avg_w=energy / seconds if seconds > 0 else 0.0,
                       peak_w=float(inside.max()) if len(inside) else 0.0, samples=int(len(inside)),
                       period_s=period, uncertainty_j=float(statistical + edges), rails_w=rails or {})


class EnergySource:
    """Start, stop, get a :class:`PowerWindow`.

    Subclasses implement ``_read`` (one reading: watts for power sensors, joules for counters)
    and say which kind they are. ``poll`` takes one reading; a background thread calls it every
    ``period_s`` between ``start`` and ``stop`` (tests call it themselves with ``threaded=False``).
    """

    name = ""
    kind = "power"  # "power": _read gives watts; "counter": _read gives cumulative joules
    min_window_s = 0.0  # windows shorter than this are stretched by repeating the workload

    def __init__(self, root: str | Path = "/", clock: Clock = time.monotonic, period_s: float = 0.01,
                 sensor=None, arg: Optional[str] = None, rails: Optional[list[str]] = None):
        self.root = Path(root)
        self.clock = clock
        self.period_s = period_s
        self.sensor = sensor  # the device profile's Sensor entry, when a profile names one
        self.arg = arg
        self.rails = rails
        self._times: list[float] = []
        self._values: list[float] = []
        self._rails: list[dict] = []
        self._error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._t0 = 0.0

    # ---- what a source supplies ----
    def check(self) -> None:
        """Raise :class:`EnergyUnavailable` if this source cannot measure here (called before any work)."""
        self._read()

    def describe(self) -> str:
        """One line: the sensor and what its total covers."""
        return self.name

    def _read(self) -> float:  # pragma: no cover - every source overrides it
        raise NotImplementedError

    def _read_rails(self) -> dict:
        """Per-rail watts of the last reading, where the source has rails."""
        return {}

    # ---- the window ----
    def start(self, threaded: bool = True) -> None:
        self._times, self._values, self._rails, self._error = [], [], [], None
        self._t0 = self.clock()
        self.poll(at=self._t0)
        if threaded:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"edgedl-energy-{self.name}", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.poll()
            if self._error is not None:
                return

    def poll(self, at: Optional[float] = None) -> None:
        """Take one reading now (or record it at time ``at``)."""
        if self._error is not None:
            return
        try:
            value = self._read()
            rails = self._read_rails()
        except (OSError, ValueError, EdgedlError) as exc:
            self._error = exc
            return
        self._times.append(self.clock() if at is None else at)
        self._values.append(value)
        self._rails.append(rails)

    def stop(self) -> PowerWindow:
        """End the window and return what it measured; raises :class:`SensorLost` if the sensor went away."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        t1 = self.clock()
        self.poll(at=t1)
        if self._error is not None:
            raise SensorLost(f"{self.describe()} stopped answering during the run ({self._error})")
        return self._window(self._t0, t1)

    def _window(self, t0: float, t1: float) -> PowerWindow:
        rails = {}
        if self._rails and self._rails[0]:
            rails = {k: float(np.mean([r.get(k, np.nan) for r in self._rails])) for k in self._rails[0]}
        if self.kind == "power":
            return sampled_window(self._times, self._values, t0, t1, rails)
        return self._counter_window(t0, t1, rails)

    def _counter_window(self, t0: float, t1: float, rails: dict) -> PowerWindow:
        """Energy from a cumulative counter: the sum of the steps between readings (a source whose
        counter wraps unwraps it in ``_read``, as RAPL does)."""
        steps = np.diff(np.asarray(self._values, dtype=float))
        times = np.asarray(self._times, dtype=float)
        seconds = t1 - t0
        energy = float(steps.sum())
        dt = np.diff(times)
        step_power = steps[dt > 0] / dt[dt > 0]
        avg = energy / seconds if seconds > 0 else 0.0
        return PowerWindow(seconds=seconds, energy_j=energy, avg_w=avg,
                           peak_w=float(step_power.max()) if len(step_power) else avg, samples=int(len(self._values)),
                           period_s=float(np.median(dt)) if len(dt) else None,
                           uncertainty_j=self._counter_uncertainty(avg), rails_w=rails)

    def _counter_uncertainty(self, avg_w: float) -> float:
        """How far a counter's reading can lag the truth at each end of the window (per source)."""
        return 0.0
