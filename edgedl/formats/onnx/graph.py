"""Static analysis of an ONNX file: I/O, opsets, op histogram, parameters, MACs, size on disk.

The only module besides the ONNX stages that calls the ``onnx`` package for analysis.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

from edgedl.errors import MissingDependencyError, UsageError

# op type -> index of its weight input; MACs = prod(output shape) * prod(weight.shape[1:])
_CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
# matrix products: MACs = prod(output shape) * K, K being the inner dimension of input A
_MATMUL = {"MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"}


COUNTED_ON_ONNX = "params and MACs are counted on ONNX graphs; see the ONNX export of the same model"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError("onnx", "onnx", "Inspecting ONNX files") from None
    return onnx


def load_graph(path: str | os.PathLike):
    """Load an ONNX model without its external weights (metadata is enough for analysis).

    Refuses a file whose external data would be read from outside its folder, and one whose text
    fields are not UTF-8 (protobuf decodes them lazily, so a bit flip surfaced later as an
    internal error): every name is read once here.
    """
    onnx = _onnx()
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise UsageError(f"{path} is not a readable ONNX file: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    try:
        _touch_names(model)
    except UnicodeDecodeError:
        raise UsageError(f"{path} is corrupt: a name or text field in it is not UTF-8") from None
    check_external_data(model, path)
    return model


def _touch_names(model) -> None:
    graphs = [model.graph]
    for field in ("producer_name", "domain", "doc_string"):
        getattr(model, field)
    for opset in model.opset_import:
        opset.domain
    for entry in model.metadata_props:
        entry.key, entry.value
    while graphs:
        graph = graphs.pop()
        graph.name
        for value in (*graph.input, *graph.output, *graph.value_info):
            value.name
            for dim in value.type.tensor_type.shape.dim:
                dim.dim_param
        for init in graph.initializer:
            init.name
            for entry in init.external_data:
                entry.key, entry.value
        for node in graph.node:
            node.op_type, node.domain, node.name, list(node.input), list(node.output)
            for attr in node.attribute:
                attr.name
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)


def check_external_data(model, path: Path) -> None:
    """Refuse external data that lies outside the model's folder (``..``, an absolute path, or a
    symlink that leads out), before onnx or onnxruntime reads any of it."""
    folder = path.resolve().parent
    for tensor in external_tensors(model):
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        parts = Path(location).parts
        target = (folder / location).resolve()
        if (not location or Path(location).is_absolute() or ".." in parts or "\\" in location
                or not target.is_relative_to(folder)):
            link = "" if not (folder / location).is_symlink() else f", a symlink to {target}"
            raise UsageError(f"{path.name}: the external data of tensor '{tensor.name}' is '{location}'{link}, outside "
                             f"the model's folder {folder}; edgedl reads external data only from inside that folder "
                             "(move the data file beside the model and fix its location)")


def external_tensors(model) -> list:
    """Every tensor whose data lives in an external file: initializers, sparse initializers and
    attribute tensors of the graph, of every subgraph and of the model's functions (the same set
    onnx's loader reads)."""
    onnx = _onnx()
    tensors, graphs = [], [model.graph]
    nodes = [n for f in model.functions for n in f.node]
    while graphs:
        graph = graphs.pop()
        tensors += list(graph.initializer)
        for sparse in graph.sparse_initializer:
            tensors += [sparse.values, sparse.indices]
        nodes += list(graph.node)
        while nodes:
            node = nodes.pop()
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
                tensors += list(attr.tensors)
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs += list(attr.graphs)
    return [t for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]


def external_files(model, base: Path) -> list[Path]:
    """Files holding the model's external tensors, relative to the model's folder."""
    files = []
    for tensor in external_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location" and (base / entry.value) not in files:
                files.append(base / entry.value)
    return files


def total_size(path: str | os.PathLike, model=None) -> int:
    """Bytes on disk of the model file and its external data files."""
    path = Path(path)
    model = model if model is not None else load_graph(path)
    return path.stat().st_size + sum(f.stat().st_size for f in external_files(model, path.parent) if f.exists())


def graph_inputs(model) -> list:
    """The model's real inputs (ValueInfos), without initializers listed as inputs by old exporters."""
    initializers = {i.name for i in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def _dims(type_proto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in type_proto.tensor_type.shape.dim]


def _dtype(elem_type: int) -> str:
    onnx = _onnx()
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def input_infos(model, shapes: dict[str, list[int]] | None = None) -> list:
    """The model's inputs as runtime TensorInfos, with ``shapes`` (from --input-shape) applied."""
    from edgedl.runtime.base import TensorInfo

    shapes = shapes or {}
    return [TensorInfo(v.name, tuple(shapes.get(v.name) or _dims(v.type)), _dtype(v.type.tensor_type.elem_type))
            for v in graph_inputs(model)]


def unknown_input_dims(model, shapes: dict[str, list[int]] | None = None) -> dict[str, list[int]]:
    """Input axes past the batch whose size neither the model nor ``shapes`` fixes."""
    shapes = shapes or {}
    out = {}
    for value in graph_inputs(model):
        if value.name in shapes:
            continue
        axes = [i for i, d in enumerate(_dims(value.type)) if i > 0 and not isinstance(d, int)]
        if axes:
            out[value.name] = axes
    return out


def toposort(graph) -> None:
    """Order a graph's nodes so that each comes after the nodes producing its inputs, in place
    (Kahn's algorithm, linear in nodes and edges; a graph already in order is left as it is).

    The ONNX spec requires the order and shape inference relies on it; ONNX Runtime's fp16
    converter appends its input Casts after the nodes that read them."""
    from collections import deque

    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    waiting = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in {x for x in node.input if x in producer and producer[x] != i}:
            waiting[i] += 1
            readers.setdefault(producer[name], []).append(i)
    ready = deque(i for i, count in enumerate(waiting) if count == 0)
    order = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for j in readers.get(i, ()):
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) < len(nodes):  # a cycle: leave the rest where it was
        order += [i for i in range(len(nodes)) if waiting[i] > 0]
    if order == list(range(len(nodes))):
        return
    copies = [type(nodes[i])() for i in order]
    for copy, i in zip(copies, order):
        copy.CopyFrom(nodes[i])
    del graph.node[:]
    graph.node.extend(copies)


def _shapes(model, given: dict[str, list[int]] | None = None, symbolic: bool = False) -> dict[str, list]:
    """Inferred shapes of every tensor for one sample: the batch axis set to 1, ``given`` input
    shapes applied; other dynamic dimensions stay unknown (their nodes' MACs are not counted).
    ``symbolic``: ONNX Runtime's symbolic shape inference, which also follows shapes computed in the
    graph (Shape, Gather, Concat into a Reshape: converters' attention blocks), where ONNX's stops."""
    onnx = _onnx()
    given = given or {}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    # Converters (fp16, quantization) leave value_info whose types no longer match the graph,
    # which makes shape inference fail: infer every intermediate shape afresh.
    del copy.graph.value_info[:]
    toposort(copy.graph)
    for value in graph_inputs(copy):
        shape = given.get(value.name)
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            size = shape[axis] if shape is not None else (1 if axis == 0 and not dim.HasField("dim_value") else None)
            if size is not None:
                dim.Clear()
                dim.dim_value = 1 if axis == 0 else int(size)
    inferred = copy
    try:
        inferred = _symbolic(copy) if symbolic else onnx.shape_inference.infer_shapes(copy)
    except Exception:
        pass  # MACs of unshaped nodes stay uncounted; the caller reports them
    shapes = {i.name: list(i.dims) for i in inferred.graph.initializer}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shapes[value.name] = _dims(value.type)
    return shapes


SYMBOLIC_MAX_NODES = 20000  # past this, a graph's unshaped MAC nodes stay uncounted rather than slow every count


def _symbolic(model):
    """ONNX Runtime's symbolic shape inference, driven as its ``infer_shapes`` does but keeping what it
    could infer: where some node stays unshaped (a custom op), ``infer_shapes`` saves the model and a
    copy of its weights into the working folder and raises."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference, get_opset

    if len(model.graph.node) > SYMBOLIC_MAX_NODES or (get_opset(model) or 0) < 7:
        return model
    inference = SymbolicShapeInference(2**31 - 1, True, False, 0)
    inference._preprocess(model)
    try:
        for _ in range(128):  # each auto-merge pass may ask for another: ONNX Runtime's own tools stop at 128
            if not inference.run_:
                break
            inference._infer_impl()
    except Exception:
        pass  # what the passes before inferred still counts
    inference._update_output_from_vi()
    return inference.out_mp_


def count_macs(model, given: dict[str, list[int]] | None = None) -> tuple[int | None, list[str]]:
    """Multiply-accumulates for one sample of Conv/Gemm/MatMul nodes (and their integer and fp16
    forms); also unshaped node names. None when an input dimension past the batch is unknown."""
    if unknown_input_dims(model, given):
        return None, []
    total, unknown = _count_macs(model, _shapes(model, given))
    if unknown:  # shapes the graph computes itself: ONNX Runtime's inference follows them (a second or two)
        again = _count_macs(model, _shapes(model, given, symbolic=True))
        if len(again[1]) < len(unknown):
            total, unknown = again
    if unknown and not total:
        return None, unknown  # nothing could be shaped (symbolic shapes shape inference cannot resolve)
    return total, unknown


def _count_macs(model, shapes: dict[str, list]) -> tuple[int, list[str]]:
    total, unknown = 0, []

    def known(name):
        shape = shapes.get(name)
        return shape if shape and all(isinstance(d, int) and d > 0 for d in shape) else None

    for node in model.graph.node:
        if node.op_type in _CONV_WEIGHT:
            out, weight = known(node.output[0]), known(node.input[_CONV_WEIGHT[node.op_type]])
            if out and weight:
                total += math.prod(out) * math.prod(weight[1:])
            else:
                unknown.append(node.name or node.op_type)
        elif node.op_type in _MATMUL:
            out, a = known(node.output[0]), known(node.input[0])
            if out and a:
                trans_a = any(att.name == "transA" and att.i for att in node.attribute)
                k = a[-2] if trans_a else a[-1]
                total += math.prod(out) * k
            else:
                unknown.append(node.name or node.op_type)
    return total, unknown


def size_metrics(path) -> dict[str, int | None]:
    """An ONNX file's parameters and MACs, as the manifest records them."""
    model = load_graph(path)
    return {"params": count_params(model), "macs": count_macs(model)[0]}


def count_params(model) -> int:
    """Elements of weight-typed initializers: float and 8-bit (quantized) tensors.

    64/32-bit integer initializers are shapes and indices, not parameters.
    """
    onnx = _onnx()
    shape_types = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.BOOL}
    return sum(math.prod(i.dims) for i in model.graph.initializer if i.data_type not in shape_types)


def summarize(path: str | os.PathLike, target: str | None = None,
              input_shapes: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """Everything ``edgedl inspect`` shows for an ONNX file."""
    if target:
        from edgedl.errors import UsageError

        raise UsageError(f"--target {target} applies to .tflite files")
    path = Path(path)
    probe(path)  # inspect reads files from anywhere: one that crashes the parser must not take this process
    model = load_graph(path)
    if input_shapes:
        from edgedl.formats.onnx.export import check_input_shapes

        check_input_shapes(model, input_shapes)
    tensors = lambda values: [  # noqa: E731
        {"name": v.name, "shape": _dims(v.type), "dtype": _dtype(v.type.tensor_type.elem_type)} for v in values
    ]
    macs, unknown = count_macs(model, input_shapes)
    notes = {}
    missing = unknown_input_dims(model, input_shapes)
    if missing:
        dims = "; ".join(f"'{name}' axes {axes}" for name, axes in missing.items())
        notes["macs"] = (f"unknown: input dimensions past the batch are dynamic ({dims}); pass --input-shape "
                         "NAME=1x3x224x224 to count them")
    return {
        "path": str(path),
        "format": "onnx",
        "inputs": tensors(graph_inputs(model)),
        "outputs": tensors(model.graph.output),
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "ops": dict(Counter(n.op_type for n in model.graph.node).most_common()),
        "nodes": len(model.graph.node),
        "params": count_params(model),
        "macs": macs,
        "macs_unshaped_nodes": unknown,
        "notes": notes,
        "size_bytes": total_size(path, model),
        "external_data": [str(f.name) for f in external_files(model, path.parent)],
    }


_PROBE = ("import sys\nfrom edgedl.errors import EdgedlError\nfrom edgedl.formats.onnx.graph import load_graph\n"
          "try:\n    load_graph(sys.argv[1])\nexcept EdgedlError as exc:\n    print(exc, file=sys.stderr)\n"
          "    sys.exit(2)\n")


def probe(path: str | os.PathLike, timeout: float = 120) -> None:
    """Parse a file from elsewhere in a child process first: protobuf's native parser may crash on
    a corrupt file, and then only the child dies. Files this process (or its parent) wrote or
    probed before are not parsed twice (:mod:`edgedl.runtime.probed`)."""
    from edgedl.runtime import probed

    probed.in_child(path, _PROBE, "the ONNX parser", timeout=timeout)
