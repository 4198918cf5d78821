"""The ``benchmark`` stage: latency and memory of every artifact, measured by ``edgedl bench``.

Each artifact is measured by an executor (today a fresh local process, the same command a user
runs on a device), so the parent's torch and training state neither slow the timings nor inflate
the memory figure.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from edgedl.artifacts import BENCH_METRICS, runnable
from edgedl.bench.executors import LocalExecutor
from edgedl.stages.base import RunContext, Stage, StageConfig


class BenchmarkConfig(StageConfig):
    """Measure latency and memory of every exported artifact, in a fresh process."""

    stage: Literal["benchmark"]
    runs: int = Field(100, ge=1)
    warmup: int = Field(10, ge=0)
    min_seconds: float = Field(1.0, ge=0)
    batch: int = Field(1, ge=1)
    threads: Optional[int] = Field(None, ge=1)


class BenchmarkStage(Stage):
    name = "benchmark"
    Config = BenchmarkConfig

    def run(self, ctx: RunContext) -> None:
        scratch = ctx.run.tempdir()
        executor = LocalExecutor()
        c = self.config
        options = {"runs": c.runs, "warmup": c.warmup, "min_seconds": c.min_seconds, "batch": c.batch,
                   "threads": c.threads}
        for record in ctx.run.manifest["artifacts"]:
            if not runnable(record) or record["format"] == "torch":  # the reference, not a device artifact
                continue
            result = executor.bench(ctx.run.artifact_path(record), options, scratch)
            metrics = {k: result["metrics"][k] for k in BENCH_METRICS}
            notes = {k: v for k, v in result["notes"].items() if k in BENCH_METRICS}
            ctx.run.set_metrics(record, metrics, notes, benchmark=result["conditions"])
            lat = metrics["latency_ms"]
            ctx.log(f"benchmarked {record['name']}: p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms, "
                    f"{metrics['throughput_ips']:.0f} inferences/s")
