"""The ``benchmark`` stage: latency, memory and energy of every artifact, measured by ``edgedl bench``,
and the speed verdict of every reduced-precision file against its float parent.

Each artifact is measured by an executor (today a fresh local process, the same command a user
runs on a device), so the parent's torch and training state neither slow the timings nor inflate
the memory figure. The artifacts are benched in alternating rounds (the order flips every round),
so drift in the machine's speed falls on all of them alike; the table shows each artifact's
median round, and the verdict is the ratio of those figures with an interval over the rounds.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import Field, field_validator

from edgedl.artifacts import BENCH_METRICS, runnable
from edgedl.quantization.speed import judged_here, median_round, round_p50, verdict
from edgedl.bench.executors import executor_for
from edgedl.bench.request import BenchRequest
from edgedl.stages.base import RunContext, Stage, StageConfig


class BenchmarkConfig(StageConfig):
    """Measure latency, memory and energy of every exported artifact, in fresh processes."""

    stage: Literal["benchmark"]
    runs: int = Field(100, ge=1)  # timed calls per artifact, split over the rounds
    warmup: int = Field(10, ge=0)
    min_seconds: float = Field(1.0, ge=0)  # per artifact, split over the rounds
    batch: int = Field(1, ge=1)
    threads: Optional[int] = Field(None, ge=1)
    # Alternating rounds: more rounds, a verdict that survives the machine's drift; 1 turns it off.
    rounds: int = Field(3, ge=1)
    # Power source for energy per inference (edgedl bench --energy); auto is null with its reason where
    # this machine has no sensor. Energy and memory come from the first round, which measures idle power.
    energy: str = "auto"
    idle_seconds: float = Field(1.0, ge=0)
    # Seconds idle before each artifact's bench (on the device with --on): its heat from the last one goes.
    cooldown: float = Field(0.0, ge=0)

    @field_validator("energy")
    @classmethod
    def _known_source(cls, value: str) -> str:
        from edgedl.bench.energy import parse_spec
        from edgedl.errors import UsageError

        try:
            parse_spec(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return value


def round_flags(rounds: list[dict]) -> list[str]:
    """Each kind of warning once (its first wording), with how many rounds raised it."""
    kinds: dict[str, list[str]] = {}
    for r in rounds:
        for flag in r.get("flags") or []:
            kinds.setdefault(" ".join(flag.split()[:2]), []).append(flag)  # "p99 is", "other processes", ...
    if len(rounds) == 1:
        return [found[0] for found in kinds.values()]
    return [f"{found[0]} (in {len(found)} of {len(rounds)} rounds)" for found in kinds.values()]


class BenchmarkStage(Stage):
    name = "benchmark"
    Config = BenchmarkConfig
    measures = True

    def run(self, ctx: RunContext) -> None:
        scratch = ctx.run.tempdir()
        executor = executor_for(ctx.device.on, **ctx.device.reach)
        c = self.config
        records = [r for r in ctx.run.manifest["artifacts"] if runnable(r) and r["format"] != "torch"]  # torch: the
        results: dict[str, list[dict]] = {r["name"]: [] for r in records}  # reference, not a device artifact
        for i in range(c.rounds):
            for record in records if i % 2 == 0 else records[::-1]:
                request = BenchRequest(artifact=str(ctx.run.artifact_path(record).resolve()),
                                       runs=math.ceil(c.runs / c.rounds), warmup=c.warmup,
                                       min_seconds=c.min_seconds / c.rounds, batch=c.batch, threads=c.threads,
                                       device=ctx.device.name, energy=c.energy if i == 0 else "none",
                                       idle_seconds=c.idle_seconds, cooldown=c.cooldown, **self._feeds(ctx, record))
                results[record["name"]].append(executor.bench(request, scratch))
        for record in records:
            self._record(ctx, record, results[record["name"]])
        self._verdicts(ctx, results)

    def _feeds(self, ctx: RunContext, record: dict) -> dict:
        """What a file with dynamic dimensions past the batch is timed on: one input at the data's
        sample shape (``--input-shape``); several (a streaming model's input, state and rate) on the
        run's own data file (``--data``), as the user's arrays give them. The conditions record it."""
        from edgedl.runtime.sidecar import read_sidecar

        inputs = (read_sidecar(ctx.run.artifact_path(record)) or {}).get("inputs") or []
        if all(isinstance(d, int) for i in inputs for d in i["shape"][1:]):
            return {}
        if len(inputs) == 1:
            return {"input_shapes": {inputs[0]["name"]: [self.config.batch, *ctx.dataset.input_shape]}}
        return {"data": ctx.recipe.data.spec}

    def _record(self, ctx: RunContext, record: dict, rounds: list[dict]) -> None:
        """The median round's figures in the table; energy, memory and cold start from the first round."""
        shown, first = rounds[median_round([round_p50(r) for r in rounds])], rounds[0]
        metrics = {k: shown["metrics"][k] for k in BENCH_METRICS}
        metrics["energy_j_per_inference"] = first["metrics"]["energy_j_per_inference"]
        metrics["peak_rss_mb"] = first["metrics"]["peak_rss_mb"]
        notes = {k: v for k, v in {**shown["notes"], **first["notes"]}.items() if k in BENCH_METRICS}
        flags = round_flags(rounds)
        extra = {"on": ctx.device.on, "executor": first.get("device"),
                 "energy": first.get("energy"), "memory": first.get("memory"), "cold_start": first.get("cold_start"),
                 "statistics": shown.get("statistics"), "flags": flags, "where": first.get("where"),
                 "rounds": [{"p50_ms": p50, "p50_ci95_ms": ci} for p50, ci in map(round_p50, rounds)],
                 "shown": f"round {median_round([round_p50(r) for r in rounds]) + 1} of {len(rounds)} (the median p50)"}
        ctx.run.set_metrics(record, metrics, notes, benchmark={**shown["conditions"], **extra})
        lat = metrics["latency_ms"]
        ctx.log(f"benchmarked {record['name']}: p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms, "
                f"{metrics['throughput_ips']:.0f} inferences/s")
        for flag in flags:
            ctx.log(f"warning ({record['name']}): {flag}")

    def _verdicts(self, ctx: RunContext, results: dict[str, list[dict]]) -> None:
        """Each reduced-precision file's speed verdict, from the rounds above; the quantize stage's quick
        in-process check, which picked the candidate, is kept beside it."""
        from edgedl.quantization.quality import gate_summary

        by_name = {r["name"]: r for r in ctx.run.manifest["artifacts"]}
        for record in ctx.run.manifest["artifacts"]:
            info = record.get("quantization") or {}
            parent = by_name.get(info.get("reference"))
            if not info.get("speed_gate") or parent is None or record["name"] not in results \
                    or parent["name"] not in results:
                continue
            label = info["precision"] + (f" ({info['scheme']})" if record["format"] == "onnx" and
                                         info["precision"] == "int8" else "")  # as the quick check labels it
            gate = verdict([round_p50(r) for r in results[parent["name"]]], [round_p50(r) for r in results[record["name"]]], label, parent["name"],
                           info["speed_gate"]["min_speedup"], ctx.device.record,
                           runtime="tensorrt" if info.get("scheme") == "tensorrt" else None)
            gate["quick_check"] = info["speed_gate"].get("verdict")
            where = "this machine" if not ctx.device.remote else ctx.device.on
            info["speed_gate"] = {**info["speed_gate"], **gate, "host": f"{where}, fresh processes"}
            if gate["passed"] is True or ctx.device.remote:  # the quick check's per-op why: this host's, of a miss
                for key in ("time_shift", "op_ms"):
                    info["speed_gate"].pop(key, None)
            elif "time_shift" not in info["speed_gate"] and record["format"] == "onnx" \
                    and judged_here(info.get("scheme"), ctx.device.record):
                # the quick check passed and these rounds do not: where the time goes, as the quantize stage says it
                from edgedl.formats.onnx.profile import explain_speed
                from edgedl.quantization.quality import single_sample

                explain_speed(info["speed_gate"], ctx.run.artifact_path(parent), ctx.run.artifact_path(record),
                              single_sample(ctx.dataset.val.x), info["speed_gate"].get("threads") or self.config.threads)
            notes = {k: v for k, v in record["notes"].items() if k != "speed_gate"}
            if gate["passed"] is not True:
                notes["speed_gate"] = gate["verdict"]
            record["notes"] = notes
            ctx.run.set_metrics(record, quantization=info, summary=gate_summary(info),
                                recommended=bool(info.get("accuracy_gate")) and gate["passed"] is not False)
            shift = info["speed_gate"].get("time_shift")
            ctx.log(f"speed of {record['name']}: {gate['verdict']}" + (f" ({shift['said']})" if shift else ""))
