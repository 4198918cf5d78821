"""The ``export_onnx`` stage: torch -> ONNX (fp32) through torch.onnx, checked against torch."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from edgedl import onnx_graph
from edgedl.errors import StageError, UsageError
from edgedl.parity import compare
from edgedl.stages.base import RunContext, Stage

PARITY_SAMPLES = 16


def export_onnx(module, example: np.ndarray, path, opset: int, dynamic_batch: bool, output_name: str) -> None:
    """Export ``module`` to one self-contained ONNX file at ``path`` (weights inside if < 2 GB)."""
    import torch

    module.eval()
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    # The exporter reports its steps on stdout and logs registry notes (e.g. "torchvision is not
    # installed") that are not about the user's model; keep the CLI's output to edgedl's lines.
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            torch.onnx.export(
                module,
                (torch.from_numpy(example),),
                str(path),
                input_names=["input"],
                output_names=[output_name],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                optimize=True,
                verbose=False,
            )
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StageError(f"ONNX export failed: {first}") from None
        finally:
            onnx_log.setLevel(level)


class ExportOnnxStage(Stage):
    """Exports every torch checkpoint of the run that has no ONNX export yet.

    Each step's model (trained, pruned, distilled) becomes its own fp32 ONNX artifact, so the
    report shows what every step cost and bought, measured on files that ship.
    """

    name = "export_onnx"

    def run(self, ctx: RunContext) -> None:
        from edgedl.models import load_checkpoint

        if ctx.model is None:  # the model came as an ONNX file
            if not any(a["format"] == "onnx" for a in ctx.run.manifest["artifacts"]):
                import_onnx(ctx, Path(ctx.recipe.model.spec))
            return
        ctx.ensure_model_artifact()
        artifacts = ctx.run.manifest["artifacts"]
        exported = {a["parent"] for a in artifacts if a["format"] == "onnx"}
        for record in [a for a in artifacts if a["format"] == "torch" and a["name"] not in exported]:
            module = load_checkpoint(ctx.run.artifact_path(record)).module
            self.export_one(ctx, module.eval(), record["name"], record.get("sparsity"))

    def export_one(self, ctx: RunContext, module, parent: str, sparsity: dict | None = None) -> None:
        import torch

        import edgedl.runtime as rt

        c = self.config
        samples = ctx.dataset.val.x[:PARITY_SAMPLES]
        feed = samples if c.dynamic_batch else samples[:1]
        output_name = "logits" if ctx.dataset.num_classes else "output"
        tmp = ctx.run.tempdir() / f"{parent.rsplit('.', 1)[0]}.fp32.onnx"
        export_onnx(module, feed[:2], tmp, c.opset, c.dynamic_batch, output_name)

        with torch.no_grad():
            reference = module(torch.from_numpy(feed)).numpy()
        with rt.load(tmp, verify=False) as runner:
            parity = compare(reference, runner(feed))
            inputs = [_tensor(i) for i in runner.inputs]
            outputs = [_tensor(o) for o in runner.outputs]
        scale = max(1.0, float(np.abs(reference).max()))
        if parity["max_abs_diff"] > c.parity_atol * scale:
            raise StageError(
                f"exported ONNX of {parent} differs from torch by {parity['max_abs_diff']:.3g} "
                f"(allowed {c.parity_atol * scale:.3g}); the model may use an op the exporter "
                "translates differently; rerun with --debug and check the exporter warnings"
            )
        extra_sidecar = {"sparsity": {k: sparsity[k] for k in ("pattern", "layers")}} if sparsity else {}
        add_onnx_artifact(ctx, tmp, inputs, outputs, parent=parent, opset=c.opset, known_layout=True,
                          source={"model": ctx.recipe.model.spec, "artifact": parent},
                          extra={"parity": {"reference": "torch", **parity}}, **extra_sidecar)
        ctx.log(f"exported {tmp.name}: parity max|diff| {parity['max_abs_diff']:.2e}, "
                f"top-1 agreement {parity['top1_agreement']:.3f}")


def import_onnx(ctx: RunContext, source: Path) -> None:
    """Bring a user's ONNX file into the run as its fp32 artifact.

    Dynamic dimensions are fixed from ``model.input_shapes`` or, past the batch axis, from the
    data's sample shape, so shape inference (and later quantization) does not fail on them.
    """
    import onnx

    import edgedl.runtime as rt

    model = onnx_graph.load_graph(source)
    if onnx_graph.external_files(model, source.parent):
        model = onnx.load(str(source))  # bring the weights inside the artifact
    inputs = onnx_graph.graph_inputs(model)
    wanted = dict(ctx.recipe.model.input_shapes)
    unknown = set(wanted) - {i.name for i in inputs}
    if unknown:
        raise UsageError(f"--input-shape names {sorted(unknown)}, but the model's inputs are "
                         f"{[i.name for i in inputs]}")
    fixes = {}
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        shape = wanted.get(value.name)
        if shape is not None and len(shape) != len(dims):
            raise UsageError(f"--input-shape {value.name}: the input has {len(dims)} dimensions, not {len(shape)}")
        for axis, dim in enumerate(dims):
            dynamic = not dim.HasField("dim_value")
            target = shape[axis] if shape is not None else (
                ctx.dataset.input_shape[axis - 1] if dynamic and axis > 0 and len(inputs) == 1
                and len(dims) == len(ctx.dataset.input_shape) + 1 else None)
            if target is not None and (dynamic or dim.dim_value != target):
                dim.Clear()
                dim.dim_value = int(target)
                fixes.setdefault(value.name, {})[axis] = int(target)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        raise UsageError(f"shape inference fails on {source.name}: {str(exc).splitlines()[0]}; fix the dynamic "
                         "dimensions with --input-shape name=1x3x224x224") from None
    tmp = ctx.run.tempdir() / f"{ctx.stem}.fp32.onnx"
    onnx.save(model, str(tmp))
    with rt.load(tmp, verify=False) as runner:
        inputs_info = [_tensor(i) for i in runner.inputs]
        outputs_info = [_tensor(o) for o in runner.outputs]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    add_onnx_artifact(ctx, tmp, inputs_info, outputs_info, parent=None, opset=opset, known_layout=False,
                      source={"model": str(source)}, extra={"imported": {"from": str(source), "fixed_dims": fixes}})
    ctx.log(f"imported {source} as {tmp.name}" + (f", fixed dimensions {fixes}" if fixes else ""))


def add_onnx_artifact(ctx: RunContext, tmp: Path, inputs: list[dict], outputs: list[dict], *, parent: str | None,
                      opset: int | None, known_layout: bool, source: dict, extra: dict, **sidecar_extra) -> None:
    """Record an fp32 ONNX file with its sidecar, parameters and MACs."""
    sidecar = build_sidecar(ctx, inputs, outputs, source=source, known_layout=known_layout, opset=opset,
                            **sidecar_extra)
    graph = onnx_graph.load_graph(tmp)
    ctx.run.add_artifact(tmp, name=tmp.name, format="onnx", precision="fp32", stage="export_onnx", parent=parent,
                         sidecar=sidecar, extra=extra,
                         metrics={"params": onnx_graph.count_params(graph), "macs": onnx_graph.count_macs(graph)[0]})


def build_sidecar(ctx: RunContext, inputs: list[dict], outputs: list[dict], *, source: dict, known_layout: bool,
                  **extra) -> dict:
    """What the runtime needs beside the file: tensors with their layout, task, normalization, labels.

    ``known_layout``: the exporter keeps PyTorch's NCHW for 4-D inputs. Otherwise (an imported
    file) NCHW is only assumed when the second dimension looks like channels (1, 3 or 4).
    """
    for info in inputs:
        if len(info["shape"]) == 4 and (known_layout or info["shape"][1] in (1, 3, 4)):
            info["layout"] = "NCHW"
    return {"inputs": inputs, "outputs": outputs, "task": infer_task(ctx.dataset, outputs),
            "normalization": ctx.dataset.normalization, "labels": ctx.dataset.labels, "source": source, **extra}


def infer_task(dataset, outputs: list[dict]) -> str:
    """``classification`` when the data has classes or the one output is (batch, classes)."""
    if dataset.num_classes:
        return "classification"
    shape = outputs[0]["shape"] if len(outputs) == 1 else []
    return "classification" if len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 1 else "unknown"


def _tensor(info) -> dict:
    out = {"name": info.name, "shape": list(info.shape), "dtype": info.dtype}
    if info.quantization:
        out["quantization"] = info.quantization
    return out
