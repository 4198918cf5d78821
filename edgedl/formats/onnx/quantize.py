"""ONNX quantization through onnxruntime.quantization: static QDQ INT8, dynamic INT8, FP16.

The only module that calls ``onnxruntime.quantization``. Schemes are named, typed settings rather
than option strings: ``tensorrt`` is what TensorRT's explicit quantization expects (symmetric
INT8 activations with zero point 0, per-channel symmetric weights, Q/DQ where TensorRT fuses it);
the ``cpu_*`` schemes are candidates for
ONNX Runtime on CPUs, where unsigned activations and per-tensor weights are often faster.
"""

from __future__ import annotations

import contextlib
import logging
import io
from dataclasses import dataclass
from pathlib import Path

from typing import Iterable

import numpy as np

from edgedl.errors import EdgedlError, MissingDependencyError
from edgedl.quantization.backend import Backend, Node, peaks_and_outputs

DYNAMIC_OPS = ["MatMul", "Gemm", "LSTM", "GRU", "Attention"]
MIN_QDQ_OPSET = 13  # per-channel DequantizeLinear
MIN_IR_VERSION = 7  # what opset 13 needs; IR 3 (old Caffe2 and model-zoo files) lists weights as inputs


@dataclass(frozen=True)
class Scheme:
    name: str
    activations: str  # "int8" or "uint8"
    per_channel: bool
    symmetric_activations: bool
    reduce_range: bool = False
    op_types: tuple[str, ...] | None = None  # None: every op ONNX Runtime can quantize
    quantize_bias: bool = True  # TensorRT keeps biases in float (its DequantizeLinear takes no INT32)


# TensorRT's explicit quantization fuses Q/DQ into the layer that follows: quantize the inputs of
# weighted layers (Conv, ConvTranspose, Gemm, MatMul), the residual input of Add (so the add fuses
# into the convolution before it) and pooling, which commutes with Q/DQ. Q/DQ around other ops
# (Concat, Resize, activations) only adds reformatting: NVIDIA's Q/DQ placement recommendations.
TENSORRT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "MaxPool", "AveragePool", "GlobalAveragePool")


SCHEMES = {
    "tensorrt": Scheme("tensorrt", "int8", per_channel=True, symmetric_activations=True, op_types=TENSORRT_OPS,
                       quantize_bias=False),
    "cpu_u8s8_per_tensor": Scheme("cpu_u8s8_per_tensor", "uint8", per_channel=False, symmetric_activations=False),
    "cpu_s8s8_per_channel": Scheme("cpu_s8s8_per_channel", "int8", per_channel=True, symmetric_activations=True),
    # Transformers: only the weighted layers in INT8; LayerNorm, Softmax, GELU and the residual adds
    # stay float, where INT8 costs accuracy (outliers) and buys no speed on a CPU (each Q/DQ pair
    # around a cheap op is a round trip).
    "cpu_u8s8_weighted": Scheme("cpu_u8s8_weighted", "uint8", per_channel=False, symmetric_activations=False,
                                op_types=("Conv", "ConvTranspose", "Gemm", "MatMul")),
}
CPU_CANDIDATES = ("cpu_u8s8_per_tensor", "cpu_s8s8_per_channel")
TRANSFORMER_OPS = {"LayerNormalization", "Softmax"}


def cpu_candidates(path: Path) -> tuple[str, ...]:
    """The CPU schemes to try for this model: the weighted-layers-only scheme joins them when the
    graph has transformer blocks (LayerNorm, Softmax)."""
    import onnx

    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    return CPU_CANDIDATES + (("cpu_u8s8_weighted",) if ops & TRANSFORMER_OPS else ())


def _ort_quant():
    try:
        from onnxruntime import quantization
    except ImportError:
        raise MissingDependencyError("onnxruntime", "onnx", "ONNX quantization") from None
    return quantization


def prepare(src: Path, dst: Path) -> None:
    """Upgrade old opsets (QDQ per-channel needs 13) and run ORT's pre-processing.

    Pre-processing (shape inference and graph optimisation) is what ORT recommends before
    static quantization; if it cannot handle a model, the opset-upgraded model is used as is.
    """
    import onnx

    model = onnx.load(str(src))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_QDQ_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_QDQ_OPSET)
        except Exception as exc:
            raise EdgedlError(f"cannot upgrade {src.name} from opset {opset} to {MIN_QDQ_OPSET}: {exc}") from None
    if model.ir_version < MIN_IR_VERSION:
        # The converter keeps the old IR version; under IR < 4 every weight is also a graph input,
        # which ORT's pre-processing leaves dangling when it folds the weight away, and which
        # calibration would then have to feed. From IR 4 on, weights are initializers only.
        weights = {i.name for i in model.graph.initializer}
        kept = [v for v in model.graph.input if v.name not in weights]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        model.ir_version = MIN_IR_VERSION
    onnx.save(model, str(dst))
    try:
        _ort_quant().quant_pre_process(str(dst), str(dst), skip_symbolic_shape=True)
    except Exception:
        pass  # pre-processing is an optimisation; quantization works without it
    model = onnx.load(str(dst))
    unnamed = [n for n in model.graph.node if not n.name]
    if unnamed:  # nodes are excluded from quantization by name: an unnamed one cannot be kept in float alone
        taken = {n.name for n in model.graph.node}
        for i, node in enumerate(model.graph.node):
            if not node.name:
                name = f"{node.op_type}_{i}"
                while name in taken:
                    name += "_"
                node.name = name
                taken.add(name)
        onnx.save(model, str(dst))


def quantizable_nodes(path: Path) -> list[tuple[str, str]]:
    """(name, op type) of every node static QDQ quantization can touch, in graph order.

    That is ORT's own default set (its QLinear and QDQ registries): a Concat or an Add gets
    Q/DQ pairs as much as a Conv, so any of them can be the layer that costs the accuracy.
    """
    import onnx

    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ops = set(QDQRegistry) | set(QLinearOpsRegistry)
    model = onnx.load(str(path), load_external_data=False)
    return [(n.name, n.op_type) for n in model.graph.node if n.op_type in ops]


LAYOUT_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"}


class OnnxBackend(Backend):
    """ONNX Runtime's static QDQ over one prepared file (:func:`prepare`), calibrated on ``feeds``
    (one dict per sample); ``target`` ``tensorrt`` tries TensorRT's symmetric Q/DQ scheme, ``cpu``
    the CPU candidates. One calibration cache serves every attempt: ranges depend on the model, the
    data and the method, not on the scheme."""

    format = "onnx"
    suffix = ".onnx"

    def __init__(self, prepared: Path, feeds: list[dict], target: str = "cpu", method: str = "minmax",
                 cache: Path | None = None):
        self.path, self.feeds, self.target, self.method, self.cache = prepared, feeds, target, method, cache
        self._nodes: list[tuple[str, str]] | None = None

    def schemes(self) -> list[str]:
        return ["tensorrt"] if self.target == "tensorrt" else list(cpu_candidates(self.path))

    def quantize(self, scheme, dst, exclude=(), only=None) -> None:
        quantize_static(self.path, dst, self.feeds, SCHEMES[scheme], self.method, exclude, only, self.cache)

    def quantizable_nodes(self) -> list[tuple[str, str]]:
        if self._nodes is None:
            self._nodes = quantizable_nodes(self.path)
        return self._nodes

    def graph(self):
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        kind = {"Concat": "concat", **{op: "layout" for op in LAYOUT_OPS}}
        nodes = [Node(n.name, n.op_type, kind.get(n.op_type, n.op_type), tuple(n.input), tuple(n.output))
                 for n in graph.node]
        return nodes, [o.name for o in graph.output]

    def peaks(self, tensors: list[str], samples: int = 16):
        """The tensors read as extra outputs of one probe model, in one run per sample (ORT refusing
        the probe, a Concat of integer shapes among them: the outputs alone)."""
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(self.path), load_external_data=False)
        outputs = [o.name for o in model.graph.output]
        for name in tensors:
            if name not in outputs:
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        probe = self.path.with_name(self.path.stem + ".scales.onnx")
        onnx.save(model, str(probe))
        try:
            session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            runs = [session.run(names, feed) for feed in self.feeds[:samples]]
        except Exception:
            session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            runs = [session.run(names, feed) for feed in self.feeds[:samples]]
        finally:
            probe.unlink(missing_ok=True)
        return peaks_and_outputs(names, runs, outputs)

    def slow_in_int8(self) -> dict[str, str]:
        return {n: "grouped convolution" for n in grouped_conv_nodes(self.path)}

    def runtime(self, scheme: str) -> str | None:
        return "tensorrt" if scheme == "tensorrt" else None


def grouped_conv_nodes(path: Path) -> list[str]:
    """Names of grouped (e.g. depthwise) convolutions: INT8 kernels for them are often slow."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type == "Conv"
            and any(a.name == "group" and a.i > 1 for a in n.attribute)]


class _Reader:
    """Calibration feed: one feed (a dict keyed by input name) per call."""

    def __init__(self, feeds: list[dict]):
        self.feeds, self.index = feeds, 0

    def get_next(self):
        if self.index >= len(self.feeds):
            return None
        item = self.feeds[self.index]
        self.index += 1
        return item

    def rewind(self):
        self.index = 0


def quantize_static(
    src: Path,
    dst: Path,
    calibration: list[dict],
    scheme: Scheme,
    method: str = "minmax",
    exclude: Iterable[str] = (),
    only: Iterable[str] | None = None,
    cache: Path | None = None,
) -> None:
    """Static INT8 in QDQ format, calibrated on ``calibration`` feeds (one dict per sample).

    Args:
        exclude: node names left in float.
        only: quantize just these nodes (sensitivity analysis).
        cache: a calibration cache file; the first call writes it, later calls reuse the ranges.
            The ranges depend on the model, data and method, not on the scheme, so one cache
            serves every scheme.
    """
    q = _ort_quant()
    reader_cls = type("CalibrationReader", (_Reader, q.CalibrationDataReader), {})
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    act = q.QuantType.QInt8 if scheme.activations == "int8" else q.QuantType.QUInt8
    # No CalibMaxIntermediateOutputs: in ONNX Runtime 1.31 a full chunk is cleared without its ranges
    # being merged, so only the last partial chunk would count (and a count divisible by the chunk
    # fails with "No data is collected"). The calibrator keeps two scalars per tensor and sample, so
    # all samples fit in memory at any input size.
    extra = {"ActivationSymmetric": scheme.symmetric_activations, "WeightSymmetric": True,
             "QuantizeBias": scheme.quantize_bias}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    try:
        # The entropy and percentile calibrators print their progress on stdout: keep the CLI's
        # output (and --quiet) to edgedl's own lines, as the exporter's are.
        with contextlib.redirect_stdout(io.StringIO()), _quiet_axis_warnings():
            q.quantize_static(
                str(src), str(dst), reader_cls(calibration), quant_format=q.QuantFormat.QDQ,
                per_channel=scheme.per_channel, reduce_range=scheme.reduce_range, activation_type=act,
                weight_type=q.QuantType.QInt8, nodes_to_exclude=list(exclude),
                nodes_to_quantize=list(only) if only is not None else None,
                calibrate_method=methods[method], extra_options=extra,
                op_types_to_quantize=list(scheme.op_types) if scheme.op_types else None,
                calibration_cache_path=str(cache) if cache else None,
            )
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EdgedlError(f"ONNX Runtime could not quantize {src.name}: {first}") from None
    drop_unused_domains(dst)


class _AxisNote(logging.Filter):
    """ONNX Runtime logs, on the root logger and once per calibration pass, that a 1-D weight (a
    LayerNorm's scale) has no channel axis for per-channel quantization; it quantizes it per tensor,
    as it should, and the note is noise on edgedl's screen."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()  # and its advice to pre-process, which edgedl's prepare() does for static INT8
        return "is out-of-range for weight" not in message and "consider to run pre-processing" not in message


@contextlib.contextmanager
def _quiet_axis_warnings():
    note = _AxisNote()
    logging.getLogger().addFilter(note)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(note)


def drop_unused_domains(path: Path) -> None:
    """Keep only the opset domains a node uses: ONNX Runtime's pre-processing lists eight more
    (com.microsoft, ai.onnx.training, ...) that `inspect` then shows and other runtimes must accept."""
    import onnx

    model = onnx.load(str(path))
    used = {n.domain for n in model.graph.node} | {""}
    for function in model.functions:
        used |= {n.domain for n in function.node} | {function.domain}
    keep = [o for o in model.opset_import if (o.domain if o.domain != "ai.onnx" else "") in used]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)
        onnx.save(model, str(path))


def quantize_dynamic(src: Path, dst: Path) -> None:
    """Dynamic INT8: weights quantized ahead, activations at run time (Linear/LSTM/GRU-heavy models)."""
    import onnx

    q = _ort_quant()
    model = onnx.load(str(src))
    # torch's exporter lists weights in value_info; once the quantizer rewrites those weights the
    # stale entries contradict shape inference, so let it infer them afresh.
    del model.graph.value_info[:]
    with _quiet_axis_warnings():
        q.quantize_dynamic(model, str(dst), weight_type=q.QuantType.QInt8, op_types_to_quantize=DYNAMIC_OPS)
    drop_unused_domains(dst)


def convert_fp16(src: Path, dst: Path) -> None:
    """FP16 weights and compute, float32 inputs and outputs kept for the caller."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from edgedl.formats.onnx.graph import toposort

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    toposort(model.graph)  # the converter appends its input Casts after the nodes that read them
    del model.graph.value_info[:]  # and leaves float32 types on tensors that are now float16
    onnx.save(model, str(dst))

