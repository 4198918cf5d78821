"""The ``evaluate`` stage: accuracy of every exported artifact, measured through edgedl.runtime."""

from __future__ import annotations

import numpy as np

import edgedl.runtime as rt
from edgedl.stages.base import RunContext, Stage


def predict(path, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The artifact's first output for every sample of ``x``, run through edgedl.runtime."""
    with rt.load(path) as runner:
        first = runner.inputs[0].shape[0] if runner.inputs[0].shape else None
        fixed = first if isinstance(first, int) and first > 0 else None
        step = fixed or batch_size
        outputs = []
        for start in range(0, len(x), step):
            xb = x[start : start + step]
            n = len(xb)
            if fixed and n < fixed:  # a fixed-batch artifact: pad the last batch, keep n rows
                xb = np.concatenate([xb, np.zeros((fixed - n, *xb.shape[1:]), xb.dtype)])
            out = runner(np.ascontiguousarray(xb))
            out = out if isinstance(out, np.ndarray) else next(iter(out.values()))
            outputs.append(out[:n])
    return np.concatenate(outputs)


def evaluate_artifact(path, split, batch_size: int) -> float:
    """Top-1 accuracy of an artifact on a labelled split, run through edgedl.runtime."""
    logits = predict(path, split.x, batch_size)
    return float((logits.reshape(len(split), -1).argmax(1) == split.y).mean())


class EvaluateStage(Stage):
    name = "evaluate"

    def run(self, ctx: RunContext) -> None:
        split = ctx.dataset.split(self.config.split)
        for record in ctx.run.manifest["artifacts"]:
            if not runnable(record):
                continue
            if split.y is None:
                reason = "; ".join(ctx.dataset.notes) or f"{ctx.dataset.name} has no labels"
                ctx.run.set_metrics(record, notes={"accuracy": reason})
                continue
            acc = evaluate_artifact(ctx.run.artifact_path(record), split, self.config.batch_size)
            ctx.run.set_metrics(record, {"accuracy": acc}, evaluated_on={"split": self.config.split, "samples": len(split)})
            ctx.log(f"evaluated {record['name']}: accuracy {acc:.4f} on {len(split)} {self.config.split} samples")


def runnable(record: dict) -> bool:
    """Whether edgedl.runtime has a backend for this artifact's format."""
    return record["format"] in rt.FORMATS
