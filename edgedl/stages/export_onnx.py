"""The ``export_onnx`` stage: torch -> ONNX (fp32), checked against torch; or a user's ONNX file
brought in as the fp32 artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import Field

from edgedl.artifacts import PARITY_SAMPLES, as_outputs, build_sidecar, compare, output_names, runner_tensors
from edgedl.errors import StageError, UsageError
from edgedl.formats.onnx import graph as onnx_graph
from edgedl.data.feeds import Samples
from edgedl.formats.onnx.export import OpsetError, export_onnx
from edgedl.stages.base import RunContext, Stage, StageConfig


DEFAULT_OPSET = 18


class ExportOnnxConfig(StageConfig):
    """Export the current model to ONNX (fp32) and check it against torch."""

    stage: Literal["export_onnx"]
    opset: Optional[int] = Field(None, ge=13, le=23, description=f"default: {DEFAULT_OPSET}, or the highest the "
                                                                    "recipe's TensorRT parses when that is lower")
    dynamic_batch: bool = True
    parity_atol: float = Field(1e-4, gt=0, description="max abs difference allowed vs torch")


class ExportOnnxStage(Stage):
    """Exports every torch checkpoint of the run that has no ONNX export yet.

    Each step's model (trained, pruned, distilled) becomes its own fp32 ONNX artifact, so the
    report shows what every step cost and bought, measured on files that ship.
    """

    name = "export_onnx"
    Config = ExportOnnxConfig
    target = "onnx"
    serves = ("onnx", "tensorrt")

    def check(self, recipe, constraints: dict) -> None:
        limit, opset = constraints.get("onnx_opset"), self.config.opset
        if limit and opset is not None and not limit[0] <= opset <= limit[1]:
            low, high, why = limit
            raise UsageError(f"stages.export_onnx.opset={opset}: {why} parses ONNX opsets {low} to {high}; set one in "
                             f"that range, or drop the field and edgedl takes {min(DEFAULT_OPSET, high)}")

    def opset(self, ctx: RunContext) -> int:
        """The opset asked for, else 18, or the highest the target's TensorRT parses when lower."""
        if self.config.opset is not None:
            return self.config.opset
        limit = ctx.constraints.get("onnx_opset")
        return min(DEFAULT_OPSET, limit[1]) if limit else DEFAULT_OPSET

    def run(self, ctx: RunContext) -> None:
        if ctx.model is None:  # the model came as an ONNX file
            if not any(a["format"] == "onnx" for a in ctx.run.manifest["artifacts"]):
                import_onnx(ctx, Path(ctx.recipe.model.spec))
            return
        ctx.ensure_model_artifact()
        artifacts = ctx.run.manifest["artifacts"]
        exported = {a["parent"] for a in artifacts if a["format"] == "onnx"}
        for record in [a for a in artifacts if a["format"] == "torch" and a["name"] not in exported]:
            module = ctx.load_checkpoint(record).module
            self.export_one(ctx, module.eval(), record["name"], record.get("sparsity"))

    def export_one(self, ctx: RunContext, module, parent: str, sparsity: dict | None = None) -> None:
        import torch

        c = self.config
        samples = ctx.dataset.val.x[:PARITY_SAMPLES]
        feed = samples if c.dynamic_batch else samples[:1]
        if isinstance(feed, Samples):  # several inputs (ids and a mask): named, in the model's order
            feed = feed.batch(0, len(feed))[0]
        import edgedl.runtime as rt

        arrays = feed if isinstance(feed, dict) else {"input": feed}
        with torch.no_grad():
            out = module(*(torch.from_numpy(v) for v in arrays.values()))
        references = [o.numpy() for o in as_outputs(out)]
        names = output_names(out, ctx.dataset.num_classes)
        tmp = ctx.run.tempdir() / f"{parent.rsplit('.', 1)[0]}.fp32.onnx"
        opset = self.opset(ctx)
        try:
            example = {k: v[:2] for k, v in feed.items()} if isinstance(feed, dict) else feed[:2]
            route = export_onnx(module, example, tmp, opset, c.dynamic_batch, names if len(names) > 1 else names[0])
        except OpsetError as exc:
            limit = ctx.constraints.get("onnx_opset")
            if limit is None:
                raise StageError(f"{exc}; set stages.export_onnx.opset to one the exporter reaches") from None
            raise StageError(f"{exc}; {limit[2]} parses opsets {limit[0]} to {limit[1]}: export the model at one of "
                             "those with another tool and bring the ONNX in (--model FILE.onnx)") from None

        with rt.load(tmp, verify=False) as runner:
            exported = list(runner.run(arrays).values())
        if len(exported) != len(references):
            raise StageError(f"exported ONNX of {parent} has {len(exported)} outputs where torch gives "
                             f"{len(references)}; rerun with --debug and check the exporter warnings")
        # every output against torch's; the one furthest from it, relative to its own scale, is recorded
        checked = [(compare(r, o), max(1.0, float(np.abs(r).max())), name)
                   for r, o, name in zip(references, exported, names)]
        parity, scale, worst = max(checked, key=lambda c_: c_[0]["max_abs_diff"] / c_[1])
        if len(checked) > 1:
            parity = {**parity, "output": worst}
        if parity["max_abs_diff"] > c.parity_atol * scale:
            raise StageError(
                f"exported ONNX of {parent} differs from torch by {parity['max_abs_diff']:.3g}"
                + (f" in output {worst}" if len(checked) > 1 else "") + " "
                f"(allowed {c.parity_atol * scale:.3g}); the model may use an op the exporter "
                "translates differently; rerun with --debug and check the exporter warnings"
            )
        extra_sidecar = {"sparsity": {k: sparsity[k] for k in ("pattern", "layers")}} if sparsity else {}
        extra = {"parity": {"reference": "torch", **parity}, **({"export_route": route} if route else {})}
        add_onnx_artifact(ctx, tmp, parent=parent, opset=opset, known_layout=True,
                          source={"model": ctx.recipe.model.spec, "artifact": parent},
                          extra=extra, **extra_sidecar)
        ctx.log(f"exported {tmp.name} (opset {opset}): parity max|diff| {parity['max_abs_diff']:.2e}"
                + (f" (worst of {len(checked)} outputs: {worst})" if len(checked) > 1 else "")
                + f", top-1 agreement {parity['top1_agreement']:.3f}" + (f"; {route}" if route else ""))


def import_onnx(ctx: RunContext, source: Path) -> None:
    """Bring a user's ONNX file into the run as its fp32 artifact, dynamic dimensions fixed from
    ``model.input_shapes`` or the data's sample shape (so that quantization can shape the graph)."""
    import onnx

    from edgedl.models.importers import importer_for

    sample_shape = None if ctx.recipe.model.keep_dynamic else ctx.dataset.input_shape
    model, fixes, opset, fitted = importer_for(str(source)).bring(str(source), dict(ctx.recipe.model.input_shapes),
                                                                  sample_shape)
    tmp = ctx.run.tempdir() / f"{ctx.stem}.fp32.onnx"
    onnx.save(model, str(tmp))
    imported = {"from": str(source), "fixed_dims": fixes, **({"fitted": fitted} if fitted else {})}
    add_onnx_artifact(ctx, tmp, parent=None, opset=opset, known_layout=False,
                      source={"model": str(source)}, extra={"imported": imported})
    ctx.log(f"imported {source} as {tmp.name}" + (f", fixed dimensions {fixes}" if fixes else "")
            + "".join(f"; {note}" for note in fitted))


def add_onnx_artifact(ctx: RunContext, tmp: Path, *, parent: str | None, opset: int | None, known_layout: bool,
                      source: dict, extra: dict, **sidecar_extra) -> None:
    """Record an fp32 ONNX file with its sidecar, parameters and MACs."""
    inputs, outputs = runner_tensors(tmp)
    sidecar = build_sidecar(ctx.dataset, inputs, outputs, source=source, known_layout=known_layout, opset=opset,
                            model=ctx.model_info,
                            **sidecar_extra)
    ctx.run.add_artifact(tmp, name=tmp.name, format="onnx", precision="fp32", stage="export_onnx", parent=parent,
                         sidecar=sidecar, extra=extra,
                         metrics=onnx_graph.size_metrics(tmp))
