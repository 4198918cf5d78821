"""The ``quantize`` stage: INT8 / FP16 of the latest fp32 ONNX artifact, behind two gates.

Accuracy gate: quality is measured on the validation split through edgedl.runtime (the test
split is kept for the final report, so no choice here is tuned on it). Without labels, quality is
agreement with the float model. When PTQ misses the gate, a layer-wise sensitivity analysis keeps
the most sensitive layers in float until the gate holds.

Speed gate: the quantized artifact is timed against its float parent on this host. INT8 that is
not faster is reported as such and not presented as the better artifact.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgedl.artifacts import UNLABELLED_TASKS, precision_label
from edgedl.data import Calibration, calibration_samples
from edgedl.errors import StageError, UsageError, counted
from edgedl.formats.onnx import graph as onnx_graph
from edgedl.formats.onnx import quantize as qo
from edgedl.formats.onnx.profile import op_profile
from edgedl.gates import Quality, bench_threads, compare_latency, gate_summary, single_sample, speed_verdict
from edgedl.runtime.sidecar import SIDECAR_OWN_KEYS, read_sidecar
from edgedl.stages.base import RunContext, Stage, StageConfig


@dataclass
class Attempt:
    """One quantized candidate and how it fared."""

    scheme: str
    path: Path
    quality: float
    drop_points: float
    passed: bool
    float_layers: list[str] = field(default_factory=list)
    p50_ms: float | None = None
    why_float: dict[str, str] = field(default_factory=dict)  # each float layer's reason
    worst: str | None = None  # the output slice that decided the quality, where one did

    def summary(self) -> dict:
        return {"scheme": self.scheme, "quality": self.quality, "drop_points": self.drop_points,
                "accuracy_gate": self.passed, "float_layers": self.float_layers, "why_float": self.why_float,
                "worst_slice": self.worst, "p50_ms": self.p50_ms}


def _by_reason(why: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for node, reason in why.items():
        grouped.setdefault(reason or "kept in float", []).append(node)
    return grouped


def calibration_feeds(drawn: Calibration, model: Path) -> list[dict]:
    """One feed per calibration sample, keyed by the model's input names."""
    from edgedl.data.feeds import as_samples

    samples = as_samples(drawn.samples, onnx_graph.input_infos(onnx_graph.load_graph(model)))
    return [samples.batch(i, 1)[0] for i in range(len(samples))]


def latest_fp32_onnx(ctx: RunContext) -> dict:
    for record in reversed(ctx.run.manifest["artifacts"]):
        if record["format"] == "onnx" and record["precision"] == "fp32":
            return record
    raise UsageError("quantize needs an fp32 ONNX artifact: put an export_onnx stage before quantize")


class QuantizeConfig(StageConfig):
    """Quantize the latest fp32 ONNX artifact, held to an accuracy gate and a speed gate."""

    stage: Literal["quantize"]
    precision: Literal["int8", "fp16", "int8_dynamic"] = "int8"
    scheme: Literal["auto", "tensorrt", "cpu"] = Field(
        "auto", description="auto: tensorrt if a tensorrt target is set, else cpu")
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(256, ge=1)
    max_accuracy_drop: float = Field(1.0, ge=0, description="points of accuracy, absolute")
    max_float_layers: int = Field(8, ge=0, description="layers the fallback may keep in float")
    speed_gate: bool = True
    min_speedup: float = Field(1.1, ge=1.0, description="speed-up over fp32 that counts as faster (noise margin)")
    on_gate_miss: Literal["fail", "warn"] = "fail"
    threads: Optional[int] = Field(None, ge=1, description="threads for the speed gate's timing")
    metric: Optional[str] = Field(None, description="the accuracy gate's measure instead of accuracy or agreement: "
                                                    "path/to/metrics.py:fn or module:fn, called fn(outputs, labels, "
                                                    "reference) -> float, higher is better, 0.01 of it one point; "
                                                    "Python you run")


class QuantizeStage(Stage):
    name = "quantize"
    Config = QuantizeConfig
    serves = ("onnx", "tensorrt")  # it quantizes the ONNX export, which TensorRT builds from
    requires = ("export_onnx",)

    def run(self, ctx: RunContext) -> None:
        c = self.config
        self.device = ctx.device.record  # a target device that is not this host: its speed is not judged here
        parent = latest_fp32_onnx(ctx)
        parent_path = ctx.run.artifact_path(parent)
        work = ctx.run.tempdir()
        task = (read_sidecar(parent_path) or {}).get("task")
        quality = Quality(ctx.dataset.val, parent_path, classifier=task == "classification",
                          use_labels=task not in UNLABELLED_TASKS, metric=c.metric)
        sample = single_sample(ctx.dataset.val.x)
        threads = c.threads or bench_threads(ctx.recipe)
        info: dict = {"precision": c.precision, "gate_split": "val", "quality_metric": quality.kind,
                      "reference": parent["name"], "reference_quality": quality.reference_value,
                      "reference_warning": quality.warning, "max_accuracy_drop_points": c.max_accuracy_drop}
        if quality.warning:
            ctx.run.manifest["notes"].append(quality.warning)
            ctx.log(f"warning: {quality.warning}")

        prepared = None
        if c.precision == "int8":
            prepared = work / "prepared.onnx"  # pre-processing is for static quantization only
            qo.prepare(parent_path, prepared)
            drawn = self._calibration(ctx)
            info.update(calibration={"method": c.calibration, **drawn.record()})
            if drawn.warning:
                ctx.run.manifest["notes"].append(drawn.warning)
                ctx.log(f"warning: {drawn.warning}")
            calib = calibration_feeds(drawn, prepared)
            best = self._int8(ctx, prepared, work, calib, quality, info, sample, threads)
        else:
            out = work / f"{c.precision}.onnx"
            (qo.convert_fp16 if c.precision == "fp16" else qo.quantize_dynamic)(parent_path, out)
            value = quality(out)
            drop = quality.drop_points(value)
            best = Attempt(c.precision, out, value, drop, drop <= c.max_accuracy_drop)
            info["candidates"] = [best.summary()]

        self._describe(info, best)
        notes: dict = {}
        if not best.passed:
            message = (f"{c.precision} missed the accuracy gate: best {quality.kind} {best.quality:.4f} "
                       f"({best.scheme}, {counted(len(best.float_layers), 'layer')} in float) against "
                       f"{quality.reference_value:.4f} for {parent['name']}, a drop of {best.drop_points:.2f} "
                       f"points (allowed {c.max_accuracy_drop})")
            if c.on_gate_miss == "fail":
                raise StageError(message + "; raise max_accuracy_drop or max_float_layers, or set on_gate_miss: warn")
            notes["accuracy_gate"] = message  # on the artifact (its notes and summary), not run-wide
        self.runtime = "tensorrt" if best.scheme == "tensorrt" else None
        if c.speed_gate:
            info["speed_gate"] = self._speed_gate(parent, parent_path, best, sample, threads, work, quality,
                                                  prepared, calib if prepared is not None else None)
            if info["speed_gate"]["passed"] is not True:
                notes["speed_gate"] = info["speed_gate"]["verdict"]
            self._describe(info, best)  # the grouped-convolution retry may have changed the file kept
        for reason, layers in _by_reason(best.why_float).items():  # every float layer's reason, on screen too
            ctx.log(f"kept in float ({', '.join(layers)}): {reason}")
        self._add(ctx, parent, best, info, notes)

    @staticmethod
    def _describe(info: dict, best: Attempt) -> None:
        info.update(scheme=best.scheme, quality=best.quality, drop_points=best.drop_points,
                    accuracy_gate=best.passed, float_layers=list(best.float_layers), why_float=dict(best.why_float),
                    worst_slice=best.worst)

    def scheme(self, ctx) -> str:
        """The recipe's scheme; ``auto`` is ``tensorrt`` when the run targets TensorRT (its parser takes
        symmetric Q/DQ only), else ``cpu``."""
        if self.config.scheme != "auto":
            return self.config.scheme
        return "tensorrt" if "tensorrt" in [t.value for t in ctx.recipe.targets] else "cpu"

    # ---- INT8 search ----------------------------------------------------------------------
    def _int8(self, ctx, prepared, work, calib, quality: Quality, info: dict, sample, threads) -> Attempt:
        c = self.config
        scheme = self.scheme(ctx)
        names = ["tensorrt"] if scheme == "tensorrt" else list(qo.cpu_candidates(prepared))
        forced = qo.mixed_scale_nodes(prepared, calib)  # outputs of mixed scales: never one INT8 range
        attempts = []
        for name in names:
            attempt = self._with_fallback(qo.SCHEMES[name], prepared, work, calib, quality, info, forced)
            attempts.append(attempt)
            ctx.log(f"quantize {name}: {quality.kind} {attempt.quality:.4f} (drop {attempt.drop_points:.2f} points, "
                    f"{counted(len(attempt.float_layers), 'layer')} in float)")
        passing = [a for a in attempts if a.passed]
        if len(passing) > 1:  # several meet the gate: the fastest here, all timed side by side in one loop
            from edgedl.bench import side_by_side

            timed = side_by_side({i: a.path for i, a in enumerate(passing)}, sample, threads, rounds=5)
            for i, a in enumerate(passing):
                a.p50_ms = timed[i]
            fastest = min(a.p50_ms for a in passing)
            # within 3% of the fastest is a tie (noise): then the one with fewer layers in float
            best = min(passing, key=lambda a: (a.p50_ms > 1.03 * fastest, len(a.float_layers), a.p50_ms))
        else:
            best = passing[0] if passing else max(attempts, key=lambda a: a.quality)
        info["candidates"] = [a.summary() for a in attempts]
        info["scheme_choice"] = ("fastest of the candidates that meet the accuracy gate, timed side by side on this "
                                 "host (within 3%: fewer layers in float)"
                                 if len(passing) > 1 else "the only candidate" if len(attempts) == 1
                                 else "the only candidate that meets the gate" if passing else "best quality (gate missed)")
        return best

    def _with_fallback(self, scheme, prepared, work, calib, quality: Quality, info: dict,
                       forced: dict[str, str] | None = None) -> Attempt:
        """One scheme: everything quantized but ``forced`` (node: why it stays float); where that misses
        the gate, the layers that cost most when quantized alone go back to float, fewest first."""
        c = self.config
        cache = self._cache(work)
        forced = dict(forced or {})

        def attempt(exclude=(), only=None, tag="") -> Attempt:
            out = work / f"{scheme.name}{tag}.onnx"
            if only is None:
                exclude = [*forced, *exclude]
            qo.quantize_static(prepared, out, calib, scheme, c.calibration, exclude, only, cache)
            value = quality(out)
            drop = quality.drop_points(value)
            return Attempt(scheme.name, out, value, drop, drop <= c.max_accuracy_drop, list(exclude),
                           why_float={n: forced.get(n, "") for n in exclude}, worst=quality.worst.get(str(out)))

        result = attempt()
        if result.passed or c.max_float_layers == 0:
            return result
        # Sensitivity: quantize one node at a time and see what it alone costs.
        sensitivity = []
        for i, (node, op) in enumerate(qo.quantizable_nodes(prepared)):
            if node not in forced:
                alone = attempt(only=[node], tag=f"-only{i}")
                sensitivity.append({"node": node, "op": op, "drop_points": alone.drop_points})
        sensitivity.sort(key=lambda s: -s["drop_points"])
        info.setdefault("sensitivity", {})[scheme.name] = sensitivity[:20]
        for k in range(1, min(c.max_float_layers, len(sensitivity)) + 1):
            keep = sensitivity[:k]
            candidate = attempt(exclude=[s["node"] for s in keep], tag=f"-float{k}")
            candidate.why_float.update({s["node"]: f"{s['op']}: quantized alone it cost {s['drop_points']:.2f} points "
                                                   f"of {quality.kind}" for s in keep})
            if candidate.quality > result.quality or candidate.passed:
                result = candidate
            if candidate.passed:
                break
        return result

    def _calibration(self, ctx) -> Calibration:
        return calibration_samples(ctx.dataset, self.config.calibration_samples, ctx.recipe.seed,
                                   "quantize.calibration_samples")

    def _cache(self, work: Path) -> Path:
        # Ranges depend on model, data and method, not on the scheme: one cache serves every attempt.
        return work / f"calibration-{self.config.calibration}.json"

    # ---- speed gate -----------------------------------------------------------------------
    def _speed_gate(self, parent, parent_path, best: Attempt, sample, threads, work, quality,
                    prepared: Path | None, calib: list | None) -> dict:
        float_ms, q_ms = compare_latency(parent_path, best.path, sample, threads)
        gate = {"host": "this machine, ONNX Runtime CPU", "threads": threads, "fp32_p50_ms": float_ms,
                "quantized_p50_ms": q_ms, "speedup": float_ms / q_ms}
        grouped = qo.grouped_conv_nodes(prepared) if prepared is not None else []
        if float_ms / q_ms < self.config.min_speedup and grouped and self.runtime is None:
            # Depthwise/grouped convolutions often lack fast INT8 kernels: try them in float.
            retry = work / f"{best.scheme}-nogrouped.onnx"
            scheme = qo.SCHEMES[best.scheme]
            qo.quantize_static(prepared, retry, calib, scheme, self.config.calibration, best.float_layers + grouped,
                               cache=self._cache(work))
            value = quality(retry)
            _, retry_ms = compare_latency(parent_path, retry, sample, threads)
            gate["grouped_conv_in_float"] = {"layers": len(grouped), "p50_ms": retry_ms, "quality": value}
            if retry_ms < q_ms and quality.drop_points(value) <= self.config.max_accuracy_drop:
                best.path, best.quality, best.drop_points = retry, value, quality.drop_points(value)
                best.worst = quality.worst.get(str(retry))
                best.float_layers = best.float_layers + grouped
                best.why_float.update({n: f"grouped convolution: {retry_ms:.3f} ms p50 with it in float against "
                                          f"{q_ms:.3f} ms in INT8 on this host" for n in grouped})
                q_ms = retry_ms
                gate.update(quantized_p50_ms=q_ms, speedup=float_ms / q_ms)
        label = f"int8 ({best.scheme})" if self.config.precision == "int8" else self.config.precision
        gate.update(speed_verdict(float_ms, q_ms, label, parent["name"], self.config.min_speedup, threads,
                                  self.device, self.runtime), host="this machine, ONNX Runtime CPU")
        if gate["passed"] is False:
            gate["op_ms"] = {"fp32": op_profile(parent_path, sample, threads),
                             "quantized": op_profile(best.path, sample, threads)}
        return gate

    # ---- artifact -------------------------------------------------------------------------
    def _add(self, ctx, parent: dict, best: Attempt, info: dict, notes: dict) -> None:
        parent_path = ctx.run.artifact_path(parent)
        sidecar = {k: v for k, v in (read_sidecar(parent_path) or {}).items() if k not in SIDECAR_OWN_KEYS}
        sidecar["quantization"] = {k: info[k] for k in ("scheme", "float_layers")}
        suffix = precision_label(self.config.precision)
        name = parent["name"].replace(".fp32.onnx", "") + f".{suffix}.onnx"
        out = best.path.with_name(name)
        best.path.rename(out)
        graph = onnx_graph.load_graph(out)
        recommended = info["accuracy_gate"] and info.get("speed_gate", {}).get("passed", True) is not False
        ctx.run.add_artifact(
            out, name=name, format="onnx", precision=suffix, stage=self.name, parent=parent["name"],
            sidecar=sidecar, metrics={"params": onnx_graph.count_params(graph), "macs": onnx_graph.count_macs(graph)[0]},
            notes=notes, extra={"quantization": info, "recommended": recommended, "summary": gate_summary(info)},
        )
        speed = info.get("speed_gate", {})
        ctx.log(f"quantized {name}: {info['quality_metric']} {best.quality:.4f} on val (drop {best.drop_points:.2f} "
                f"points)" + (f", {speed['speedup']:.2f}x vs fp32 here" if speed else ""))

