"""The ``evaluate`` stage: every artifact's quality, measured through edgedl.runtime, by the measure
its task calls for: accuracy for a classifier with labels; agreement with the float model without
labels (top-1) or for an embedding (cosine); reconstruction error and anomaly AUC for an autoencoder."""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from pydantic import Field

from edgedl.artifacts import (accuracy, compare, predict, runnable, scale_groups, slice_agreement, task_outputs,
                              wilson_interval)
from edgedl.errors import StageError
from edgedl.quantization.quality import Quality
from edgedl.stages.base import RunContext, Stage, StageConfig


class EvaluateConfig(StageConfig):
    """Measure accuracy of every exported artifact through edgedl.runtime."""

    stage: Literal["evaluate"]
    split: Literal["test", "val"] = "test"
    batch_size: int = Field(256, ge=1)
    metric: Optional[str] = Field(None, description="your measure as well, path/to/metrics.py:fn or module:fn, called "
                                                    "fn(outputs, labels, reference) -> float (labels None without "
                                                    "them; reference: the float model's outputs); Python you run")


class EvaluateStage(Stage):
    name = "evaluate"
    Config = EvaluateConfig
    measures = True

    def run(self, ctx: RunContext) -> None:
        split = ctx.dataset.split(self.config.split)
        runnable_records = [r for r in ctx.run.manifest["artifacts"] if runnable(r)]
        if self.config.metric:
            self._custom(ctx, split, runnable_records)
        if ctx.task == "reconstruction":
            self._reconstruction(ctx, split, runnable_records)
            return
        if split.y is None or ctx.task == "embedding":
            self._agreement(ctx, split, runnable_records)
            return
        for record in runnable_records:
            acc = accuracy(ctx.run.artifact_path(record), split, self.config.batch_size, **self._load(ctx, record))
            interval = wilson_interval(acc, len(split))
            ctx.run.set_metrics(record, {"accuracy": acc}, evaluated_on={"split": self.config.split, "samples": len(split),
                                                                         "accuracy_ci95": interval})
            ctx.log(f"evaluated {record['name']}: accuracy {acc:.4f} on {len(split)} {self.config.split} samples "
                    f"(95% interval {interval[0]:.4f}-{interval[1]:.4f})")

    def _custom(self, ctx: RunContext, split, records: list) -> None:
        """The user's measure on every file: ``fn(outputs, labels, reference)``, recorded as ``metric``."""
        from edgedl.quantization.quality import user_metric

        spec = self.config.metric
        attr = spec.rpartition(":")[2]
        function = user_metric(spec, "stages.evaluate.metric")
        outputs = lambda record: task_outputs(ctx.run.artifact_path(record), split.x, self.config.batch_size,  # noqa: E731
                                              **self._load(ctx, record))
        reference = outputs(records[0]) if records else None
        for record in records:
            try:
                value = float(function(outputs(record), split.y, reference))
            except Exception as exc:
                raise StageError(f"stages.evaluate.metric {spec} failed on {record['name']}: "
                                 f"{type(exc).__name__}: {exc}") from None
            ctx.run.set_metrics(record, {"metric": {"name": spec, "value": value, "reference": records[0]["name"]}})
            ctx.log(f"evaluated {record['name']}: {attr} {value:.4f}")

    def _outputs(self, ctx: RunContext, record: dict, split):
        return predict(ctx.run.artifact_path(record), split.x, self.config.batch_size, **self._load(ctx, record))

    @staticmethod
    def _load(ctx: RunContext, record: dict) -> dict:
        """How a file is run to be measured: as its quantize stage judged it (a file made for TensorRT by
        its Q/DQ as defined, compute='cpu-qdq', not by this CPU's integer kernels)."""
        judged = (record.get("quantization") or {}).get("judged_by")
        return {"factory": ctx.factory, "trust_model_code": ctx.trust_model_code,
                **({"compute": "cpu-qdq"} if judged else {})}

    def _agreement(self, ctx: RunContext, split, records: list) -> None:
        """Without labels (or for an embedding, whose labels say nothing of it), each file is judged by
        its agreement with the float model, the run's first file: top-1 for a classifier, else cosine
        (of every output and of each scale group within one, the worst counting, where the file has
        several, as the quantize stage's gate judges); the manifest names the measure and the reference."""
        if not records:
            return
        from edgedl.runtime.sidecar import read_sidecar

        sidecar = read_sidecar(ctx.run.artifact_path(records[0])) or {}
        task = sidecar.get("task") or ctx.task
        # several outputs (a detector's boxes and scores): every one counts, as in the quantize stage's gate,
        # whose measure predicts the float file's outputs once for both
        every = (Quality(split, ctx.run.artifact_path(records[0]), classifier=False, use_labels=False,
                         factory=ctx.factory, trust_model_code=ctx.trust_model_code)
                 if task != "classification" and len(sidecar.get("outputs") or []) > 1 else None)
        reference = every.reference if every is not None else self._outputs(ctx, records[0], split)
        width = int(np.prod(reference.shape[1:])) if reference.ndim > 1 else 1
        # one value per sample (a detector's score, a VAD's probability): argmax and cosine say nothing of it
        measure = "max_abs_diff" if width == 1 else "top1_agreement" if task == "classification" else "cosine"
        every = every if measure == "cosine" else None
        why = "; ".join(ctx.dataset.notes) or f"{ctx.dataset.name} has no labels"
        if ctx.task == "embedding":
            why = "an embedding model has no accuracy: its quality is the cosine of its embeddings with the float model's"
        groups = scale_groups(reference) if measure == "cosine" and every is None else []  # the first output's
        by_definition = None  # the same measure, for files judged by their Q/DQ as defined (made once)
        for record in records:
            if every is not None:  # one pass over each file, every output judged
                path = str(ctx.run.artifact_path(record))
                options = self._load(ctx, record)
                if "compute" in options and by_definition is None:
                    by_definition = Quality(split, ctx.run.artifact_path(records[0]), classifier=False,
                                            use_labels=False, **options)
                judge = by_definition if "compute" in options else every
                value = judge(path)
                agreement = {"measure": "cosine, worst output or slice", "value": value,
                             **({"worst_slice": judge.worst[path]} if path in judge.worst else {})}
            else:
                out = self._outputs(ctx, record, split)
                value = compare(reference.reshape(len(reference), -1), out)[measure]
                agreement = {"measure": measure, "value": value}
                if groups:  # an output of mixed scales: its worse group, judged on its own, counts
                    grouped, where = slice_agreement(reference, out.reshape(reference.shape), groups)
                    if grouped < value:
                        value = grouped
                        agreement.update(value=value, worst_slice=where, measure="cosine, worst slice")
            agreement.update(reference=records[0]["name"], samples=len(split))
            said = f"{agreement['measure']} {value:.4f}"
            ctx.run.set_metrics(record, {"agreement": agreement},
                                notes={"accuracy": f"{why} ({said} against {records[0]['name']})"})
            ctx.log(f"evaluated {record['name']}: {said} against {records[0]['name']} on {len(split)} "
                    f"{self.config.split} samples")

    def _reconstruction(self, ctx: RunContext, split, records: list) -> None:
        """A reconstruction model's error on the split (mean squared, per sample averaged), and with
        labels of two classes (0 normal, 1 anomalous), how well that error separates them (ROC AUC)."""
        x = split.x if isinstance(split.x, np.ndarray) else None
        if x is None:
            raise StageError("a reconstruction model's evaluation needs single-input data")
        binary = split.y is not None and set(np.unique(split.y).tolist()) <= {0, 1} and len(np.unique(split.y)) == 2
        for record in records:
            out = self._outputs(ctx, record, split).reshape(x.shape)
            errors = ((out - x) ** 2).reshape(len(x), -1).mean(1)
            metrics = {"reconstruction_mse": float(errors.mean()), "anomaly_auc": anomaly_auc(errors, split.y) if binary
                       else None}
            note = ("a reconstruction model has no accuracy: see reconstruction_mse"
                    + ("" if binary else "; anomaly_auc needs labels 0 (normal) and 1 (anomalous)"))
            ctx.run.set_metrics(record, metrics, notes={"accuracy": note})
            ctx.log(f"evaluated {record['name']}: reconstruction MSE {metrics['reconstruction_mse']:.4g}"
                    + (f", anomaly AUC {metrics['anomaly_auc']:.4f}" if binary else ""))


def anomaly_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of anomaly scores against labels (1 anomalous): the chance that a random anomalous
    sample scores above a random normal one (Mann-Whitney, ties counted half)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))
