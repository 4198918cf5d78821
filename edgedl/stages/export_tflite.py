"""The ``export_tflite`` stage: the current model to .tflite in the requested precisions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import numpy as np

from edgedl.artifacts import PARITY_SAMPLES, as_outputs, compare, precision_label, predict
from edgedl.data import Calibration, calibration_samples
from edgedl.errors import StageError, UsageError
from edgedl.formats.onnx.graph import COUNTED_ON_ONNX
from edgedl.formats.tflite import convert as litert_convert
from edgedl.formats.tflite import quantize as litert_quantize
from edgedl.stages.base import RunContext, Stage, StageConfig


class ExportTfliteConfig(StageConfig):
    """Convert the current model to .tflite with litert-torch and quantize it."""

    stage: Literal["export_tflite"]
    precisions: list[Literal["fp32", "fp16", "int8_dynamic", "int8", "int8_float_io"]] = Field(
        default_factory=lambda: ["fp32", "int8_float_io"], min_length=1,
        description="int8: full-integer with int8 inputs/outputs; int8_float_io: full-integer with float ones")
    quantizer: Literal["ai-edge-quantizer", "pt2e"] = Field(
        "ai-edge-quantizer", description="for int8: ai-edge-quantizer (measured better, see README) or "
                                         "litert-torch's PT2E quantizer")
    calibration_samples: int = Field(256, ge=1, description="for int8, drawn from the training split")
    parity_atol: float = Field(1e-4, gt=0, description="max abs difference allowed vs torch (fp32)")
    gates: bool = Field(True, description="measure each reduced-precision file against fp32: accuracy on val, "
                                          "speed on this host")
    max_accuracy_drop: float = Field(1.0, ge=0, description="points of accuracy, absolute")
    max_float_layers: int = Field(8, ge=0, description="for int8 with ai-edge-quantizer: ops the fallback may keep "
                                                        "in float when the accuracy gate is missed")
    min_speedup: float = Field(1.1, ge=1.0, description="speed-up over fp32 that counts as faster")


class ExportTfliteStage(Stage):
    name = "export_tflite"
    Config = ExportTfliteConfig
    needs_torch = ("TFLite export converts the PyTorch model with litert-torch; edgedl does not take the "
                   "ONNX->TensorFlow->TFLite route (onnx2tf), which pins numpy 1.x and exact TensorFlow versions")
    modules = ("python", "pickle", "graph")  # litert-torch traces with torch.export: not TorchScript
    target = "tflite"
    serves = ("tflite",)

    def run(self, ctx: RunContext) -> None:
        import torch

        c = self.config
        if ctx.model is None:
            raise UsageError(
                "TFLite export needs the PyTorch model: litert-torch converts PyTorch, and the ONNX->TensorFlow->"
                "TFLite route (onnx2tf) pins numpy 1.x and exact TensorFlow versions and is known to produce empty "
                "exports, so edgedl does not take it; pass the PyTorch model (registry name, file.py:factory or "
                "checkpoint) instead of the .onnx file")
        from edgedl.data.feeds import Samples

        if isinstance(ctx.dataset.val.x, Samples):
            names = ", ".join([*ctx.dataset.val.x.stacked, *ctx.dataset.val.x.whole, *ctx.dataset.val.x.constants])
            raise StageError(f"edgedl's TFLite export feeds and calibrates one input, and this model takes several ({names}); "
                             "take the ONNX route for it (ONNX Runtime runs on phones too)")
        parent = ctx.ensure_model_artifact()
        module = ctx.model.module.eval()
        stem = parent.rsplit(".", 1)[0]
        samples = np.ascontiguousarray(ctx.dataset.val.x[:PARITY_SAMPLES])
        with torch.no_grad():
            reference = module(torch.from_numpy(samples))
        if len(as_outputs(reference)) > 1:  # a .tflite reorders and renames outputs
            raise StageError(f"edgedl's TFLite export checks and gates one output, and this model returns "
                             f"{len(as_outputs(reference))} (a detector's boxes and scores?); take the ONNX route for it (ONNX "
                             "Runtime runs on phones too), or return one tensor from forward (torch.cat)")
        reference = as_outputs(reference)[0].numpy()
        work = ctx.run.tempdir()
        fp32 = work / f"{stem}.fp32.tflite"
        litert_convert.convert(module, samples[:1], fp32)
        calibrated = {p for p in c.precisions if p in ("int8", "int8_float_io")}
        calibration = self._calibration(ctx) if calibrated else None
        if calibration is not None and calibration.warning:
            ctx.run.manifest["notes"].append(calibration.warning)
            ctx.log(f"warning: {calibration.warning}")
        gates = Gates(self, ctx, fp32, work) if c.gates and set(c.precisions) - {"fp32"} else None
        produced = []
        for precision in c.precisions:
            path = fp32 if precision == "fp32" else work / f"{stem}.{precision_label(precision)}.tflite"
            if precision == "int8" and c.quantizer == "pt2e":
                litert_quantize.quantize_pt2e(module, samples[:1], calibration.samples, path)
            elif precision in calibrated and gates is not None:
                gates.search(precision, calibration.samples, path)  # with the per-layer float fallback
            elif precision != "fp32":  # full-integer INT8 here too keeps mixed-scale ops in float
                litert_quantize.quantize(fp32, path, precision, calibration.samples if calibration else None)
            parity = compare(reference, predict(path, samples))
            if precision == "fp32":
                scale = max(1.0, float(np.abs(reference).max()))
                if parity["max_abs_diff"] > c.parity_atol * scale:
                    raise StageError(f"the .tflite export of {parent} differs from torch by "
                                     f"{parity['max_abs_diff']:.3g} (allowed {c.parity_atol * scale:.3g})")
            elif gates is not None:
                gates.judge(precision, path)
            produced.append((precision, path, parity))
        gates = gates.results if gates is not None else {}
        fp32_name = None
        for precision, path, parity in produced:
            sidecar = ctx.litert_sidecar(path, self._quantizer(precision))
            record = ctx.run.add_artifact(
                path, name=path.name, format="tflite", precision=precision_label(precision), stage=self.name,
                parent=self._parent(precision, parent, fp32_name), sidecar=sidecar,
                notes={"params": COUNTED_ON_ONNX, "macs": COUNTED_ON_ONNX, **gates.get(precision, {}).get("notes", {})},
                extra={"parity": {"reference": "torch", **parity},
                       "calibration": calibration.record() if precision in calibrated else None,
                       **gates.get(precision, {}).get("extra", {})})
            if precision == "fp32":
                fp32_name = record["name"]
            ctx.log(f"exported {path.name}: parity with torch max|diff| {parity['max_abs_diff']:.2e}, "
                    f"top-1 agreement {parity['top1_agreement']:.3f}")

    def _parent(self, precision: str, checkpoint: str, fp32_name: str | None) -> str:
        """ai-edge-quantizer quantizes the fp32 .tflite file; the fp32 file and PT2E's INT8 file
        come from the checkpoint."""
        from_file = self._quantizer(precision) == "ai-edge-quantizer" and fp32_name is not None
        return fp32_name if from_file else checkpoint

    def _quantizer(self, precision: str) -> str | None:
        if precision == "fp32":
            return None
        return "litert-torch pt2e" if precision == "int8" and self.config.quantizer == "pt2e" else "ai-edge-quantizer"

    def _calibration(self, ctx) -> Calibration:
        return calibration_samples(ctx.dataset, self.config.calibration_samples, ctx.recipe.seed,
                                   "export_tflite.calibration_samples")


class Gates:
    """The accuracy and speed gates of each reduced-precision file against the fp32 .tflite, by the
    one algorithm the ONNX quantize stage uses (edgedl.quantization): full-integer INT8 from
    ai-edge-quantizer is searched (mixed-scale ops kept in float, the per-layer fallback where the gate
    is missed), other precisions are judged as made. A miss is recorded on the file, not fatal:
    the other precisions still ship."""

    def __init__(self, stage: ExportTfliteStage, ctx: RunContext, fp32, work):
        from edgedl.quantization.quality import Quality, bench_threads, single_sample

        self.stage, self.ctx, self.fp32, self.work = stage, ctx, fp32, work
        self.config = stage.config
        self.quality = Quality(ctx.dataset.val, fp32, classifier=ctx.task == "classification"
                               and ctx.dataset.num_classes is not None, use_labels=ctx.task == "classification")
        if self.quality.warning:
            ctx.run.manifest["notes"].append(self.quality.warning)
            ctx.log(f"warning: {self.quality.warning}")
        self.sample = single_sample(ctx.dataset.val.x)
        self.threads = bench_threads(ctx.recipe)
        self.searches: dict = {}  # precision: its Search
        self.kept: dict = {}  # precision: the Attempt the search kept
        self.results: dict = {}

    def _search(self, precision: str, backend=None):
        from edgedl.quantization.rules import mixed_scale_nodes
        from edgedl.quantization.search import Limits, Search

        folder = self.work / f"search-{precision}"
        folder.mkdir(exist_ok=True)
        limits = Limits(self.config.max_accuracy_drop, self.config.max_float_layers if backend else 0)
        forced = mixed_scale_nodes(backend) if backend is not None else None
        search = self.searches[precision] = Search(backend, self.quality, limits, folder, self.ctx.log, forced)
        return search

    def search(self, precision: str, calibration, path) -> None:
        """Full-integer INT8 by the search; the file kept is moved to ``path``."""
        search = self._search(precision, litert_quantize.LiteRTBackend(self.fp32, calibration, precision))
        best = search.run(self.sample, self.threads)
        best.path.rename(path)
        best.path = path
        self.kept[precision] = best

    def judge(self, precision: str, path) -> None:
        from edgedl.quantization.quality import gate_summary

        search = self.searches.get(precision) or self._search(precision)
        best = self.kept.get(precision) or search.judge(path, precision)
        speed = search.speed_gate(self.fp32, self.fp32.name, best, self.sample, self.threads, precision,
                                  self.config.min_speedup, self.ctx.device.record)
        if best.path != path:  # the speed gate kept a retry: it is the file this precision ships
            best.path.replace(path)
            best.path = path
        q = self.quality
        info = {**search.record(best, self.fp32.name, precision), "scheme": self.stage._quantizer(precision),
                "speed_gate": speed}
        notes = {}
        if not best.passed:
            notes["accuracy_gate"] = (f"{precision} {q.kind} {best.quality:.4f} against {q.reference_value:.4f} for "
                                      f"fp32 on val: a drop of {best.drop_points:.2f} points (allowed "
                                      f"{self.config.max_accuracy_drop})")
        if speed["passed"] is not True:
            notes["speed_gate"] = speed["verdict"]
        search.log_float_layers(best, f"{precision}: ")
        self.results[precision] = {"notes": notes, "extra": {"quantization": info, "summary": gate_summary(info),
                                                             "recommended": best.passed and speed["passed"] is not False}}
