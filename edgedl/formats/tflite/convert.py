"""PyTorch -> LiteRT through litert-torch (no TensorFlow), quantized with ai-edge-quantizer.

The only module that calls ``litert_torch`` and ``ai_edge_quantizer``. The onnx2tf route is not
used: it pins numpy 1.x and exact TensorFlow versions, and users report exports that silently
produce nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path

import numpy as np

from edgedl.errors import EdgedlError, MissingDependencyError

PRECISIONS = ("fp32", "fp16", "int8_dynamic", "int8", "int8_float_io")
QUANTIZERS = ("ai-edge-quantizer", "pt2e")


@contextlib.contextmanager
def _quiet():
    """Both libraries narrate their steps, partly from C++ straight to file descriptors 1 and 2;
    keep edgedl's output to its own lines. Errors still surface as exceptions."""
    from edgedl.runtime.litert import native_output_silenced

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with native_output_silenced(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        absl.setLevel(level)


def convert(module, sample: np.ndarray, path: Path) -> None:
    """Convert a torch module to an fp32 .tflite file, traced with ``sample`` (batch 1)."""
    try:
        with _quiet():  # importing it prints native start-up notices (oneDNN, torchao kernels)
            import litert_torch
    except ImportError:
        raise MissingDependencyError("litert-torch", "litert-convert", "TFLite export") from None
    import torch

    try:
        with _quiet():
            edge = litert_torch.convert(module.eval(), (torch.from_numpy(sample),))
            edge.export(str(path))
    except Exception as exc:
        text = str(exc)
        match = re.search(r"Lowering not found: (\S+)", text)
        if match:
            op = match.group(1)
            where = locate_op(module, sample, op)
            place = f" in module '{where[0]}' ({where[1]})" if where else ""
            raise EdgedlError(f"litert-torch cannot convert op {op}{place}: it has no LiteRT lowering; replace it "
                              "with supported ops or move it out of the exported model") from None
        first = (text.strip().splitlines() or [type(exc).__name__])[0]
        raise EdgedlError(f"litert-torch cannot convert the model: {first} (rerun with --debug for the full trace)") from None


def locate_op(module, sample: np.ndarray, op: str) -> tuple[str, str] | None:
    """The module path and class holding the first node that calls ``op`` (e.g. aten.bucketize.Tensor),
    from torch.export's module stack; None if it cannot be found."""
    import torch

    try:
        program = torch.export.export(module.eval(), (torch.from_numpy(sample),))
        graphs = [program.graph, program.run_decompositions().graph]
    except Exception:
        return None
    for graph in graphs:
        for node in graph.nodes:
            if node.op == "call_function" and str(node.target) == op:
                stack = node.meta.get("nn_module_stack") or {}
                if stack:
                    path, cls = list(stack.values())[-1]
                    return path or "(top level)", getattr(cls, "__name__", str(cls)).rsplit(".", 1)[-1]
                return "(top level)", type(module).__name__
    return None


def quantize(src: Path, dst: Path, precision: str, calibration: np.ndarray | None = None) -> None:
    """With ai-edge-quantizer, from the fp32 .tflite file: fp16 weights, dynamic-range INT8, or
    full-integer INT8 with int8 inputs and outputs (``int8``) or with float ones (``int8_float_io``:
    a QUANTIZE op after each input and a DEQUANTIZE op before each output, inside the file)."""
    try:
        with _quiet():
            from ai_edge_quantizer import qtyping, quantizer, recipe, recipe_manager
            from ai_edge_quantizer.algorithm_manager import AlgorithmName
    except ImportError:
        raise MissingDependencyError("ai-edge-quantizer", "litert-convert", "TFLite quantization") from None
    if precision == "fp16":
        manager = recipe_manager.RecipeManager()
        manager.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                       num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
        chosen = manager.get_quantization_recipe()
    elif precision == "int8_dynamic":
        chosen = recipe.dynamic_wi8_afp32()
    elif precision == "int8":
        chosen = recipe.static_wi8_ai8()
    elif precision == "int8_float_io":
        manager = recipe_manager.RecipeManager()
        manager.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                  activation_num_bits=8, weight_num_bits=8,
                                  algorithm_key=AlgorithmName.MIN_MAX_UNIFORM_QUANT)
        for boundary in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            manager.add_quantization_config(regex=".*", operation_name=boundary,
                                            algorithm_key=AlgorithmName.NO_QUANTIZE)
        chosen = manager.get_quantization_recipe()
    else:
        raise EdgedlError(f"unknown TFLite precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    with _quiet():
        qt = quantizer.Quantizer(str(src), chosen)
        result = None
        if qt.need_calibration:
            key, name = _signature_input(src)
            result = qt.calibrate({key: [{name: calibration[i : i + 1]} for i in range(len(calibration))]})
        qt.quantize(result, enable_progress_report=False).export_model(str(dst), overwrite=True)


def quantize_pt2e(module, sample: np.ndarray, calibration: np.ndarray, dst: Path) -> None:
    """Full-integer INT8 (int8 inputs and outputs) with litert-torch's PT2E quantizer: symmetric,
    per-channel weights, observers calibrated in torch, then converted. The alternative to
    ai-edge-quantizer that benchmarks/litert.py compares it with."""
    try:
        with _quiet():
            import litert_torch
            from litert_torch.quantize import pt2e_quantizer
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e import quantize_pt2e as pt2e
    except ImportError:
        raise MissingDependencyError("litert-torch", "litert-convert", "PT2E quantization") from None
    import torch

    example = (torch.from_numpy(sample),)
    with _quiet():
        chosen = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
        graph = pt2e.prepare_pt2e(torch.export.export(module.eval(), example).module(), chosen)
        with torch.no_grad():
            for i in range(len(calibration)):  # exported for batch 1
                graph(torch.from_numpy(calibration[i : i + 1]))
        graph = pt2e.convert_pt2e(graph, fold_quantize=False)
        litert_torch.convert(graph, example, quant_config=QuantConfig(pt2e_quantizer=chosen)).export(str(dst))


def _signature_input(path: Path) -> tuple[str, str]:
    from edgedl.runtime.litert import interpreter_class

    cls, _ = interpreter_class()
    signatures = cls(model_path=str(path)).get_signature_list()
    if len(signatures) != 1:
        raise EdgedlError(f"{path.name} has {len(signatures)} signatures; calibration needs exactly one")
    key, sig = next(iter(signatures.items()))
    if len(sig["inputs"]) != 1:
        raise EdgedlError(f"full-integer calibration takes single-input models; {path.name} has {sig['inputs']}")
    return key, sig["inputs"][0]
