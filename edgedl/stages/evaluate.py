"""The ``evaluate`` stage: accuracy of every artifact, measured through edgedl.runtime."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgedl.artifacts import accuracy, runnable, wilson_interval
from edgedl.stages.base import RunContext, Stage, StageConfig


class EvaluateConfig(StageConfig):
    """Measure accuracy of every exported artifact through edgedl.runtime."""

    stage: Literal["evaluate"]
    split: Literal["test", "val"] = "test"
    batch_size: int = Field(256, ge=1)


class EvaluateStage(Stage):
    name = "evaluate"
    Config = EvaluateConfig
    measures = True

    def run(self, ctx: RunContext) -> None:
        split = ctx.dataset.split(self.config.split)
        if split.y is None:
            reason = "; ".join(ctx.dataset.notes) or f"{ctx.dataset.name} has no labels"
            for record in ctx.run.manifest["artifacts"]:
                ctx.run.set_metrics(record, notes={"accuracy": reason})
            return
        for record in ctx.run.manifest["artifacts"]:
            if not runnable(record):
                continue
            acc = accuracy(ctx.run.artifact_path(record), split, self.config.batch_size, factory=ctx.factory,
                           trust_model_code=ctx.trust_model_code)
            interval = wilson_interval(acc, len(split))
            ctx.run.set_metrics(record, {"accuracy": acc}, evaluated_on={"split": self.config.split, "samples": len(split),
                                                                         "accuracy_ci95": interval})
            ctx.log(f"evaluated {record['name']}: accuracy {acc:.4f} on {len(split)} {self.config.split} samples "
                    f"(95% interval {interval[0]:.4f}-{interval[1]:.4f})")
