"""Real-time helpers: a fixed-rate loop that is honest about time, and a latency budget.

Both are numpy-only and keep their records in pre-sized arrays, so the loop itself does not
allocate per tick.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from edgedl.errors import UsageError


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan")}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max())}


def _takes_an_argument(fn: Callable) -> bool:
    """Whether ``fn`` is called with the tick number (``lambda: m(x)`` is not).

    Raises:
        UsageError: ``fn`` takes neither the tick nor nothing (``lambda tick, frame: ...``).
    """
    import inspect

    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (some builtins): pass the tick, as documented
        return True
    for args in ((0,), ()):
        try:
            signature.bind(*args)
            return bool(args)
        except TypeError:
            continue
    raise UsageError(f"RateLoop's callback must take the tick number or nothing; it takes {signature}")


class RateLoop:
    """Call ``callback(tick)`` (or ``callback()``) at ``hz`` on absolute deadlines and record how it went.

    Tick k is due at ``start + k / hz``. A callback that overruns its period is a deadline miss;
    the loop then skips the ticks it has already missed instead of bursting to catch up (the
    skipped ticks are counted), which is what a control loop wants. ``stats()`` gives the
    callback's latency distribution, the start jitter (actual minus scheduled start) and the
    misses, all in milliseconds. ``stop()`` may be called from any thread or from the callback.
    Counts cover the whole run; the distributions cover the last ``history`` ticks (a ring of
    pre-sized arrays, so a loop that runs for days keeps constant memory).

    The latency is what the app sees: each call starts after sleeping to its deadline, with caches
    cooled and clocks possibly stepped down, so it is higher than ``edgedl bench``'s p50 of
    back-to-back calls on the same file.

    >>> loop = RateLoop(30, lambda tick: model.predict(camera.read()))
    >>> loop.run(seconds=10); print(loop.report())
    """

    def __init__(self, hz: float, callback: Callable[..., Any], history: int = 10_000,
                 clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep):
        if not hz or hz <= 0:
            raise UsageError(f"RateLoop needs a positive rate in Hz, got {hz!r}")
        if not callable(callback):
            raise UsageError(f"RateLoop's callback must be callable, got {type(callback).__name__}")
        self.hz = float(hz)
        self.period = 1.0 / self.hz
        self.callback = callback if _takes_an_argument(callback) else (lambda tick: callback())
        self._clock, self._sleep = clock, sleep
        if history < 1:
            raise UsageError(f"RateLoop history must be at least 1 tick, got {history!r}")
        self._latency = np.zeros(history, np.float64)
        self._jitter = np.zeros(history, np.float64)
        self.ticks = 0
        self.misses = 0
        self.skipped = 0
        import threading

        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, ticks: int | None = None, seconds: float | None = None) -> "RateLoop":
        """Run until ``ticks`` more callbacks, ``seconds`` elapsed or ``stop()``; with neither
        limit, until ``stop()``."""
        limit = self.ticks + ticks if ticks is not None else float("inf")
        size = len(self._latency)
        clock, sleep, period = self._clock, self._sleep, self.period
        start = clock()
        end = start + seconds if seconds is not None else float("inf")
        slot = 0  # index of the next due tick on the schedule
        self._stop.clear()
        while self.ticks < limit and not self._stop.is_set():
            due = start + slot * period
            if due >= end:
                break
            now = clock()
            if due > now:
                sleep(due - now)
                now = clock()
            began = now
            self.callback(self.ticks)
            finished = clock()
            i = self.ticks % size
            self._latency[i] = finished - began
            self._jitter[i] = began - due
            self.ticks += 1
            next_due = due + period
            if finished > next_due:
                self.misses += 1
                passed = int((finished - due) // period) + 1  # slots whose start time has gone by
                self.skipped += passed - 1
                slot += passed
            else:
                slot += 1
        return self

    def stats(self) -> dict[str, Any]:
        n = self.ticks
        kept = min(n, len(self._latency))
        return {"hz": self.hz, "ticks": n, "deadline_misses": self.misses, "skipped_ticks": self.skipped,
                "miss_rate": self.misses / n if n else 0.0, "distribution_ticks": kept,
                "latency_ms": _percentiles(self._latency[:kept] * 1e3),
                "jitter_ms": _percentiles(np.abs(self._jitter[:kept]) * 1e3)}

    def report(self) -> str:
        s = self.stats()
        lat, jit = s["latency_ms"], s["jitter_ms"]
        return (f"{s['ticks']} ticks at {self.hz:g} Hz: latency p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, "
                f"p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms; jitter p99 {jit['p99']:.2f} ms; "
                f"deadline misses {s['deadline_misses']} ({s['miss_rate']:.1%}), skipped ticks {s['skipped_ticks']}")


class LatencyBudget:
    """Run a model within a latency budget, switching to a smaller fallback when it keeps overrunning.

    Every call is timed. A call over ``budget_ms`` is an overrun (counted, and ``last_overrun`` is
    set); after ``switch_after`` overruns in a row the fallback model (if any) takes over. With
    ``retry_after_s``, the primary model is tried again that long after the switch. Calls take
    arrays (``budget(x)``) or raw images (``budget.predict(image)``), like a runner.
    """

    def __init__(self, primary, budget_ms: float, fallback=None, switch_after: int = 3,
                 retry_after_s: float | None = None, clock: Callable[[], float] = time.perf_counter):
        if budget_ms <= 0:
            raise UsageError(f"budget_ms must be positive, got {budget_ms!r}")
        if switch_after < 1:
            raise UsageError(f"switch_after must be at least 1, got {switch_after!r}")
        self.primary, self.fallback = primary, fallback
        self.budget = budget_ms / 1e3
        self.switch_after, self.retry_after_s = switch_after, retry_after_s
        self._clock = clock
        self.active = primary
        self.calls = self.overruns = self.switches = 0
        self.last_overrun: bool = False
        self.last_ms: float = 0.0
        self._streak = 0
        self._switched_at: float | None = None
        import threading

        self._lock = threading.Lock()

    @property
    def on_fallback(self) -> bool:
        return self.active is not self.primary

    def __call__(self, x):
        model = self._pick()
        return self._timed(model, model.__call__, x)

    def predict(self, image):
        model = self._pick()
        return self._timed(model, model.predict, image)

    def _pick(self):
        with self._lock:
            if (self.active is not self.primary and self.retry_after_s is not None
                    and self._clock() - self._switched_at >= self.retry_after_s):
                self.active, self._streak, self._switched_at = self.primary, 0, None
            return self.active

    def _timed(self, model, call, arg):
        began = self._clock()
        result = call(arg)
        elapsed = self._clock() - began
        with self._lock:
            self.calls += 1
            self.last_ms = elapsed * 1e3
            self.last_overrun = elapsed > self.budget
            if self.last_overrun:
                self.overruns += 1
                if model is self.primary:
                    self._streak += 1
                    if self.fallback is not None and self._streak >= self.switch_after and self.active is self.primary:
                        self.active, self._switched_at = self.fallback, self._clock()
                        self.switches += 1
            elif model is self.primary:
                self._streak = 0
        return result

    def stats(self) -> dict[str, Any]:
        return {"budget_ms": self.budget * 1e3, "calls": self.calls, "overruns": self.overruns,
                "switches": self.switches, "on_fallback": self.on_fallback}
