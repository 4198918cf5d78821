"""The accuracy gate, over edgedl.runtime for every format: a candidate's quality on the validation
split (accuracy with labels; without, top-1 agreement with the float file for classifiers, cosine
similarity of every output and of each scale group within one otherwise; or the recipe's own
measure), against the float file's. A format supplies only files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgedl.artifacts import compare, predict, predict_outputs, scale_groups, slice_agreement, task_outputs


def user_metric(spec: str, where: str):
    """The function a recipe names as its measure (``path/to/metrics.py:fn`` or ``module:fn``), called
    ``fn(outputs, labels, reference) -> float``; running it is running the user's code (the recipe
    needs --trust-model-code, checked before any work)."""
    from edgedl.errors import StageError
    from edgedl.models.spec import _import_target

    target, _, attr = spec.rpartition(":")
    function = getattr(_import_target(target, spec), attr, None) if target and attr else None
    if not callable(function):
        raise StageError(f"{where} {spec}: not a callable (path/to/metrics.py:fn or module:fn)")
    return function


class Quality:
    """Scores artifacts on a split: accuracy with labels, else agreement with the reference file; or
    the recipe's own measure (``metric``), higher is better, 0.01 of it one point, given a file's
    output (every output by name where it has several: :func:`edgedl.artifacts.task_outputs`)."""

    def __init__(self, split, reference_path: Path, classifier: bool, use_labels: bool = True,
                 metric: str | None = None, **load_options: Any):
        self.x, self.y = split.x, (split.y if use_labels else None)  # an embedding's or reconstruction's labels say nothing
        self.load_options = load_options
        self.classifier = classifier
        self.metric = (metric, user_metric(metric, "stages.quantize.metric")) if metric else None
        # the user's measure decides; the task's standard one is reported beside it
        self.standard = Quality(split, reference_path, classifier, use_labels, **load_options) if metric else None
        if self.metric:
            self.y = split.y  # the user's measure gets the labels there are
        self.kind = f"metric {metric.rpartition(':')[2]}" if metric else \
            "accuracy" if self.y is not None else ("top1_agreement" if classifier else "cosine")
        # cosine judges every output, and each group of values of its own scale within one
        self.references = predict_outputs(reference_path, self.x, **load_options) if self.kind == "cosine" else None
        if self.references:
            self.reference = next(iter(self.references.values()))
        elif self.standard is not None:
            self.reference = self.standard.reference  # the same predictions, not made twice
        else:
            self.reference = predict(reference_path, self.x, **load_options)
        # the recipe's measure gets every output of a file with several (a detector's maps), the float file's beside
        self.metric_reference = task_outputs(reference_path, self.x, **load_options) if self.metric else None
        self.groups = {n: scale_groups(r) for n, r in (self.references or {}).items()}  # once, not per candidate
        self.worst: dict[str, str] = {}  # per candidate file: the output slice that decided its value
        self.reference_value = self(None)
        self.warning = self._at_chance()

    def _at_chance(self) -> str | None:
        """A warning when the float file's accuracy is within reach of guessing the commonest class
        (5 points, or two standard errors of that guess on this split): every candidate then
        "keeps" its accuracy, and the gate proves nothing."""
        if self.kind != "accuracy" or self.y is None or not len(self.y):
            return None
        chance = float(np.bincount(np.asarray(self.y, dtype=np.int64)).max() / len(self.y))
        margin = max(0.05, 2 * float(np.sqrt(chance * (1 - chance) / len(self.y))))
        margin = min(margin, (1 - chance) / 2)  # one class of 96%: a model at 99% is not at chance
        if self.reference_value > chance + margin:
            return None
        return (f"the float model scores {self.reference_value:.2%} on val, where always answering its commonest "
                f"class scores {chance:.2%}: it is at chance level, so its accuracy gate proves nothing; train it "
                "first (a train stage, or --epochs)")

    def __call__(self, path: Path | None) -> float:
        if self.metric:
            from edgedl.errors import StageError

            out = self.metric_reference if path is None else task_outputs(path, self.x, **self.load_options)
            try:
                return float(self.metric[1](out, self.y, self.metric_reference))
            except Exception as exc:
                raise StageError(f"stages.quantize.metric {self.metric[0]} failed: {type(exc).__name__}: {exc}") from None
        if self.kind == "cosine":
            return self._worst_output(path)
        out = self.reference if path is None else predict(path, self.x, **self.load_options)
        if self.y is not None:
            return float((out.reshape(len(out), -1).argmax(1) == self.y).mean())
        parity = compare(self.reference, out)
        return parity["top1_agreement"] if self.classifier else parity["cosine"]

    def _worst_output(self, path: Path | None) -> float:
        """The lowest of every output's cosine and, where an output mixes scales (a detector's boxes in
        pixels beside its 0..1 scores), of each of its groups' own agreement; the slice that decided it
        is kept in ``worst``."""
        from edgedl.errors import EdgedlError

        outs = self.references if path is None else predict_outputs(path, self.x, **self.load_options)
        # by name where both files name their outputs alike; else in order (a .tflite renames them)
        paired = [outs[n] for n in self.references] if set(outs) == set(self.references) else list(outs.values())
        if len(paired) != len(self.references) or any(o.size != r.size for o, r in zip(paired, self.references.values())):
            raise EdgedlError(f"{Path(path).name}'s outputs {[(n, list(o.shape)) for n, o in outs.items()]} do not "
                              f"match the float file's {[(n, list(r.shape)) for n, r in self.references.items()]}")
        value, why, decided = 1.0, None, False
        for (name, ref), out in zip(self.references.items(), paired):
            out = out.reshape(ref.shape)
            cosine = compare(ref, out)["cosine"]
            if cosine < value:
                value, why, decided = cosine, f"output '{name}': cosine {cosine:.4f}", len(self.references) > 1
            grouped, where = slice_agreement(ref, out, self.groups[name])
            if where and grouped < value:
                value, why, decided = grouped, f"output '{name}', {where}", True
        if path is not None and decided:  # said only where a slice or one of several outputs decided it
            self.worst[str(path)] = why
        return value

    def drop_points(self, value: float) -> float:
        return round(100.0 * (self.reference_value - value), 4)

    def beside(self, path: Path) -> dict | None:
        """Where the recipe's own measure decides, the task's standard measure of ``path`` (accuracy,
        agreement or cosine), for the report to show beside it; else None."""
        if self.standard is None:
            return None
        value = self.standard(path)
        return {"measure": self.standard.kind, "value": value, "reference": self.standard.reference_value,
                "drop_points": self.standard.drop_points(value)}


def bench_threads(recipe) -> int | None:
    """The thread count the recipe's benchmark stage times with, so quick checks time alike; without a
    benchmark stage (``--no-bench`` moves its count there), the quantize stage's."""
    for name in ("benchmark", "quantize"):
        found = next((s.threads for s in recipe.stages if s.stage == name), None)
        if found is not None:
            return found
    return None


def single_sample(x: Any) -> Any:
    """The first sample of an array or of Samples, as what a runner takes for one call."""
    from edgedl.data.feeds import Samples

    if isinstance(x, Samples):
        return x.batch(0, 1)[0]
    return np.ascontiguousarray(x[:1])


def gate_summary(q: dict) -> str:
    """One line for the report: precision, scheme, both gates' verdicts."""
    gate = "met" if q["accuracy_gate"] else "MISSED"
    line = (f"{q['precision']} ({q['scheme']}), accuracy gate {gate}: {q['quality_metric']} {q['quality']:.4f} on val "
            f"against {q['reference_quality']:.4f} (drop {q['drop_points']:.2f} points, allowed "
            f"{q['max_accuracy_drop_points']})")
    standard = q.get("standard_quality")
    if standard:  # the recipe's measure decided: the task's standard one beside it
        line += (f"; {standard['measure']} {standard['value']:.4f} against {standard['reference']:.4f} "
                 f"(drop {standard['drop_points']:.2f} points)")
    if q.get("float_layers"):
        why = q.get("why_float") or {}
        reasons: dict[str, list[str]] = {}
        for layer in q["float_layers"]:
            reasons.setdefault(why.get(layer) or "", []).append(layer)
        line += "; kept in float: " + "; ".join(f"{', '.join(layers)}" + (f" ({reason})" if reason else "")
                                                for reason, layers in reasons.items())
    if q.get("float_weights"):
        line += (f"; weights left in float: {q['float_weights']['said']}, {q['float_weights']['share']:.0%} of its "
                 "weight elements")
    if q.get("worst_slice"):
        line += f"; judged by its worst slice: {q['worst_slice']}"
    if q.get("reference_warning"):
        line += f"; WARNING: {q['reference_warning']}"
    if q.get("speed_gate"):
        line += f"; speed: {q['speed_gate']['verdict']}"
        if q["speed_gate"].get("time_shift"):  # why it did not pay, per op
            line += f" ({q['speed_gate']['time_shift']['said']})"
    return line
