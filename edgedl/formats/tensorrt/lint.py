"""Check an ONNX graph against what a TensorRT version's ONNX parser accepts, before any build.

Every finding names the node, its op, the rule (from onnx-tensorrt's operators.md for that version,
or TensorRT's quantization and DLA rules) and what to do. ``error``: the parser or builder would
reject the graph. ``warning``: it builds, but not as the user expects (INT64 values clamped, a
dynamic shape that needs a profile). ``gpu_fallback``: with ``dla``, a node that would leave the DLA.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgedl.formats.onnx import graph as onnx_graph
from edgedl.formats.tensorrt import dla as dla_rules
from edgedl.formats.tensorrt.versions import TrtVersion, resolve

SEVERITIES = ("error", "warning", "gpu_fallback", "info")
# Inputs that must be constant where the table says so: op -> index of the input.
AXES_INPUT = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "Pad": 3, "CumSum": 1, "TopK": 1,
              **{op: 1 for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                                  "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")}}
RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
INT32 = np.iinfo(np.int32)


@dataclass
class Finding:
    severity: str
    rule: str
    message: str
    fix: str
    node: str | None = None
    op: str | None = None

    def line(self) -> str:
        where = f"{self.node} ({self.op}): " if self.node else ""
        return f"{self.severity}: {where}{self.message} [{self.rule}]; {self.fix}"


def _attr(node, name: str, default=None):
    for att in node.attribute:
        if att.name == name:
            if att.type == att.STRING:
                return att.s.decode()
            if att.type == att.INTS:
                return list(att.ints)
            if att.type == att.INT:
                return att.i
            if att.type == att.FLOAT:
                return att.f
    return default


class _Graph:
    """What the checks look up: constants by name, shapes, the producer of each tensor."""

    def __init__(self, model, input_shapes: dict | None, table: dict):
        from onnx import numpy_helper

        self.model = model
        self.table = table  # the TensorRT version's op table
        self.initializers = {i.name: i for i in model.graph.initializer}
        self.constants = dict(self.initializers)
        for node in model.graph.node:
            if node.op_type == "Constant" and node.output:
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = value
        self.value = lambda name: numpy_helper.to_array(self.constants[name]) if name in self.constants else None
        self.shapes = onnx_graph._shapes(model, input_shapes)
        self.inputs = {v.name for v in onnx_graph.graph_inputs(model)}
        self.outputs = {v.name for v in model.graph.output}
        self.producer = {out: node for node in model.graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def is_constant(self, name: str) -> bool:
        return name in self.constants


def lint(path: str | os.PathLike, version: str | None = None, profile=None, dla: bool = False,
         input_shapes: dict | None = None, model=None, precision: str | None = None) -> dict:
    """Lint an ONNX file for TensorRT.

    Args:
        version: a TensorRT version ("10.3", "11"); default: the device profile's, else the latest 10.x.
        profile: a device profile (fixes the default version; DLA checks need one with a DLA).
        dla: also report the nodes that would fall back from the DLA to the GPU.
        input_shapes: fixed input shapes ({name: [1, 3, 224, 224]}): a fixed input needs no profile.
        precision: the precision the engine is built in (default: int8 for a Q/DQ file, else fp16 with
            ``dla``): with ``dla``, decides where layers outside Q/DQ pairs run.

    Returns:
        A dict with ``tensorrt`` (the version and table used), ``findings`` (dicts), ``counts`` per
        severity, and ``passed`` (no errors).
    """
    trt = resolve(version, profile)
    model = model if model is not None else onnx_graph.load_graph(path)
    g = _Graph(model, input_shapes, trt.entry())
    findings: list[Finding] = []
    findings += _opset(model, trt)
    for node in model.graph.node:
        findings += _node(node, g, trt, g.table)
    findings += _inputs(g, trt, input_shapes or {}, dla)
    findings += _int64(g, trt)
    findings += _quantization(g, trt)
    if dla:
        findings += _dla(g, trt, profile, precision or ("int8" if _has_qdq(model) else "fp16"))
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    return {"path": str(path), "tensorrt": trt.as_dict(), "dla": dla, "findings": [asdict(f) for f in findings],
            "counts": counts, "passed": counts["error"] == 0}


def _opset(model, trt: TrtVersion) -> list[Finding]:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    low, high = trt.entry()["opset"]
    if opset is None or low <= opset <= high:
        return []
    fix = (f"re-export with opset {high} or lower (recipe: stages.export_onnx.opset={high})" if opset > high
           else f"upgrade the model to opset {low} or later (onnx.version_converter)")
    return [Finding("error", "opset", f"ONNX opset {opset} is outside TensorRT {trt.version}'s range {low}-{high}", fix)]


def _node(node, g: _Graph, trt: TrtVersion, table: dict) -> list[Finding]:
    op, name = node.op_type, node.name or node.output[0]
    if node.domain not in ("", "ai.onnx"):
        return [Finding("error", "custom_op", f"op from domain '{node.domain}' is not an ONNX standard op",
                        "TensorRT needs a plugin registered under that name; or export without the custom op "
                        "(e.g. ONNX Runtime's fused ops come from its optimizer: export the unoptimized model)",
                        name, op)]
    entry = table["supported"].get(op)
    if entry is None:
        listed = "marked unsupported" if op in table["unsupported"] else "not listed"
        return [Finding("error", "unsupported_op", f"{op} is {listed} in TensorRT {trt.table}'s ONNX operator table",
                        "replace it in the model (or write a TensorRT plugin); see onnx-tensorrt docs/operators.md",
                        name, op)]
    text = entry.get("restrictions", "")
    out: list[Finding] = []
    index = AXES_INPUT.get(op)
    must_be_constant = ("must be an initializer" in text or "must be a constant tensor" in text
                        or "must be a build-time constant" in text)
    if index is not None and must_be_constant and len(node.input) > index and node.input[index] \
            and not g.is_constant(node.input[index]):
        what = "`K`" if op == "TopK" else "`axes`"
        out.append(Finding("error", "constant_input", f"{what} is computed at run time; TensorRT {trt.table}: {text}",
                           "fold it to a constant (onnx-simplifier or polygraphy surgeon sanitize --fold-constants), or "
                           "target a newer TensorRT", name, op))
    if op == "TopK":
        k = g.value(node.input[1]) if len(node.input) > 1 and g.is_constant(node.input[1]) else _attr(node, "k")
        if "less than 3840" in text and k is not None and int(np.max(k)) >= 3840:
            out.append(Finding("error", "topk_k", f"K = {int(np.max(k))}; TensorRT {trt.table} needs K < 3840",
                               "take the top K in two steps, or on the host", name, op))
        if "`sorted` must be 1" in text and _attr(node, "sorted", 1) != 1:
            out.append(Finding("error", "topk_sorted", "sorted=0; TensorRT needs sorted=1", "export with sorted=True",
                               name, op))
    if op in ("MaxPool", "AveragePool", "LpPool"):
        kernel = _attr(node, "kernel_shape", [])
        if "2D or 3D" in text and len(kernel) not in (2, 3):
            out.append(Finding("error", "pool_rank", f"{len(kernel)}-D pooling; TensorRT pools 2-D or 3-D",
                               "reshape to 2-D (N, C, 1, W) around the pool", name, op))
        if "dilations" in text and any(d != 1 for d in _attr(node, "dilations", [])):
            out.append(Finding("error", "pool_dilations", "dilated pooling; TensorRT: `dilations` must be empty or all ones",
                               "use an undilated pool", name, op))
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            out.append(Finding("error", "maxpool_indices", "MaxPool's `Indices` output is used; TensorRT does not produce it",
                               "drop the indices (e.g. no MaxUnpool after it)", name, op))
    if op == "Resize":
        out += _resize(node, name, text, trt)
    if op in ("QuantizeLinear", "DequantizeLinear"):
        out += _qdq(node, name, g, trt)
    return out


def _resize(node, name: str, text: str, trt: TrtVersion) -> list[Finding]:
    out = []
    mode = _attr(node, "mode", "nearest")
    coords = _attr(node, "coordinate_transformation_mode", "half_pixel")
    nearest = _attr(node, "nearest_mode", "round_prefer_floor")
    if mode not in ("nearest", "linear"):
        out.append(Finding("error", "resize_mode", f"resize mode '{mode}'; TensorRT supports nearest and linear",
                           "resize with mode='linear' (bilinear) or 'nearest'", name, "Resize"))
    if coords not in RESIZE_COORDS:
        out.append(Finding("error", "resize_coordinates", f"coordinate transformation '{coords}' is not one TensorRT "
                           f"supports ({', '.join(sorted(RESIZE_COORDS))})", "export with align_corners or half_pixel",
                           name, "Resize"))
    if mode == "nearest" and nearest not in RESIZE_NEAREST:
        out.append(Finding("error", "resize_nearest", f"nearest mode '{nearest}'", "use floor or round_prefer_floor",
                           name, "Resize"))
    if "Antialiasing is not supported" in text and _attr(node, "antialias", 0):
        out.append(Finding("error", "resize_antialias", "antialias=1; TensorRT does not antialias",
                           "resize without antialiasing", name, "Resize"))
    return out


def _qdq(node, name: str, g: _Graph, trt: TrtVersion) -> list[Finding]:
    out = []
    zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    zp = g.value(zp_name) if zp_name else None
    which = "y_zero_point" if node.op_type == "QuantizeLinear" else "x_zero_point"
    if zp is not None and np.any(zp != 0):
        out.append(Finding("error", "qdq_zero_point", f"{which} is not 0 (asymmetric quantization, as ONNX Runtime's "
                           "CPU scheme writes); TensorRT's parser takes Q/DQ with zero point 0 only",
                           "re-quantize for TensorRT: compress with --targets tensorrt (or stages.quantize.scheme="
                           "tensorrt), which writes symmetric INT8", name, node.op_type))
    types = (g.table["supported"].get(node.op_type) or {}).get("types") or []
    x = g.value(node.input[0]) if node.op_type == "DequantizeLinear" and g.is_constant(node.input[0]) else None
    if x is not None and x.dtype.name.upper() not in types and x.dtype != np.uint8:
        out.append(Finding("error", "qdq_type", f"DequantizeLinear of a constant {x.dtype.name} tensor; TensorRT "
                           f"{trt.table} dequantizes {', '.join(types)} only (an INT32 bias is ONNX Runtime's "
                           "QuantizeBias)", "keep biases in float: quantize with scheme tensorrt", name, node.op_type))
    if zp is not None and zp.dtype == np.uint8:
        out.append(Finding("error", "qdq_uint8", "UINT8 Q/DQ inside the network; TensorRT takes UINT8 only as a "
                           "network input or output, and quantizes to INT8", "re-quantize with signed INT8 activations "
                           "(scheme tensorrt)", name, node.op_type))
    return out + _qdq_scale(node, name, g, trt)


def _qdq_scale(node, name: str, g: _Graph, trt: TrtVersion) -> list[Finding]:
    """The scale rules of TensorRT's Q/DQ layers (NvInfer.h, IQuantizeLayer/IDequantizeLayer, and the
    parser's QuantDequantLinearHelper): a build-time constant before 10.13, all positive, float32 on 8.x
    (which reads the bytes as float32), and per-axis only for weights, along the output-channel axis."""
    op, scale_name = node.op_type, node.input[1] if len(node.input) > 1 else ""
    if not g.is_constant(scale_name):
        if trt.key < (10, 13):
            return [Finding("error", "qdq_scale_constant", f"the scale is computed at run time; TensorRT {trt.version} "
                            "needs a build-time constant scale", "fold it to a constant (polygraphy surgeon sanitize "
                            "--fold-constants) or quantize with static scales", name, op)]
        return []
    scale = g.value(scale_name)
    out = []
    if np.any(~(scale > 0)):
        out.append(Finding("error", "qdq_scale_positive", f"a scale is {float(np.min(scale)):g}; TensorRT's parser "
                           "needs every scale positive (\"Scale coefficients must all be positive\")",
                           "recalibrate: a zero scale comes from a tensor that was constant in calibration", name, op))
    if trt.major < 9 and scale.dtype != np.float32:
        out.append(Finding("error", "qdq_scale_type", f"a {scale.dtype.name} scale; TensorRT {trt.version}'s parser "
                           "reads scales as float32", "write float32 scales (quantize the float32 model)", name, op))
    if scale.size <= 1:
        return out
    if not _rooted_at_constant(node.input[0], g):
        return out + [Finding("error", "qdq_per_axis_activation", f"per-axis quantization ({scale.size} scales) of an "
                              "activation; TensorRT quantizes activations per tensor, weights per channel",
                              "quantize activations per tensor (scheme tensorrt does)", name, op)]
    axis = _attr(node, "axis")
    if axis is None and trt.major < 10:
        out.append(Finding("warning", "qdq_axis_implicit", f"per-axis scales with no `axis` attribute: ONNX means axis "
                           f"1, TensorRT {trt.version}'s parser reads axis 0", "write the axis explicitly", name, op))
    want = _output_channel_axis(node, g)
    got = 1 if axis is None else axis
    if want is not None and got not in want:
        out.append(Finding("error", "qdq_per_axis_axis", f"weights quantized along axis {got}; TensorRT quantizes "
                           f"weights per output channel (axis {want[0]} here)", "quantize the weights along their "
                           "output-channel axis (scheme tensorrt does)", name, op))
    return out


def _rooted_at_constant(tensor: str, g: _Graph) -> bool:
    """A weight: a constant, or a Q/DQ chain that starts at one."""
    seen = 0
    while not g.is_constant(tensor) and seen < 4:
        producer = g.producer.get(tensor)
        if producer is None or producer.op_type not in ("QuantizeLinear", "DequantizeLinear", "Identity"):
            return False
        tensor, seen = producer.input[0], seen + 1
    return g.is_constant(tensor)


def _output_channel_axis(node, g: _Graph) -> tuple[int, ...] | None:
    """The output-channel axis of the weight a Q/DQ feeds (None: not a layer whose axis is known)."""
    for consumer in g.consumers.get(node.output[0], []):
        if consumer.op_type in ("QuantizeLinear", "DequantizeLinear"):
            return _output_channel_axis(consumer, g)
        index = list(consumer.input).index(node.output[0])
        if consumer.op_type == "Conv" and index == 1:
            return (0,)
        if consumer.op_type == "Gemm" and index == 1:
            return (0,) if _attr(consumer, "transB", 0) else (1,)
        if consumer.op_type == "MatMul" and index == 1:
            rank = len(g.shapes.get(node.output[0]) or [0, 0])
            return (rank - 1, -1)
    return None  # ConvTranspose's axis is not settled in NVIDIA's documents: not judged


def _inputs(g: _Graph, trt: TrtVersion, input_shapes: dict, dla: bool) -> list[Finding]:
    out = []
    for value in onnx_graph.graph_inputs(g.model):
        dims = onnx_graph._dims(value.type)
        if value.name in input_shapes or all(isinstance(d, int) for d in dims):
            continue
        dynamic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
        if dla:
            out.append(Finding("error", "dla_dynamic_shape", f"input '{value.name}' has dynamic axes {dynamic}; "
                               "DLA needs static shapes (min = opt = max)", "build with --batch N,N,N or fix the "
                               "shape (--input-shape)"))
        else:
            out.append(Finding("warning", "dynamic_shape", f"input '{value.name}' has dynamic axes {dynamic}: the engine "
                               "needs an optimization profile (min, opt, max)", "give --batch MIN,OPT,MAX to "
                               "build-engine (edgedl's build plan writes one)"))
    return out


def _int64(g: _Graph, trt: TrtVersion) -> list[Finding]:
    """TensorRT before 9.0 casts INT64 to INT32, clamping what does not fit."""
    if trt.major >= 9:
        return []
    out = []
    for name, init in g.initializers.items():
        if init.data_type != 7:  # TensorProto.INT64
            continue
        values = g.value(name)
        if values.size and (values.min() < INT32.min or values.max() > INT32.max):
            big = [int(v) for v in values.flat if v < INT32.min or v > INT32.max][:3]
            out.append(Finding("warning", "int64_clamped", f"INT64 initializer '{name}' holds {big}, outside INT32; "
                               f"TensorRT {trt.table} casts INT64 to INT32 and clamps it", "use INT32-range values "
                               "(e.g. Slice ends of INT64_MAX are usually harmless: they mean 'to the end')"))
    return out


def _quantization(g: _Graph, trt: TrtVersion) -> list[Finding]:
    quantized = _has_qdq(g.model)
    integer_ops = [n for n in g.model.graph.node if n.op_type in ("QLinearConv", "QLinearMatMul", "ConvInteger",
                                                                   "MatMulInteger", "DynamicQuantizeLinear")]
    out = []
    if integer_ops:
        out.append(Finding("info", "quantized_format", "the model uses ONNX Runtime's operator-oriented integer ops "
                           "(QOperator or dynamic INT8); TensorRT reads INT8 only as Q/DQ", "quantize with static Q/DQ "
                           "for TensorRT (compress --targets tensorrt --quantize int8)"))
    if quantized and trt.major < 9:
        out.append(Finding("info", "explicit_quantization", f"Q/DQ nodes: TensorRT {trt.table} builds this with the "
                           "INT8 flag set (explicit quantization; no calibrator is used)", "build-engine sets it"))
    return out


def _has_qdq(model) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _dla(g: _Graph, trt: TrtVersion, profile, precision: str) -> list[Finding]:
    out = []
    accelerators = [a for a in (getattr(profile, "accelerators", None) or []) if a.kind == "dla"]
    if profile is not None and not accelerators:
        out.append(Finding("error", "no_dla", f"{profile.title} has no DLA", "drop --dla (the GPU runs every layer)"))
        return out
    missing = trt.dla_missing(profile)
    if missing:
        return [Finding("error", "dla_unavailable", missing, "build for the GPU, or with a TensorRT that has DLA (JetPack "
                        "6's 10.3, or 11.4.1 on AGX Orin under JetPack 7.2.2)")]
    quantized = precision == "int8" and _has_qdq(g.model)
    if quantized and trt.major < 10:
        out.append(Finding("warning", "dla_qdq_8x", f"Q/DQ (explicit) INT8 on the DLA of TensorRT {trt.version}: NVIDIA "
                           "stated in 2022 that DLA did not take Q/DQ yet (NVIDIA/TensorRT#2222), so its layers may "
                           "run on the GPU", "check the placement on the device (trtexec --verbose); NVIDIA's "
                           "qdq-translator turns the Q/DQ file into a calibration cache for an implicit INT8 DLA build"))
    # TensorRT folds nodes whose inputs are all constants (weights a ConstantOfShape makes, shapes of
    # static tensors): they become weights, not layers on either device.
    constant = set(g.constants)
    fp_outside: list[str] = []
    for node in g.model.graph.node:
        if all(not name or name in constant for name in node.input):
            constant.update(node.output)
            continue
        problems = dla_rules.node_problems(node, {**g.shapes, "__constants__": constant})
        if problems:
            out.append(Finding("gpu_fallback", "dla_layer", "; ".join(problems), "the node runs on the GPU (allowed with "
                               "GPU fallback; each DLA-GPU switch costs a copy); restructure it to stay on the DLA",
                               node.name or node.output[0], node.op_type))
        elif problems is not None and quantized and not _in_int8(node, g):
            fp_outside.append(node.name or node.output[0])
            if trt.strongly_typed_only:
                out.append(Finding("gpu_fallback", "dla_fp32_outside_qdq", "outside a Q/DQ pair it is FP32, which the "
                                   "DLA does not run (FP16 and INT8 only)", "type it float16 in the ONNX (TensorRT "
                                   f"{trt.major} has no FP16 flag; NVIDIA's modelopt.onnx.autocast --target_dla does it)",
                                   node.name or node.output[0], node.op_type))
    if fp_outside and not trt.strongly_typed_only:
        shown = ", ".join(fp_outside[:5]) + (f" and {len(fp_outside) - 5} more" if len(fp_outside) > 5 else "")
        out.append(Finding("info", "dla_fp16_outside_qdq", f"{len(fp_outside)} layer(s) outside Q/DQ pairs ({shown}) "
                           "would be FP32, which the DLA does not run", "the build sets FP16 as well as INT8 (trtexec "
                           "--int8 --fp16, weakly typed), so they run FP16 on the DLA instead of falling back"))
    return out


def _in_int8(node, g: _Graph) -> bool:
    """Whether TensorRT runs ``node`` in INT8: it reads a dequantized tensor, or its result is quantized
    (an activation or residual add fuses into the quantized layer before it)."""
    reads = any(getattr(g.producer.get(name), "op_type", None) == "DequantizeLinear" for name in node.input)
    feeds = any(c.op_type == "QuantizeLinear" for out in node.output for c in g.consumers.get(out, []))
    return reads or feeds


def summarize(path: str | os.PathLike, spec: str, profile=None, dla: bool = False,
              input_shapes: dict | None = None) -> dict:
    """``inspect --target tensorrt[:VERSION]``: the lint of ``path`` for ``spec``."""
    version = spec.partition(":")[2] or None
    return lint(Path(path), version, profile=profile, dla=dla, input_shapes=input_shapes)
