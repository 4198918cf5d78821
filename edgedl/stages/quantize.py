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

import numpy as np

from pydantic import Field

from pathlib import Path

from edgedl.artifacts import UNLABELLED_TASKS, multiple_outputs, precision_label
from edgedl.data import Calibration, calibration_samples
from edgedl.errors import StageError, UsageError, counted
from edgedl.formats.onnx import graph as onnx_graph
from edgedl.formats.onnx import quantize as qo
from edgedl.formats.onnx.equalize import equalize
from edgedl.formats.onnx.profile import explain_speed
from edgedl.quantization.quality import Quality, bench_threads, gate_summary, single_sample
from edgedl.quantization.rules import mixed_scale_nodes
from edgedl.quantization.search import Attempt, Limits, Search
from edgedl.quantization.speed import judged_here
from edgedl.runtime.sidecar import inherited_sidecar, read_sidecar
from edgedl.stages.base import RunContext, Stage, StageConfig


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
    calibration: Literal["auto", "minmax", "entropy", "percentile"] = Field(
        "auto", description="how activation ranges are set; auto: minmax, and where its whole-INT8 files miss the "
                            "gate, percentile, then entropy where percentile's miss too, the best measured kept")
    calibration_samples: int = Field(256, ge=1)
    max_accuracy_drop: float = Field(1.0, ge=0, description="points of accuracy, absolute")
    max_float_layers: int = Field(8, ge=0, description="layers the fallback may keep in float")
    equalize: bool = Field(True, description="move outlier channels' scale from activations into the weights "
                                             "where they sit on linear streams (the model's function unchanged)")
    bias_correction: bool = Field(True, description="correct each INT8 layer's bias for the mean shift its weights' "
                                                     "rounding gives its output channels (static INT8); each file is "
                                                     "judged with and without, the better kept")
    weight_bits: Literal["auto", 7, 8] = Field(
        "auto", description="CPU schemes' weight bits; auto: 7 where the CPU the file is made for (this host, or the "
                            "recipe's device) saturates 8-bit products in ONNX Runtime's kernels (x86 without VNNI), "
                            "else 8; 7 for a file that will run on such CPUs")
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
        parent = latest_fp32_onnx(ctx)
        parent_path = ctx.run.artifact_path(parent)
        work = ctx.run.tempdir()
        task = (read_sidecar(parent_path) or {}).get("task")
        # a file is judged by what the CPU or GPU it is made for computes: a file made for TensorRT (whose
        # integer kernels sum in 32 bits), or one with 8-bit weights made for another device where this host's
        # kernels saturate them, by its Q/DQ as defined; else by this host's kernels
        tensorrt = c.precision == "int8" and self.scheme(ctx) == "tensorrt"
        weight_bits = None if tensorrt or c.precision == "fp16" else self._weight_bits(ctx)
        elsewhere = ctx.device.elsewhere
        judged_as = {"compute": "cpu-qdq"} if qo.judged_by_definition(
            tensorrt, c.precision == "int8", weight_bits and weight_bits["bits"], ctx.device.profile, elsewhere) else {}
        quality = Quality(ctx.dataset.val, parent_path, classifier=task == "classification",
                          use_labels=task not in UNLABELLED_TASKS, metric=c.metric, **judged_as)
        sample = single_sample(ctx.dataset.val.x)
        threads = c.threads or bench_threads(ctx.recipe)
        info: dict = {}  # what came before the search (calibration, equalization); the search's record follows
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
            feeds = calibration_feeds(drawn, prepared)
            if c.equalize:  # outlier channels on linear streams: their scale moves into the weights
                info["equalized"] = equalize(prepared, feeds)
                for stream in info["equalized"]:
                    ctx.log(f"equalized channels {stream['channels']} of the stream through {stream['tensors'][0]} "
                            f"(peaks {', '.join(f'{p:g}x' for p in stream['peak_over_median'])} the median channel's): "
                            f"{', '.join(f'{m:g}x' for m in stream['moved_into_weights'])} moved into the weights")
            backend = qo.OnnxBackend(prepared, feeds, self.scheme(ctx), c.calibration, cache_dir=work,
                                     bias_correction=c.bias_correction,
                                     reduce_range=weight_bits["why"] if weight_bits and weight_bits["bits"] == 7 else False)
            search = Search(backend, quality, Limits(c.max_accuracy_drop, c.max_float_layers), work, ctx.log,
                            forced=mixed_scale_nodes(backend))  # outputs of mixed scales: never one INT8 range
            best = search.run(sample, threads)
            info["calibration"].update(method=backend.method, method_requested=c.calibration)  # auto: the one kept

        else:
            out = work / f"{c.precision}.onnx"
            if c.precision == "fp16":
                qo.convert_fp16(parent_path, out)
            else:
                qo.quantize_dynamic(parent_path, out, reduce_range=weight_bits["bits"] == 7)
            search = Search(None, quality, Limits(c.max_accuracy_drop, 0), work, ctx.log)
            best = search.judge(out, c.precision)
            search.info["candidates"] = [best.summary()]

        info.update(search.record(best, parent["name"], c.precision))
        if judged_as:
            info["judged_by"] = qo.QDQ_SEMANTICS if tensorrt else \
                qo.QDQ_SEMANTICS.replace("TensorRT", f"{ctx.device.record.get('name')}'s CPU")
        if weight_bits:
            info["weight_bits"] = weight_bits
            if weight_bits["bits"] == 7:
                ctx.log(f"weights in 7 bits: {weight_bits['why']}")
        notes: dict = {}
        if not best.passed:
            message = (f"{c.precision} missed the accuracy gate: best {quality.kind} {best.quality:.4f} "
                       f"({best.scheme}, {counted(len(best.float_layers), 'layer')} in float) against "
                       f"{quality.reference_value:.4f} for {parent['name']}, a drop of {best.drop_points:.2f} "
                       f"points (allowed {c.max_accuracy_drop})")
            several = (ctx.model is not None and isinstance(ctx.dataset.train.x, np.ndarray)
                       and multiple_outputs(ctx.model.module, ctx.dataset.train.x[:1]))
            qat = ("quantization-aware training fine-tunes against one output, and this model returns several"
                   if several else
                   "add a qat stage after quantize (recipe: `- stage: qat`; one-line form: --qat) to train the model "
                   "for INT8 instead" if ctx.model is not None else
                   "quantization-aware training would need the PyTorch model, not an ONNX file")
            message += f"; {qat}"
            if quality.kind == "cosine" and not c.metric:  # a raw map's cosine is strict for detectors and segmenters
                message += ("; where the outputs are a detector's, segmenter's or recognizer's maps, judge by the task's own measure "
                            "(stages.quantize.metric: path/to/metrics.py:fn, docs/compression.md)")
            if c.on_gate_miss == "fail":
                search.log_float_layers(best, prefix="the best file, refused: ")
                raise StageError(message + "; or raise max_accuracy_drop or max_float_layers, or set on_gate_miss: "
                                 "warn. What the search measured is kept: the report's trade-off table and "
                                 f"manifest.json, stages[{len(ctx.run.manifest['stages']) - 1}].quantization",
                                 measured={"quantization": info})
            notes["accuracy_gate"] = message  # on the artifact (its notes and summary), not run-wide
        if c.speed_gate:
            label = f"int8 ({best.scheme})" if c.precision == "int8" else c.precision
            gate = search.speed_gate(parent_path, parent["name"], best, sample, threads, label, c.min_speedup,
                                     ctx.device.record, retry_slow=prepared is not None)
            if gate["passed"] is not True:
                if judged_here(best.scheme, ctx.device.record):  # where the time goes here, per op: saved and lost
                    explain_speed(gate, parent_path, best.path, sample, threads)
                notes["speed_gate"] = gate["verdict"]
            info.update(search.record(best, parent["name"], c.precision), speed_gate=gate)  # a retry may have changed the file
        if prepared is not None and c.bias_correction:  # the kept file's (a speed retry may have replaced it)
            info["bias_correction"] = {**backend.corrections.get(str(best.path), {"layers": 0}),
                                       **({"left_out": best.left_out} if best.left_out else {})}
            if best.left_out:
                ctx.log(f"quantize: kept without {best.left_out}")
        search.log_float_layers(best)
        if c.precision != "fp16":
            self._untouched(ctx, best, info)
        self._add(ctx, parent, best, info, notes)

    def _untouched(self, ctx, best: Attempt, info: dict) -> None:
        """Weights that stay float though the search did not choose it (an LSTM in static INT8, layers
        inside If branches): in the record and on screen, so a file that barely shrank says why."""
        found = qo.float_weights(best.path, skip=best.float_layers)
        if not found["nodes"]:
            return
        groups: dict[tuple[str, bool], int] = {}
        for n in found["nodes"]:
            groups[(n["op"], n["in_branch"])] = groups.get((n["op"], n["in_branch"]), 0) + 1
        said = [f"{op} x{count} ({qo.why_float_weights(op, in_branch, self.config.precision, best.scheme)})"
                for (op, in_branch), count in groups.items()]
        info["float_weights"] = {**found, "said": "; ".join(said)}
        ctx.log(f"quantize: weights left in float: {info['float_weights']['said']}; {found['share']:.0%} of the "
                f"file's weight elements")

    def _weight_bits(self, ctx) -> dict:
        """The CPU file's weight bits and why: 7 where the CPU it is made for saturates 8-bit products (this
        host, or the recipe's device when that is not this host), or as the recipe asks."""
        asked = self.config.weight_bits
        if asked != "auto":
            return {"bits": asked, "why": f"asked for (weight_bits: {asked})" + (
                ": for CPUs whose kernels saturate 8-bit products" if asked == 7 else "")}
        elsewhere = ctx.device.elsewhere
        why = qo.saturating_on(ctx.device.profile, on_device=not elsewhere)
        return {"bits": 7, "why": why} if why else {"bits": 8, "why": "the CPU it is made for sums INT8 products in 32 "
                                                              "bits (VNNI, AMX or Arm) or its features are not known"}

    def scheme(self, ctx) -> str:
        """The recipe's scheme; ``auto`` is ``tensorrt`` when the run targets TensorRT (its parser takes
        symmetric Q/DQ only), else ``cpu``."""
        if self.config.scheme != "auto":
            return self.config.scheme
        return "tensorrt" if "tensorrt" in [t.value for t in ctx.recipe.targets] else "cpu"

    def _calibration(self, ctx) -> Calibration:
        return calibration_samples(ctx.dataset, self.config.calibration_samples, ctx.recipe.seed,
                                   "quantize.calibration_samples")

    # ---- artifact -------------------------------------------------------------------------
    def _add(self, ctx, parent: dict, best: Attempt, info: dict, notes: dict) -> None:
        parent_path = ctx.run.artifact_path(parent)
        sidecar = inherited_sidecar(parent_path, quantization={k: info[k] for k in ("scheme", "float_layers", "judged_by")
                                                               if k in info})
        suffix = precision_label(self.config.precision)
        name = parent["name"].replace(".fp32.onnx", "") + f".{suffix}.onnx"
        out = best.path.with_name(name)
        best.path.rename(out)
        recommended = info["accuracy_gate"] and info.get("speed_gate", {}).get("passed", True) is not False
        ctx.run.add_artifact(
            out, name=name, format="onnx", precision=suffix, stage=self.name, parent=parent["name"],
            sidecar=sidecar, metrics=onnx_graph.size_metrics(out),
            notes=notes, extra={"quantization": info, "recommended": recommended, "summary": gate_summary(info)},
        )
        speed = info.get("speed_gate", {})
        ctx.log(f"quantized {name}: {info['quality_metric']} {best.quality:.4f} on val (drop {best.drop_points:.2f} "
                f"points)" + (f", {speed['speedup']:.2f}x vs fp32 here" if speed else ""))

