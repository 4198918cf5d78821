"""One bench request on several devices at once (``edgedl bench ART --on A --on B``): each device in
its own thread, checked before it is sent any work, with a progress line per step; a device that
fails or drops is reported as one line and the others go on."""

from __future__ import annotations

import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgedl.bench.executors import Executor, executor_for
from edgedl.bench.request import BenchRequest
from edgedl.errors import EdgedlError, UsageError


@dataclass
class Outcome:
    """One device's answer: its result, or the one line that says why there is none."""

    address: str
    label: str
    result: dict | None = None
    error: str | None = None


def bench_on(request: BenchRequest, addresses: list[str], say: Callable[[str, str], None] = lambda who, what: None,
             **options) -> list[Outcome]:
    """``request`` on every address, in parallel; outcomes in the order the addresses were given.
    ``options`` go to every executor (ssh_config, accept_new_host, remote_edgedl, trust_model_code)."""
    executors: list[Executor] = [executor_for(a, **options) for a in addresses]  # a malformed address: before any work
    if not Path(request.artifact).is_file():
        raise UsageError(f"artifact not found: {request.artifact}")
    for executor in executors:  # what a device cannot do as asked: refused before any device is contacted
        executor.validate(request)
    lock = threading.Lock()

    def tell(who: str, what: str) -> None:
        with lock:
            say(who, what)

    def one(executor: Executor) -> Outcome:
        outcome = Outcome(executor.address, executor.label)
        try:
            tell(executor.label, "checking the device")
            facts = executor.check(request)
            if facts:
                tell(executor.label, f"edgedl {facts.get('edgedl')}, {facts.get('profile') or 'no profile'}; "
                                     f"benchmarking {Path(request.artifact).name}")
            with tempfile.TemporaryDirectory(prefix="edgedl-bench-") as scratch:
                outcome.result = executor.bench(request, Path(scratch))
            p50 = outcome.result["metrics"]["latency_ms"]["p50"]
            tell(executor.label, f"done: p50 {p50:.3f} ms")
        except EdgedlError as exc:
            outcome.error = str(exc)
            tell(executor.label, f"failed: {exc}")
        except Exception as exc:  # a bug or an OS error on one device: the others' results are still kept
            outcome.error = f"{executor.label}: {type(exc).__name__}: {exc}"
            tell(executor.label, f"failed: {outcome.error}")
        return outcome

    if len(executors) == 1:
        return [one(executors[0])]
    with ThreadPoolExecutor(max_workers=min(8, len(executors))) as pool:
        return list(pool.map(one, executors))
