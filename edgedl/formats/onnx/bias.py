"""Bias correction of a QDQ file against its float source (Nagel et al., 2019, "Data-Free Quantization
Through Weight Equalization and Bias Correction", section 4.2; NNCF's FastBiasCorrection does the same
per layer). Rounding a layer's weights to INT8 shifts the mean of each of its output channels: with
W_q = W + dW, E[W_q x] = E[W x] + dW E[x]. The shift is known before any INT8 run: the layer is linear,
so the mean of its output's error is the layer applied with dW to the mean of its float input,
E[conv(x, dW)] = conv(E[x], dW), exactly (padding and strides included). Subtracting that shift's
per-channel mean from the bias puts the channel's mean back where FP32 had it. Each layer is corrected
for its own weights' rounding given its float input, so the corrections do not compound.

ONNX Runtime's quantization has no such pass. Depthwise convolutions with per-tensor weights are where
it matters most: a channel whose weights are a few levels of a range set by another channel loses a
large share of its mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CORRECTED = ("Conv", "ConvTranspose", "Gemm")  # layers with a bias input (MatMul's bias is a separate Add)
SAMPLES = 128  # float passes for the input means: the mean of a layer's input settles well before


def _channel_axis(node) -> int:
    """Conv and ConvTranspose outputs are [N, C, ...]; Gemm's [M, N] carries its channels last."""
    return 1 if node.op_type != "Gemm" else -1


def _attr(node, name: str, default):
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _unique_names(graph) -> set[str]:
    """Node names that name one node of ``graph``: layers are matched across files by name."""
    seen: dict[str, int] = {}
    for node in graph.node:
        seen[node.name] = seen.get(node.name, 0) + 1
    return {name for name, count in seen.items() if name and count == 1}


def _all_reads(graph, counts: dict[str, int]) -> dict[str, int]:
    """How many nodes read each tensor name, in ``graph`` and the If/Loop branches inside it."""
    for node in graph.node:
        for name in node.input:
            counts[name] = counts.get(name, 0) + 1
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _all_reads(sub, counts)
    return counts


def input_means(path: Path, feeds: list[dict], samples: int = SAMPLES) -> dict[str, np.ndarray]:
    """The mean over ``feeds`` (the first ``samples``) of each float input of a Conv, ConvTranspose or
    Gemm with a constant weight and bias in ``path``, position by position (the batch axis averaged,
    kept as 1), keyed by node name."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    named = _unique_names(model.graph)
    nodes = [n for n in model.graph.node if n.op_type in CORRECTED and n.name in named and len(n.input) > 2
             and n.input[1] in inits and n.input[2] in inits and not _attr(n, "transA", 0)
             and _attr(n, "beta", 1.0) != 0]
    if not nodes:
        return {}
    known = {o.name for o in model.graph.output}
    tensors = sorted({n.input[0] for n in nodes})
    for name in tensors:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:
        return {}  # ONNX Runtime refused the probe's extra outputs: no correction rather than no file
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    varying: set[str] = set()  # a tensor whose shape changes from feed to feed has no one mean map
    try:
        for feed in feeds[:samples]:
            for name, value in zip(tensors, session.run(tensors, feed)):
                if name in varying or np.ndim(value) < 1:
                    continue
                mean = np.asarray(value, dtype=np.float32).mean(axis=0, keepdims=True, dtype=np.float32)
                if name in sums and sums[name].shape != mean.shape:
                    varying.add(name)
                    continue
                sums[name] = sums[name] + mean if name in sums else mean
                counts[name] = counts.get(name, 0) + 1
    except Exception:
        return {}
    return {n.name: sums[n.input[0]] / counts[n.input[0]] for n in nodes
            if n.input[0] in sums and n.input[0] not in varying}


def correct_bias(src: Path, dst: Path, means: dict[str, np.ndarray]) -> dict:
    """Correct, in place, the bias of each layer of the QDQ file ``dst`` whose weight it reads through a
    DequantizeLinear of INT8 values and whose float weight, bias and input mean ``src`` and ``means``
    (input_means of ``src``) give. Returns {"layers": corrected, "mean_shift_vs_bias": the mean over them of
    each layer's mean |shift| relative to its bias's mean |value|}."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    if not means:
        return {"layers": 0}
    float_model = onnx.load(str(src))
    float_inits = {i.name: i for i in float_model.graph.initializer}
    float_nodes = {n.name: n for n in float_model.graph.node if n.name in means}
    model = onnx.load(str(dst))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    readers = _all_reads(graph, {})
    unique = _unique_names(graph)

    def dequantized(name: str):
        """(values, DequantizeLinear node) of a constant read through a DequantizeLinear, else None."""
        dq = producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or \
                dq.input[1] not in inits or _attr(dq, "block_size", 0):
            return None
        q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
        if scale.ndim > 1 or scale.size not in (1, *q.shape):
            return None  # blocked or otherwise shaped scales: not a per-tensor or per-channel weight
        zero = (numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64)
                if len(dq.input) > 2 and dq.input[2] in inits else np.zeros_like(scale))
        shape = [1] * q.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[next((a.i for a in dq.attribute if a.name == "axis"), 1)] = -1
        return (q - zero.reshape(shape)) * scale.reshape(shape), dq

    jobs = []  # (node, bias target, float bias)
    probe_nodes, probe_inits, outputs = [], [], []
    for node in graph.node:
        reference = float_nodes.get(node.name)
        if reference is None or node.name not in unique or node.op_type != reference.op_type or len(node.input) < 3:
            continue
        weight = dequantized(node.input[1])
        if weight is None or weight[1].input[0] not in inits or \
                inits[weight[1].input[0]].data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            continue
        float_weight = numpy_helper.to_array(float_inits[reference.input[1]]).astype(np.float64)
        float_bias = numpy_helper.to_array(float_inits[reference.input[2]]).astype(np.float64)
        if weight[0].shape != float_weight.shape or float_bias.ndim > 1 and float_bias.size != float_bias.shape[-1]:
            continue
        bias_name = node.input[2]
        if readers.get(bias_name, 0) != 1:
            continue  # a bias other layers read too: correcting it for one would shift the others
        if bias_name in inits and inits[bias_name].data_type == onnx.TensorProto.FLOAT:
            target = ("float", inits[bias_name])
        else:
            dq = producers.get(bias_name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or \
                    readers.get(dq.input[0], 0) != 1 or inits[dq.input[0]].data_type != onnx.TensorProto.INT32:
                continue
            target = ("int32", dq)
        i = len(jobs)
        jobs.append((node, target, float_bias))
        probe_inits += [numpy_helper.from_array(means[node.name], f"mean{i}"),
                        numpy_helper.from_array((weight[0] - float_weight).astype(np.float32), f"dw{i}")]
        copy = helper.make_node(node.op_type, [f"mean{i}", f"dw{i}"], [f"shift{i}"], name=f"probe{i}",
                                domain=node.domain)
        copy.attribute.extend(a for a in node.attribute if not (node.op_type == "Gemm" and a.name == "beta"))
        probe_nodes.append(copy)
        outputs.append(helper.make_tensor_value_info(f"shift{i}", onnx.TensorProto.FLOAT, None))
    if not jobs:
        return {"layers": 0}
    probe = helper.make_model(helper.make_graph(probe_nodes, "bias_shift", [], outputs, probe_inits),
                              opset_imports=list(model.opset_import))
    probe.ir_version = model.ir_version
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # compute, do not fold away
    options.log_severity_level = 3
    try:
        shifts = ort.InferenceSession(probe.SerializeToString(), options,
                                      providers=["CPUExecutionProvider"]).run(None, {})
    except Exception:
        return {"layers": 0}  # an attribute the one-node probe cannot take: the file stays as quantized
    relative, corrected = [], 0
    for (node, (kind, where), float_bias), shift in zip(jobs, shifts):
        axis = _channel_axis(node) % shift.ndim
        per_channel = shift.astype(np.float64).mean(axis=tuple(a for a in range(shift.ndim) if a != axis))
        if per_channel.size != float_bias.size or not np.all(np.isfinite(per_channel)):
            continue
        per_channel = per_channel.reshape(float_bias.shape) / float(_attr(node, "beta", 1.0))  # Gemm: beta * C
        if kind == "float":
            value = numpy_helper.to_array(where).astype(np.float64) - per_channel
            where.CopyFrom(numpy_helper.from_array(value.astype(np.float32), where.name))
        else:
            q_init = inits[where.input[0]]
            scale = numpy_helper.to_array(inits[where.input[1]]).astype(np.float64).reshape(-1)
            q = numpy_helper.to_array(q_init).astype(np.int64)
            step = np.rint(per_channel.reshape(-1) / np.broadcast_to(scale, per_channel.reshape(-1).shape))
            info = np.iinfo(np.int32)
            value = np.clip(q.reshape(-1) - step.astype(np.int64), info.min, info.max).reshape(q.shape)
            q_init.CopyFrom(numpy_helper.from_array(value.astype(np.int32), q_init.name))
        corrected += 1
        relative.append(float(np.abs(per_channel).mean() / max(np.abs(float_bias).mean(), 1e-12)))
    if corrected:  # written beside and renamed: a failed write leaves the file as ONNX Runtime quantized it
        tmp = dst.with_name(dst.name + ".corrected")
        onnx.save(model, str(tmp))
        tmp.replace(dst)
    return {"layers": corrected, **({"mean_shift_vs_bias": float(np.mean(relative))} if relative else {})}
