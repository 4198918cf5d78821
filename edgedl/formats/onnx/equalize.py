"""Channel equalization before INT8: a few channels a hundred times larger than the rest (outlier
channels) take one INT8 range per tensor for themselves and leave the other channels a handful of
levels. Where the outliers sit on a stream of linear ops, the scale can move from the activations
into the weights with the function unchanged: SmoothQuant's migration (Xiao et al., 2023) applied
to convolution streams, as cross-layer equalization (Nagel et al., 2019) does for pairs of layers.

A stream is a set of tensors joined by Add nodes (a residual stream), or one tensor, written only by
convolutions and read only by convolutions (one group, or one group per channel), each weight used
by that one node: dividing channel c of every writer's weights and bias by s_c and multiplying every
reader's input channel c by s_c leaves the model's outputs as they were (every op on the stream is
linear). A stream read by anything else (a MatMul, which works on the last axis, a pooling, an
activation) is left alone. ONNX Runtime's quantization has
no such pass for convolution networks (its SmoothQuant option covers transformer MatMuls, through
Intel Neural Compressor); NNCF's ONNX backend has none either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgedl.quantization.rules import ALPHA, OUTLIER, outlier_scales


@dataclass
class Stream:
    tensors: set[str]
    writers: list = field(default_factory=list)  # Conv nodes whose output is on the stream
    readers: list = field(default_factory=list)  # (node, how): "conv" (one group) or "depthwise"


def streams(model) -> list[Stream]:
    """The streams of a graph that can be equalized (see the module's doc)."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    parent: dict[str, str] = {}

    def find(t):
        while parent.setdefault(t, t) != t:
            t = parent[t]
        return t

    adds = [n for n in graph.node if n.op_type == "Add" and all(i and i not in inits for i in n.input)]
    for add in adds:
        for name in [*add.input, add.output[0]]:
            parent[find(name)] = find(add.output[0])
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    groups: dict[str, set[str]] = {}
    for node in graph.node:  # every Conv output is a stream of its own unless an Add joins it to others
        if node.op_type == "Conv":
            groups.setdefault(find(node.output[0]), set()).add(node.output[0])
    for name in parent:
        groups.setdefault(find(name), set()).add(name)
    outputs = {o.name for o in graph.output}
    found = []
    for tensors in groups.values():
        stream = Stream(tensors)
        joins = {id(a) for a in adds if a.output[0] in tensors}
        ok = not (tensors & outputs)
        for t in tensors:
            writer = producers.get(t)
            if writer is None or (id(writer) not in joins and not _writer(writer, inits)):
                ok = False
            elif id(writer) not in joins:
                stream.writers.append(writer)
            for reader in consumers.get(t, []):
                if id(reader) in joins:
                    continue
                how = _reader(reader, t, inits)
                if how is None:
                    ok = False
                else:
                    stream.readers.append((reader, how))
        if ok and stream.writers and stream.readers:
            found.append(stream)
    return found


def _attr(node, name, default):
    return next((a.i for a in node.attribute if a.name == name), default)


def _writer(node, inits) -> bool:
    return node.op_type == "Conv" and len(node.input) >= 2 and node.input[1] in inits \
        and all(i in inits for i in node.input[2:] if i)


def _reader(node, tensor, inits) -> str | None:
    if node.op_type == "Conv" and node.input[0] == tensor and node.input[1] in inits:
        return "conv" if _attr(node, "group", 1) == 1 else "depthwise"  # group == channels checked on the weight
    return None


def channel_peaks(path: Path, feeds: list[dict], tensors: list[str], samples: int = 32) -> dict[str, np.ndarray]:
    """Each tensor's peak |value| per channel (axis 1) over the first ``samples`` feeds."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    known = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    peaks: dict[str, np.ndarray] = {}
    for feed in feeds[:samples]:
        for name, value in zip(tensors, session.run(tensors, feed)):
            value = np.abs(np.asarray(value, dtype=np.float64))
            if value.ndim < 2:
                continue
            per = value.max(axis=tuple(i for i in range(value.ndim) if i != 1))
            peaks[name] = np.maximum(peaks.get(name, per), per)
    return peaks


def equalize(path: Path, feeds: list[dict], outlier: float = OUTLIER, alpha: float = ALPHA) -> list[dict]:
    """Equalize every stream of ``path`` (in place) whose channels include outliers; returns one record
    per stream changed: its channels, their peak over the median's, the factor moved."""
    import onnx

    model = onnx.load(str(path))
    found = streams(model)
    if not found:
        return []
    peaks = channel_peaks(path, feeds, sorted({t for s in found for t in s.tensors}))
    inits = {i.name: i for i in model.graph.initializer}
    done = []
    for stream in found:
        per = [peaks[t] for t in stream.tensors if t in peaks]
        if not per or len({p.shape for p in per}) != 1 or per[0].size < 4:
            continue
        found_here = outlier_scales(np.max(per, axis=0), outlier, alpha)
        if found_here is None or not _fits(stream, per[0].size, inits, model):
            continue
        scale = found_here.pop("scale")
        for node in stream.writers:
            for i in node.input[1:]:
                if i:
                    _rescale(inits[i], 1 / scale, axis=0)
        for node, how in stream.readers:
            _rescale(inits[node.input[1]], scale, axis=1 if how == "conv" else 0)
        done.append({"tensors": sorted(stream.tensors)[:4], **found_here})
    if done:
        onnx.save(model, str(path))
    return done


def _fits(stream: Stream, channels: int, inits, model) -> bool:
    """Every weight has the stream's channel count where it is scaled (a depthwise reader: one group
    per channel), and no weight or bias is used by another node (tied weights would be scaled twice)."""
    from onnx import numpy_helper

    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    scaled = [i for node in stream.writers for i in node.input[1:] if i] + [n.input[1] for n, _ in stream.readers]
    if any(uses.get(name, 0) != 1 for name in scaled):
        return False
    for node in stream.writers:
        if numpy_helper.to_array(inits[node.input[1]]).shape[0] != channels:
            return False
    for node, how in stream.readers:
        shape = numpy_helper.to_array(inits[node.input[1]]).shape
        axis = 1 if how == "conv" else 0
        if len(shape) <= axis or shape[axis] != channels or (how == "depthwise" and _attr(node, "group", 1) != channels):
            return False
    return True


def _rescale(initializer, factor: np.ndarray, axis: int) -> None:
    from onnx import numpy_helper

    value = numpy_helper.to_array(initializer)
    shape = [1] * value.ndim
    shape[axis] = -1
    initializer.CopyFrom(numpy_helper.from_array((value * factor.reshape(shape)).astype(value.dtype), initializer.name))
