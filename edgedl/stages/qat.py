"""The ``qat`` stage: quantization-aware training, then the learned scales exported as they are.

The current PyTorch model is fine-tuned with fake quantization (torchao's PT2E QAT, see
``formats/torch/qat.py``) through the one training loop, the float model teaching (its softened
logits for a classifier, its outputs otherwise); then the trained graph becomes a Q/DQ ONNX
and a full-integer .tflite, for the run's targets (activations affine INT8, or symmetric with zero
point 0 where TensorRT is a target, whose parser takes nothing else). Each file is checked against the trained torch graph
(parity) and held to the same accuracy gate and speed verdict as PTQ (edgedl.quantization), against
the float file of its format.
"""

from __future__ import annotations

import copy
from typing import Literal, Optional

import numpy as np

from pydantic import Field

from edgedl.artifacts import PARITY_SAMPLES, UNLABELLED_TASKS, compare, multiple_outputs, predict
from edgedl.errors import StageError
from edgedl.formats.onnx import graph as onnx_graph
from edgedl.runtime.sidecar import inherited_sidecar, read_sidecar
from edgedl.stages.base import RunContext, Stage, StageConfig

EXACT_COSINE = 0.9999  # an ONNX file under Q/DQ semantics against the trained graph: float rounding only
QAT_FORMATS = {"onnx": "onnx", "tensorrt": "onnx", "tflite": "tflite"}  # target: the file QAT writes for it


class QatConfig(StageConfig):
    """Fine-tune with fake quantization, the float model teaching; export the learned scales."""

    stage: Literal["qat"]
    epochs: int = Field(3, ge=1)
    lr: float = Field(5e-4, gt=0, description="a fine-tune: a tenth of a training rate or less")
    batch_size: int = Field(64, ge=1)
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the float model's soft targets (classifiers; "
                                                      "without labels it is 1)")
    formats: Optional[list[Literal["onnx", "tflite"]]] = Field(
        None, description="files to write; default: those the run's targets take (onnx for onnx and tensorrt)")
    max_accuracy_drop: float = Field(1.0, ge=0, description="points of accuracy, absolute, against the float file")
    min_speedup: float = Field(1.1, ge=1.0, description="speed-up over the float file that counts as faster")
    min_parity_cosine: float = Field(0.98, gt=0, le=1, description=(
        "each file, as it runs, against the trained graph: integer kernels round the requantization their own "
        "way, so a deep network drifts a little from fake quantization (an ONNX file must also match exactly "
        "under Q/DQ semantics)"))
    on_gate_miss: Literal["fail", "warn"] = "fail"
    equalize: bool = Field(True, description="move outlier channels' scale into the weights before training, as "
                                             "the quantize stage does (the model's function unchanged)")


class QatStage(Stage):
    name = "qat"
    Config = QatConfig
    needs_torch = ("quantization-aware training fine-tunes the PyTorch model (torchao's PT2E QAT); an ONNX file "
                   "gets post-training quantization (the quantize stage)")
    modules = ("python", "pickle")
    serves = ("onnx", "tensorrt", "tflite")

    def check(self, recipe, constraints: dict) -> None:
        from edgedl.errors import UsageError

        names = [s.stage for s in recipe.stages]
        writes = self.config.formats or [QAT_FORMATS[t.value] for t in recipe.targets if t.value in QAT_FORMATS]
        if "onnx" in writes and "export_onnx" not in names[: names.index("qat")]:
            raise UsageError("stages.qat judges its INT8 ONNX against the fp32 ONNX: put an export_onnx stage before qat")

    def run(self, ctx: RunContext) -> None:
        import torch

        from edgedl.formats.torch import qat as torch_qat
        from edgedl.formats.torch.distillation import kd_loss
        from edgedl.formats.torch.progress import progress_bar
        from edgedl.train import FitConfig, fit

        ctx.require_torch(self.name)
        c, data = self.config, ctx.dataset
        if not isinstance(data.train.x, np.ndarray):
            raise StageError("qat takes models of one input array; this one takes several (a text model's ids and "
                             "mask): quantize its ONNX export after training instead (the quantize stage)")
        if multiple_outputs(ctx.model.module, data.train.x[:1]):
            raise StageError("qat fine-tunes against one output, and this model returns several (a detector's boxes and "
                             "scores?): quantize its ONNX export instead (the quantize stage, judged by every output "
                             "or by stages.quantize.metric)")
        formats = c.formats or sorted({QAT_FORMATS[t.value] for t in ctx.recipe.targets if t.value in QAT_FORMATS})
        if not formats:
            raise StageError("qat: the run has no onnx, tensorrt or tflite target to write for; set stages.qat.formats")
        references = {fmt: self._reference(ctx, fmt) for fmt in formats}  # checked before any training
        ctx.ensure_model_artifact()
        parent = ctx.model_artifact
        teacher = copy.deepcopy(ctx.model.module).eval().requires_grad_(False)
        self.tensorrt = "tensorrt" in [t.value for t in ctx.recipe.targets]  # its parser takes zero points of 0 only
        # an ONNX file for this CPU, whose integer kernels sum pairs of 8-bit products in 16 bits (x86 without
        # VNNI), learns 7-bit weights, which those sums hold (TensorRT's kernels and LiteRT's sum in 32 bits)
        from edgedl.formats.onnx.quantize import saturating_on

        elsewhere = ctx.device.elsewhere
        saturating = saturating_on(ctx.device.profile, on_device=not elsewhere) \
            if "onnx" in formats and not self.tensorrt else None
        self.weight_bits = 7 if saturating else 8
        from edgedl.formats.onnx.quantize import judged_by_definition

        self.judged_as = {"compute": "cpu-qdq"} if judged_by_definition(
            self.tensorrt, True, self.weight_bits, ctx.device.profile, elsewhere) else {}  # the ONNX file's
        model = torch_qat.prepare(ctx.model.module, data.train.x[:2], symmetric_activations=self.tensorrt,
                                  sample=data.train.x[:64], equalize_outliers=c.equalize, weight_bits=self.weight_bits)
        if saturating:
            ctx.log(f"qat: weights in 7 bits: {saturating}")
        for stream in model.equalized:
            ctx.log(f"qat: equalized channels {stream['channels']} of the stream through {stream['tensors'][0]} "
                    f"(peaks {', '.join(f'{p:g}x' for p in stream['peak_over_median'])} the median channel's)")
        labelled = ctx.task == "classification" and data.train.y is not None
        alpha = c.alpha if labelled else 1.0

        def loss_fn(m, xb, yb):
            with torch.no_grad():
                target = teacher(xb)
            out = m(xb)
            if ctx.task == "classification":
                return kd_loss(out, target, yb, c.temperature, alpha) if labelled else \
                    kd_loss(out, target, target.argmax(1), c.temperature, 1.0)
            return torch.nn.functional.mse_loss(out, target)

        task = "classification" if labelled else "reconstruction"  # reconstruction: no labels needed
        with progress_bar(ctx.console, enabled=ctx.progress) as bar:
            result = fit(model, data.train, data.val if labelled else None,
                         FitConfig(epochs=c.epochs, lr=c.lr, batch_size=c.batch_size, seed=ctx.recipe.seed),
                         loss_fn=loss_fn, progress=bar, task=task)
        converted = torch_qat.convert(model)
        training = {"epochs": c.epochs, "lr": c.lr, "alpha": alpha, "temperature": c.temperature,
                    "best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy,
                    "equalized": model.equalized,
                    "implementation": "torchao PT2E QAT with litert-torch's quantizer: per-channel symmetric INT8 weights, "
                                      + ("symmetric" if self.tensorrt else "affine") + " INT8 activations",
                    "weight_bits": {"bits": self.weight_bits, **({"why": saturating + (
                        "; one training serves every format written" if len(formats) > 1 else "")} if saturating else {})}}
        for fmt in formats:
            self._export(ctx, fmt, converted, parent, references[fmt], training)

    def _reference(self, ctx: RunContext, fmt: str) -> dict | None:
        """The float file of the format, which the QAT file is judged against (an ONNX run needs its
        export_onnx stage first; for .tflite one is converted here when the run has none)."""
        kind = [a for a in ctx.run.manifest["artifacts"] if a["format"] == fmt and a["precision"] == "fp32"]
        if kind:
            return kind[-1]
        if fmt == "onnx":
            raise StageError("qat judges its INT8 ONNX against the fp32 ONNX: put an export_onnx stage before qat")
        return None

    def _export(self, ctx: RunContext, fmt: str, converted, parent: str, reference: dict | None,
                training: dict) -> None:
        from edgedl.formats.torch import qat as torch_qat

        data = ctx.dataset
        training = dict(training)  # this file's own record
        work = ctx.run.tempdir()
        stem = parent.rsplit(".", 1)[0]
        out = work / f"{stem}.int8qat.{fmt}"
        example = data.val.x[:2]
        if fmt == "onnx":
            from edgedl.formats.onnx.export import export_onnx

            opset = min(18, (ctx.constraints.get("onnx_opset") or (13, 18))[1])  # the target's TensorRT may parse less
            export_onnx(converted, example, out, opset, True, "logits" if data.num_classes else "output")
            from edgedl.formats.onnx import quantize as qo

            # TensorRT takes the symmetric Q/DQ as exported (weights stored INT8); ONNX Runtime's CPU gets
            # the form it fuses into integer kernels. Both keep the trained values exactly.
            training["onnx_form"] = {"weights_folded": qo.fold_weight_quantization(out)} if self.tensorrt \
                else qo.for_onnxruntime(out)
            reference_path = ctx.run.artifact_path(reference)
        else:
            from edgedl.formats.tflite import convert as litert_convert

            torch_qat.to_tflite(converted, example, out, symmetric_activations=self.tensorrt,
                                weight_bits=self.weight_bits)
            if reference is None:
                reference_path = work / f"{stem}.fp32.tflite"
                litert_convert.convert(ctx.model.module.eval(), example[:1], reference_path)
            else:
                reference_path = ctx.run.artifact_path(reference)
        parity = self._parity(fmt, out, converted, data.val.x[:PARITY_SAMPLES * 4])
        info, notes = self._gates(ctx, fmt, out, reference_path)
        # the ONNX file keeps the float file's sidecar; a .tflite has tensors of its own (int8 inputs)
        sidecar = inherited_sidecar(reference_path, quantization={"scheme": "qat", "float_layers": [], **(
            {"judged_by": "Q/DQ semantics"} if self.judged_as else {})}) \
            if fmt == "onnx" else ctx.litert_sidecar(out, "torchao PT2E QAT")
        metrics = onnx_graph.size_metrics(out) if fmt == "onnx" else {}
        from edgedl.quantization.quality import gate_summary

        ctx.run.add_artifact(out, name=out.name, format=fmt, precision="int8", stage=self.name, parent=parent,
                             sidecar=sidecar, metrics=metrics, notes=notes,
                             extra={"quantization": info, "summary": gate_summary(info), "qat": training,
                                    "recommended": info["accuracy_gate"] and info["speed_gate"]["passed"] is not False,
                                    "parity": {"reference": "the trained torch graph", **parity}})
        ctx.log(f"qat {out.name}: {info['quality_metric']} {info['quality']:.4f} on val against "
                f"{info['reference_quality']:.4f} for {info['reference']} (drop {info['drop_points']:.2f} points); "
                f"{info['speed_gate']['verdict']}")

    def _parity(self, fmt: str, path, converted, samples) -> dict:
        """The file against the trained graph, twice for ONNX: run as ONNX Runtime's Q/DQ semantics
        define it (graph optimizations off: every value as fake quantization computed it, else the export
        is wrong), and as it ships (integer kernels, which round the requantization their own way, so a
        deep network drifts a little: ``min_parity_cosine``)."""
        import torch

        with torch.no_grad():
            trained = converted(torch.from_numpy(samples)).numpy()
        # a file for TensorRT ships to TensorRT's kernels, whose sums are 32-bit: its Q/DQ as defined
        shipped = compare(trained, predict(path, samples, **(self.judged_as if fmt == "onnx" else {})))
        if fmt == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            exact = compare(trained, session.run(None, {session.get_inputs()[0].name: samples})[0])
            if exact["cosine"] < EXACT_COSINE:
                raise StageError(f"the QAT ONNX file, run by ONNX Runtime's Q/DQ semantics, does not compute what "
                                 f"the trained graph computes (cosine {exact['cosine']:.6f}, max |diff| "
                                 f"{exact['max_abs_diff']:.3g}): an export error; rerun with --debug and report it")
            shipped["q_dq_semantics"] = exact
        if shipped["cosine"] < self.config.min_parity_cosine:
            raise StageError(f"the QAT {fmt} file as it runs drifts from the trained graph: cosine "
                             f"{shipped['cosine']:.4f} (at least {self.config.min_parity_cosine}), max |diff| "
                             f"{shipped['max_abs_diff']:.3g}; lower stages.qat.min_parity_cosine to keep it")
        return shipped

    def _gates(self, ctx: RunContext, fmt: str, path, reference_path) -> tuple[dict, dict]:
        from edgedl.quantization.quality import Quality, bench_threads, single_sample
        from edgedl.quantization.search import Limits, Search

        c = self.config
        task = (read_sidecar(reference_path) or {}).get("task") or ctx.task
        judged_as = self.judged_as if fmt == "onnx" else {}  # as the quantize stage
        quality = Quality(ctx.dataset.val, reference_path, classifier=task == "classification",
                          use_labels=task not in UNLABELLED_TASKS, **judged_as)
        search = Search(None, quality, Limits(c.max_accuracy_drop, 0), path.parent)
        best = search.judge(path, "qat")
        sample, threads = single_sample(ctx.dataset.val.x), bench_threads(ctx.recipe)
        speed = search.speed_gate(reference_path, reference_path.name, best, sample, threads, "int8 (qat)",
                                  c.min_speedup, ctx.device.record)
        info = {**search.record(best, reference_path.name, "int8"), "speed_gate": speed}
        if judged_as:
            from edgedl.formats.onnx.quantize import QDQ_SEMANTICS

            info["judged_by"] = QDQ_SEMANTICS if self.tensorrt else \
                QDQ_SEMANTICS.replace("TensorRT", f"{ctx.device.record.get('name')}'s CPU")
        notes = {}
        if not best.passed:
            message = (f"the QAT {fmt} file missed the accuracy gate: {quality.kind} {best.quality:.4f} against "
                       f"{quality.reference_value:.4f} for {reference_path.name}, a drop of {best.drop_points:.2f} "
                       f"points (allowed {c.max_accuracy_drop})")
            if c.on_gate_miss == "fail":
                raise StageError(message + "; train longer (stages.qat.epochs), raise stages.qat.max_accuracy_drop, "
                                           "or set stages.qat.on_gate_miss: warn. What it measured is kept: manifest.json, "
                                           f"stages[{len(ctx.run.manifest['stages']) - 1}].quantization",
                                 measured={"quantization": info})
            notes["accuracy_gate"] = message
        if speed["passed"] is not True:
            notes["speed_gate"] = speed["verdict"]
        return info, notes
