"""The ``benchmark`` stage: latency and memory of every artifact, measured by ``edgedl bench``.

Each artifact is measured in a fresh process, the same command a user runs on a device, so the
parent's torch and training state neither slow the timings nor inflate the memory figure.
"""

from __future__ import annotations

import json
import subprocess
import sys

from edgedl.errors import StageError
from edgedl.stages.base import RunContext, Stage
from edgedl.stages.evaluate import runnable

BENCH_METRICS = ("latency_ms", "throughput_ips", "peak_rss_mb", "energy_j_per_inference")


def bench_in_subprocess(path, config, out_json) -> dict:
    cmd = [sys.executable, "-m", "edgedl", "bench", str(path), "--json", str(out_json), "--quiet",
           "--runs", str(config.runs), "--warmup", str(config.warmup),
           "--min-seconds", str(config.min_seconds), "--batch", str(config.batch)]
    if config.threads:
        cmd += ["--threads", str(config.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise StageError(f"benchmark of {path.name} failed: {last}")
    return json.loads(out_json.read_text())


class BenchmarkStage(Stage):
    name = "benchmark"

    def run(self, ctx: RunContext) -> None:
        scratch = ctx.run.tempdir()
        for record in ctx.run.manifest["artifacts"]:
            if not runnable(record) or record["format"] == "torch":  # the reference, not a device artifact
                continue
            result = bench_in_subprocess(ctx.run.artifact_path(record), self.config, scratch / "bench.json")
            metrics = {k: result["metrics"][k] for k in BENCH_METRICS}
            notes = {k: v for k, v in result["notes"].items() if k in BENCH_METRICS}
            ctx.run.set_metrics(record, metrics, notes, benchmark=result["conditions"])
            lat = metrics["latency_ms"]
            ctx.log(f"benchmarked {record['name']}: p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms, "
                    f"{metrics['throughput_ips']:.0f} inferences/s")
