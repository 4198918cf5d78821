"""LiteRT quantization: ai-edge-quantizer from the fp32 .tflite file (fp16, dynamic and full-integer
INT8, with a per-layer float fallback through its scope recipes), and litert-torch's PT2E quantizer.

With ``convert.py``, the only module that calls ``ai_edge_quantizer`` and ``litert_torch``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import numpy as np

from edgedl.errors import EdgedlError, MissingDependencyError
from edgedl.formats.tflite.convert import quiet
from edgedl.quantization.backend import Backend, Node, peaks_and_outputs

PRECISIONS = ("fp32", "fp16", "int8_dynamic", "int8", "int8_float_io")
QUANTIZERS = ("ai-edge-quantizer", "pt2e")
LAYOUT_OPS = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS"}


def _aeq():
    try:
        with quiet():
            from ai_edge_quantizer import qtyping, quantizer, recipe, recipe_manager
            from ai_edge_quantizer.algorithm_manager import AlgorithmName
            from ai_edge_quantizer.utils import tfl_flatbuffer_utils
    except ImportError:
        raise MissingDependencyError("ai-edge-quantizer", "litert-convert", "TFLite quantization") from None
    return qtyping, quantizer, recipe, recipe_manager, AlgorithmName, tfl_flatbuffer_utils


def _full_integer_recipe(precision: str, exclude: Iterable[str] = (), only: Iterable[str] | None = None):
    """Static INT8 over every op (or ``only`` these scopes), each scope in ``exclude`` left in float;
    ``int8_float_io`` keeps float inputs and outputs (a QUANTIZE after each input, a DEQUANTIZE before
    each output, inside the file). A later entry overrides an earlier one where both match a scope."""
    qtyping, _, _, recipe_manager, AlgorithmName, _ = _aeq()
    manager = recipe_manager.RecipeManager()
    every = qtyping.TFLOperationName.ALL_SUPPORTED

    def int8(regex):
        manager.add_static_config(regex=regex, operation_name=every, activation_num_bits=8, weight_num_bits=8,
                                  algorithm_key=AlgorithmName.MIN_MAX_UNIFORM_QUANT)

    def none(regex):
        manager.add_quantization_config(regex=regex, operation_name=every, algorithm_key=AlgorithmName.NO_QUANTIZE)

    if only is None:
        int8(".*")
    else:
        none(".*")
        for scope in only:
            int8(f"^{re.escape(scope)}$")
    for scope in exclude:
        none(f"^{re.escape(scope)}$")
    if precision == "int8_float_io":
        for boundary in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            manager.add_quantization_config(regex=".*", operation_name=boundary, algorithm_key=AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


def quantize(src: Path, dst: Path, precision: str, calibration: np.ndarray | None = None) -> None:
    """With ai-edge-quantizer, from the fp32 .tflite file: fp16 weights, dynamic-range INT8, or
    full-integer INT8 with int8 inputs and outputs (``int8``) or with float ones (``int8_float_io``)."""
    qtyping, _, recipe, recipe_manager, AlgorithmName, _ = _aeq()
    if precision == "fp16":
        manager = recipe_manager.RecipeManager()
        manager.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                       num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
        chosen = manager.get_quantization_recipe()
    elif precision == "int8_dynamic":
        chosen = recipe.dynamic_wi8_afp32()
    elif precision in ("int8", "int8_float_io"):  # the mixed-scale rule holds without the gates' search too
        from edgedl.quantization.rules import mixed_scale_nodes

        backend = LiteRTBackend(src, calibration, precision)
        backend.quantize(precision, dst, exclude=list(mixed_scale_nodes(backend)))
        return
    else:
        raise EdgedlError(f"unknown TFLite precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    _run(src, dst, chosen)


def _calibrate(src: Path, chosen, calibration: np.ndarray):
    """The ranges a recipe needs, from the samples (reusable by any recipe over the same ops: they
    depend on the model and the data, not on which ops a recipe quantizes)."""
    _, quantizer, *_ = _aeq()
    with quiet():
        qt = quantizer.Quantizer(str(src), chosen)
        key, name = _signature_input(src)
        return qt.calibrate({key: [{name: calibration[i : i + 1]} for i in range(len(calibration))]})


def _run(src: Path, dst: Path, chosen, calibrated=None) -> None:
    """Quantize ``src`` into ``dst`` with a recipe (``calibrated``: the ranges, where it needs them)."""
    _, quantizer, *_ = _aeq()
    with quiet():
        qt = quantizer.Quantizer(str(src), chosen)
        qt.quantize(calibrated if qt.need_calibration else None, enable_progress_report=False).export_model(
            str(dst), overwrite=True)


class LiteRTBackend(Backend):
    """ai-edge-quantizer's full-integer INT8 over one fp32 .tflite file, calibrated on ``calibration``
    (a batch of samples). A node is an op, named by its op and the layer its output comes from; it
    is left in float by a NO_QUANTIZE entry for its scope (its output tensors' names)."""

    format = "tflite"
    suffix = ".tflite"

    def __init__(self, fp32: Path, calibration: np.ndarray, precision: str = "int8_float_io"):
        self.path, self.calibration, self.precision = fp32, calibration, precision
        self._calibrated = None
        self._ops: list[tuple[str, str, str, tuple, tuple]] | None = None  # name, op, scope, inputs, outputs

    def schemes(self) -> list[str]:
        return [self.precision]

    def quantize(self, scheme, dst, exclude=(), only=None) -> None:
        scopes = {name: scope for name, _, scope, _, _ in self.ops()}
        exclude, only = list(exclude), None if only is None else list(only)
        chosen = _full_integer_recipe(scheme, [scopes[n] for n in exclude], None if only is None else
                                      [scopes[n] for n in only])
        if self._calibrated is None:  # ranges for every op, once: every later recipe reuses them
            self._calibrated = _calibrate(self.path, _full_integer_recipe(scheme), self.calibration)
        _run(self.path, dst, chosen, calibrated=self._calibrated)

    def ops(self):
        if self._ops is None:
            *_, fu = _aeq()
            model = fu.read_model(str(self.path))
            graph, codes = model.subgraphs[0], model.operatorCodes
            names = [fu.get_tensor_name(t) for t in graph.tensors]
            self._ops, taken = [], set()
            for i, op in enumerate(graph.operators):
                kind = fu.TFL_OP_CODE_TO_NAME.get(codes[op.opcodeIndex].builtinCode)
                op_name = getattr(kind, "value", str(kind or "CUSTOM"))
                outs = tuple(names[t] for t in op.outputs if t != -1)
                layer = re.sub(r";\d*$", "", (outs[0] if outs else f"op{i}").rsplit("/", 1)[-1]).rsplit(".", 1)[-1]
                name = f"{op_name} {layer}"
                if name in taken:
                    name += f" #{i}"
                taken.add(name)
                self._ops.append((name, op_name, fu.get_op_scope(op, graph.tensors),
                                  tuple(names[t] for t in op.inputs if t != -1), outs))
        return self._ops

    def quantizable_nodes(self) -> list[tuple[str, str]]:
        return [(name, op) for name, op, _, _, _ in self.ops() if op not in ("QUANTIZE", "DEQUANTIZE", "CUSTOM")]

    def graph(self):
        kind = {"CONCATENATION": "concat", **{op: "layout" for op in LAYOUT_OPS}}
        nodes = [Node(name, op, kind.get(op, op), ins, outs) for name, op, _, ins, outs in self.ops()]
        from edgedl.runtime.litert import interpreter_class

        cls, _ = interpreter_class()
        interpreter = cls(model_path=str(self.path))
        return nodes, [d["name"] for d in interpreter.get_output_details()]

    def peaks(self, tensors: list[str], samples: int = 16):
        """Every tensor kept by the interpreter (``experimental_preserve_all_tensors``), per sample."""
        from edgedl.runtime.litert import interpreter_class

        import warnings

        cls, _ = interpreter_class()
        with warnings.catch_warnings():  # "for debugging purposes only": reading every tensor is the point here
            warnings.simplefilter("ignore", UserWarning)
            interpreter = cls(model_path=str(self.path), experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
        index = {d["name"]: d["index"] for d in interpreter.get_tensor_details()}
        outputs = [d["name"] for d in interpreter.get_output_details()]
        names = [n for n in dict.fromkeys([*tensors, *outputs]) if n in index]
        entry = interpreter.get_input_details()[0]["index"]
        runs = []
        for i in range(min(samples, len(self.calibration))):
            interpreter.set_tensor(entry, np.ascontiguousarray(self.calibration[i : i + 1], dtype=np.float32))
            interpreter.invoke()
            runs.append([np.array(interpreter.get_tensor(index[n])) for n in names])
        return peaks_and_outputs(names, runs, outputs)


def quantize_pt2e(module, sample: np.ndarray, calibration: np.ndarray, dst: Path) -> None:
    """Full-integer INT8 (int8 inputs and outputs) with litert-torch's PT2E quantizer: symmetric,
    per-channel weights, observers calibrated in torch, then converted. The alternative to
    ai-edge-quantizer that benchmarks/litert.py compares it with."""
    try:
        with quiet():
            import litert_torch
            from litert_torch.quantize import pt2e_quantizer
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e import quantize_pt2e as pt2e
    except ImportError:
        raise MissingDependencyError("litert-torch", "litert-convert", "PT2E quantization") from None
    import torch

    example = (torch.from_numpy(sample),)
    with quiet():
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
