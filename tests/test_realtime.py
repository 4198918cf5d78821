"""RateLoop and LatencyBudget, on a simulated clock so that the assertions are exact (no timing
thresholds: the clock advances by what each callback says it took)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgedl.errors import UsageError
from edgedl.runtime import LatencyBudget, RateLoop


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_rate_loop_counts_misses_skips_and_latency_exactly():
    clock = FakeClock()
    durations = [0.002, 0.002, 0.025, 0.002, 0.002]  # the third overruns a 10 ms period by 15 ms

    def work(tick):
        clock.t += durations[tick]

    loop = RateLoop(100, work, clock=clock, sleep=clock.sleep).run(ticks=5)
    s = loop.stats()
    assert s["ticks"] == 5 and s["deadline_misses"] == 1
    # The overrun tick started at 20 ms and ended at 45 ms: the ticks due at 30 and 40 ms are
    # skipped, not run late in a burst; the next one runs on its slot at 50 ms.
    assert s["skipped_ticks"] == 2
    assert s["latency_ms"]["max"] == pytest.approx(25.0) and s["latency_ms"]["p50"] == pytest.approx(2.0)
    assert s["jitter_ms"]["max"] == pytest.approx(0.0, abs=1e-9)
    assert clock.t == pytest.approx(100.0 + 0.060 + 0.002)  # last tick at 60 ms, 2 ms long
    assert "deadline misses 1 (20.0%)" in loop.report()


def test_rate_loop_records_late_starts_as_jitter():
    clock = FakeClock()
    late = lambda seconds: setattr(clock, "t", clock.t + seconds + 0.001)  # noqa: E731 - oversleeps 1 ms
    loop = RateLoop(50, lambda tick: None, clock=clock, sleep=late).run(ticks=4)
    jitter = loop.stats()["jitter_ms"]
    assert jitter["max"] == pytest.approx(1.0) and loop.misses == 0


def test_rate_loop_stops_on_seconds_or_from_the_callback():
    clock = FakeClock()
    loop = RateLoop(10, lambda tick: None, clock=clock, sleep=clock.sleep).run(seconds=1.0)
    assert loop.ticks == 10  # due at 0, 100, ..., 900 ms
    loop2 = RateLoop(1000, lambda tick: loop2.stop() if tick == 6 else None, clock=clock, sleep=clock.sleep)
    assert loop2.run(ticks=100).ticks == 7


def test_rate_loop_really_runs_at_its_rate_on_the_real_clock():
    calls = []
    loop = RateLoop(200, lambda tick: calls.append(tick)).run(ticks=20)
    assert calls == list(range(20)) and loop.stats()["ticks"] == 20


def test_rate_loop_takes_a_callback_with_or_without_the_tick():
    """`lambda: m(x)` is what a user writes first; the README's form is callback(tick)."""
    clock = FakeClock()
    calls = []
    RateLoop(100, lambda: calls.append("no tick"), clock=clock, sleep=clock.sleep).run(ticks=2)
    RateLoop(100, calls.append, clock=clock, sleep=clock.sleep).run(ticks=2)  # a builtin method: takes the tick
    RateLoop(100, lambda tick, scale=2: calls.append(tick * scale), clock=clock, sleep=clock.sleep).run(ticks=2)
    assert calls == ["no tick", "no tick", 0, 1, 0, 2]
    with pytest.raises(UsageError, match="must be callable"):
        RateLoop(100, "model")


@pytest.mark.parametrize("bad", [0, -5, None])
def test_rate_loop_rejects_a_bad_rate(bad):
    with pytest.raises(UsageError, match="positive rate"):
        RateLoop(bad, lambda tick: None)


class TimedModel:
    """A model whose call takes ``ms`` on the fake clock and answers its name."""

    def __init__(self, clock, name, ms):
        self.clock, self.name, self.ms = clock, name, ms

    def __call__(self, x):
        self.clock.t += self.ms / 1e3
        return self.name

    def predict(self, image):
        return self(image)


def test_budget_flags_overruns_and_switches_to_the_fallback_then_retries():
    clock = FakeClock()
    primary, small = TimedModel(clock, "big", 30), TimedModel(clock, "small", 5)
    budget = LatencyBudget(primary, budget_ms=20, fallback=small, switch_after=3, retry_after_s=1.0, clock=clock)
    answers = [budget(np.zeros(1)) for _ in range(5)]
    assert answers == ["big", "big", "big", "small", "small"]
    assert budget.overruns == 3 and budget.switches == 1 and budget.on_fallback and not budget.last_overrun
    clock.t += 1.0  # after retry_after_s the primary gets another chance
    assert budget.predict(np.zeros(1)) == "big" and budget.last_overrun


def test_budget_without_fallback_only_flags_and_an_on_time_call_resets_the_streak():
    clock = FakeClock()
    model = TimedModel(clock, "only", 30)
    budget = LatencyBudget(model, budget_ms=20, switch_after=2, clock=clock)
    for _ in range(4):
        budget(0)
    assert budget.overruns == 4 and budget.switches == 0 and not budget.on_fallback
    flaky = TimedModel(clock, "flaky", 30)
    b2 = LatencyBudget(flaky, budget_ms=20, fallback=TimedModel(clock, "small", 1), switch_after=2, clock=clock)
    b2(0)
    flaky.ms = 10
    b2(0)  # on time: the streak starts again
    flaky.ms = 30
    b2(0)
    assert not b2.on_fallback and b2.overruns == 2


def test_budget_is_safe_from_two_threads():
    clock = FakeClock()
    budget = LatencyBudget(TimedModel(clock, "m", 1), budget_ms=20, clock=clock)
    threads = [threading.Thread(target=lambda: [budget(0) for _ in range(500)]) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.calls == 1000


def test_rate_loop_keeps_constant_memory_and_runs_past_its_history():
    clock = FakeClock()
    durations = [0.001] * 25 + [0.005] * 5

    def work(tick):
        clock.t += durations[min(tick, len(durations) - 1)]

    loop = RateLoop(100, work, history=5, clock=clock, sleep=clock.sleep).run(ticks=30)
    s = loop.stats()
    assert s["ticks"] == 30 and s["distribution_ticks"] == 5
    assert s["latency_ms"]["p50"] == pytest.approx(5.0)  # the last five ticks only
    assert loop.run(ticks=3).ticks == 33  # a second run continues the counts
