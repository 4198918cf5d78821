"""The ``export_tflite`` stage: the current model to .tflite in the requested precisions."""

from __future__ import annotations

import numpy as np

from edgedl import litert_convert
from edgedl.data import calibration_samples
from edgedl.errors import StageError, UsageError
from edgedl.parity import compare
from edgedl.stages.base import RunContext, Stage
from edgedl.stages.evaluate import predict
from edgedl.onnx_graph import COUNTED_ON_ONNX
from edgedl.run import precision_label
from edgedl.stages.export_onnx import PARITY_SAMPLES, _tensor, build_sidecar


class ExportTfliteStage(Stage):
    name = "export_tflite"

    def run(self, ctx: RunContext) -> None:
        import torch

        import edgedl.runtime as rt

        c = self.config
        if ctx.model is None:
            raise UsageError(
                "TFLite export needs the PyTorch model: litert-torch converts PyTorch, and the ONNX->TensorFlow->"
                "TFLite route (onnx2tf) pins numpy 1.x and exact TensorFlow versions and is known to produce empty "
                "exports, so edgedl does not take it; pass the PyTorch model (registry name, file.py:factory or "
                "checkpoint) instead of the .onnx file")
        parent = ctx.ensure_model_artifact()
        module = ctx.model.module.eval()
        stem = parent.rsplit(".", 1)[0]
        samples = np.ascontiguousarray(ctx.dataset.val.x[:PARITY_SAMPLES])
        with torch.no_grad():
            reference = module(torch.from_numpy(samples)).numpy()
        work = ctx.run.tempdir()
        fp32 = work / f"{stem}.fp32.tflite"
        litert_convert.convert(module, samples[:1], fp32)
        calibrated = {p for p in c.precisions if p in ("int8", "int8_float_io")}
        calibration = self._calibration(ctx) if calibrated else None
        produced = []
        for precision in c.precisions:
            path = fp32 if precision == "fp32" else work / f"{stem}.{precision_label(precision)}.tflite"
            if precision == "int8" and c.quantizer == "pt2e":
                litert_convert.quantize_pt2e(module, samples[:1], calibration, path)
            elif precision != "fp32":
                litert_convert.quantize(fp32, path, precision, calibration)
            parity = compare(reference, predict(path, samples))
            if precision == "fp32":
                scale = max(1.0, float(np.abs(reference).max()))
                if parity["max_abs_diff"] > c.parity_atol * scale:
                    raise StageError(f"the .tflite export of {parent} differs from torch by "
                                     f"{parity['max_abs_diff']:.3g} (allowed {c.parity_atol * scale:.3g})")
            produced.append((precision, path, parity))
        fp32_name = None
        for precision, path, parity in produced:
            with rt.load(path, verify=False) as runner:
                inputs = [_tensor(i) for i in runner.inputs]
                outputs = [_tensor(o) for o in runner.outputs]
            sidecar = build_sidecar(ctx, inputs, outputs, known_layout=True,  # litert-torch keeps NCHW
                                    source={"model": ctx.recipe.model.spec, "artifact": parent},
                                    converter="litert-torch",
                                    quantizer=self._quantizer(precision))
            record = ctx.run.add_artifact(
                path, name=path.name, format="tflite", precision=precision_label(precision), stage=self.name,
                parent=self._parent(precision, parent, fp32_name), sidecar=sidecar,
                notes={"params": COUNTED_ON_ONNX, "macs": COUNTED_ON_ONNX},
                extra={"parity": {"reference": "torch", **parity},
                       "calibration": {"samples": len(calibration), "split": "train"} if precision in calibrated else None})
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

    def _calibration(self, ctx) -> np.ndarray:
        return calibration_samples(ctx.dataset, self.config.calibration_samples, ctx.recipe.seed,
                                   "export_tflite.calibration_samples")
