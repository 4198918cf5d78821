"""torch -> ONNX through torch.onnx (the torch.export-based exporter), and a user's ONNX file
brought in with its dynamic dimensions fixed. The only module that calls ``torch.onnx``."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from edgedl.errors import StageError, UsageError
from edgedl.formats.onnx import graph as onnx_graph


class OpsetError(StageError):
    """No exporter wrote the opset asked for."""


def export_onnx(module, example, path, opset: int, dynamic_batch: bool, output_name: str | list[str]) -> str | None:
    """Export ``module`` to one self-contained ONNX file at ``path`` (weights inside if < 2 GB).

    torch's torch.export-based exporter writes opset 18 when its own converter cannot go lower (a
    global pool's ReduceMean, on opset 17 for TensorRT 8.5). Then ONNX's version converter takes the
    file down; where it has no path (opset 13 for TensorRT 8.2), torch's TorchScript-based exporter
    (deprecated in torch, still shipped) writes the opset asked for. The export stage checks every
    file against torch either way.

    ``example`` is an array (one input called ``input``) or a dict of arrays keyed by input name, in
    the order the module takes them (ids and masks keep their integer dtype). A TorchScript module
    goes through the TorchScript-based exporter: torch.export does not trace TorchScript.

    Returns:
        None, or a note saying how the file reached ``opset`` when torch's default exporter did not.
    """
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        _export(module, example, path, opset, dynamic_batch, output_name, dynamo=False)
        return "a TorchScript model: exported by torch's TorchScript-based exporter (torch.export does not trace it)"
    _export(module, example, path, opset, dynamic_batch, output_name, dynamo=True)
    written = _opset(path, opset)
    if written == opset:
        return None
    why = convert_opset(path, opset)
    if why is None:
        return f"torch's exporter wrote opset {written}; ONNX's version converter took it to {opset}"
    try:
        _export(module, example, path, opset, dynamic_batch, output_name, dynamo=False)
    except StageError as exc:
        raise OpsetError(f"the ONNX exporter wrote opset {written}, not the opset {opset} asked for; ONNX's version "
                         f"converter cannot take this model there ({why}), and torch's TorchScript exporter failed "
                         f"too ({exc})") from None
    if _opset(path, opset) != opset:
        raise OpsetError(f"no exporter wrote opset {opset} for this model (torch's wrote {written})")
    return (f"exported by torch's TorchScript-based exporter (deprecated in torch): its torch.export-based exporter "
            f"writes opset {written} for this model, and ONNX's version converter cannot take it to {opset} ({why})")


def _opset(path, default: int) -> int:
    import onnx

    return next((o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                 if o.domain in ("", "ai.onnx")), default)


def _export(module, example, path, opset: int, dynamic_batch: bool, output_name: str | list[str],
            dynamo: bool) -> None:
    import torch

    outputs = [output_name] if isinstance(output_name, str) else list(output_name)  # one name per output
    module.eval()
    named = dict(example) if isinstance(example, dict) else {"input": example}
    args = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in named.values())
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=4096)
        dynamic = {"dynamic_shapes": tuple({0: batch} for _ in args) if dynamic_batch else None,
                   "external_data": False, "optimize": True}
    else:
        axes = {name: {0: "batch"} for name in [*named, *outputs]}
        dynamic = {"dynamic_axes": axes if dynamic_batch else None}
    # The exporter reports its steps on stdout and logs registry notes (e.g. "torchvision is not
    # installed") that are not about the user's model; keep the CLI's output to edgedl's lines.
    # onnxscript's version converter logs a traceback when it cannot go down to the opset asked
    # for; edgedl takes the file down itself (export_onnx) and says so when it cannot.
    # onnxscript's constant folder logs when it cannot fold a shape computation and leaves it be.
    logs = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript.version_converter",
                                                 "onnxscript.optimizer._constant_folding")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL if log.name.startswith("onnxscript") else logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="no signature found", category=UserWarning)  # TorchScript inputs
        warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)  # one batch, several inputs
        warnings.filterwarnings("ignore", message="The tensor attributes", category=UserWarning)  # an RNN's weights
        try:
            program = getattr(module, "exported_program", None)  # a .pt2: its own graph and shapes
            if program is not None:
                dynamic = {"external_data": False, "optimize": True}
            torch.onnx.export(program or module, args, str(path), input_names=list(named),
                              output_names=outputs, opset_version=opset, dynamo=dynamo, verbose=False, **dynamic)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StageError(f"ONNX export failed: {first}") from None
        finally:
            for log, level in zip(logs, levels):
                log.setLevel(level)


# Reduce ops whose opset-18 form adds noop_with_empty_axes (default 0: the older behaviour); ONNX's
# version converter leaves the attribute on a node it takes down to 17, which the checker refuses.
REDUCE_18 = {"ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
             "ReduceLogSumExp", "ReduceSumSquare"}


def convert_opset(path, opset: int) -> str | None:
    """Take the ONNX file at ``path`` to ``opset`` with ONNX's version converter, in place, and check
    the result; returns why it could not (the file is then unchanged), or None."""
    import onnx

    converted, why = _convert(onnx.load(str(path)), opset)
    if converted is not None:
        onnx.save(converted, str(path))
    return why


def _convert(model, opset: int):
    """(``model`` at ``opset`` by ONNX's version converter, checked, None) or (None, why it could not)."""
    import onnx
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, opset)
        for node in converted.graph.node:
            if node.op_type in REDUCE_18 and opset < 18:
                keep = [a for a in node.attribute if not (a.name == "noop_with_empty_axes" and a.i == 0)]
                del node.attribute[:]
                node.attribute.extend(keep)
        onnx.checker.check_model(converted, full_check=True)
    except Exception as exc:  # the converter raises RuntimeError, the checker ValidationError
        return None, (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
    return converted, None


@functools.lru_cache(maxsize=None)
def onnxruntime_reads(ir: int, opset: int) -> tuple[int, int] | None:
    """The newest (IR version, default-domain opset) at or below (``ir``, ``opset``) that the installed
    ONNX Runtime loads, probed on a one-node graph from the file's own versions down (ONNX Runtime has
    no API that says, and the installed onnx package may know fewer versions than it reads); None
    without ONNX Runtime, or where it loads not even IR 7 at opset 13."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import onnx
    from onnx import TensorProto, helper

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a refused probe is the answer, not an error to print

    def loads(ir: int, opset: int) -> bool:
        value = helper.make_tensor_value_info
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                                  [value("x", TensorProto.FLOAT, [1])], [value("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = ir
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception:
            return False
        return True

    ir = min(ir, onnx.IR_VERSION + 16)  # a corrupt version number is not probed down one by one
    opset = min(opset, onnx.defs.onnx_opset_version() + 16)
    if not loads(min(ir, 7), min(opset, 13)):
        return None
    while ir > 7 and not loads(ir, min(opset, 13)):
        ir -= 1
    while opset > 13 and not loads(ir, opset):
        opset -= 1
    return ir, opset


def fit_onnxruntime(model, name: str):
    """``model`` as the installed ONNX Runtime reads it, and what was changed: a file written by a
    newer ``onnx`` package carries its newest IR version (``onnx.helper.make_model`` writes IR 14 at
    any opset), which ONNX Runtime refuses whole, so the IR version is lowered to the newest ONNX
    Runtime reads (a graph that does use a type only the newer IR has still fails there, with ONNX
    Runtime's error); an opset newer than it reads is taken down by ONNX's version converter, or
    refused in one line saying which opset to export at."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    reads = onnxruntime_reads(model.ir_version, opset or 13)
    if reads is None:
        return model, []
    import onnxruntime as ort

    ir, newest = reads
    notes = []
    if opset is not None and opset > newest:
        converted, why = _convert(model, newest)
        if converted is None:
            raise UsageError(f"{name} uses ONNX opset {opset}; ONNX Runtime {ort.__version__} reads up to opset "
                             f"{newest} and ONNX's version converter cannot take it there ({why}): export it "
                             f"again at opset {newest} or lower")
        model = converted
        notes.append(f"opset {opset} taken down to {newest} by ONNX's version converter (ONNX Runtime "
                     f"{ort.__version__} reads up to {newest})")
    if model.ir_version > ir:
        notes.append(f"IR version {model.ir_version} written as {ir}, the newest ONNX Runtime {ort.__version__} "
                     f"reads")
        model.ir_version = ir
    return model, notes


def check_input_shapes(model, wanted: dict[str, list[int]]) -> None:
    """Refuse --input-shape names and ranks that do not fit the model, before any work."""
    inputs = onnx_graph.graph_inputs(model)
    names = [i.name for i in inputs]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise UsageError(f"--input-shape names {unknown}, but the model's inputs are {names}")
    for value in inputs:
        shape = wanted.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if shape is not None and len(shape) != len(dims):
            raise UsageError(f"--input-shape {value.name}: the input has {len(dims)} dimensions, not {len(shape)}")


def fix_dimensions(source: Path, wanted: dict[str, list[int]], sample_shape: tuple | None):
    """The model with dynamic dimensions fixed from ``wanted`` or, past the batch axis of a single
    input, from the data's ``sample_shape``, fitted to the installed ONNX Runtime (fit_onnxruntime);
    returns (model, {input: {axis: size}}, [what fitting changed])."""
    import onnx

    model = onnx_graph.load_graph(source)
    if onnx_graph.external_files(model, source.parent):
        model = onnx.load(str(source))  # bring the weights inside the artifact
    model, fitted = fit_onnxruntime(model, source.name)
    check_input_shapes(model, wanted)
    inputs = onnx_graph.graph_inputs(model)
    fixes: dict[str, dict[int, int]] = {}
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        shape = wanted.get(value.name)
        for axis, dim in enumerate(dims):
            dynamic = not dim.HasField("dim_value")
            target = shape[axis] if shape is not None else (
                sample_shape[axis - 1] if dynamic and axis > 0 and len(inputs) == 1 and sample_shape
                and len(dims) == len(sample_shape) + 1 else None)
            if target is not None and (dynamic or dim.dim_value != target):
                dim.Clear()
                dim.dim_value = int(target)
                fixes.setdefault(value.name, {})[axis] = int(target)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        raise UsageError(f"shape inference fails on {source.name}: {str(exc).splitlines()[0]}; fix the dynamic "
                         "dimensions with --input-shape name=1x3x224x224") from None
    return model, fixes, fitted
