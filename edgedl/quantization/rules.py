"""Rules that decide, before any search, what must stay in float whatever the gate says."""

from __future__ import annotations

import numpy as np

from edgedl.artifacts import SCALE_SPLIT, scale_groups
from edgedl.quantization.backend import Backend

OUTLIER = 8.0  # a channel whose peak is this many times its stream's median channel peak
ALPHA = 0.5  # the share of an outlier's scale moved into the weights (SmoothQuant's migration strength)


def outlier_scales(peak: np.ndarray, outlier: float = OUTLIER, alpha: float = ALPHA):
    """The outlier channels of a stream, from each channel's peak |value|, and the factor to divide
    each channel by (multiplying its readers' weights): ``(peak / median) ** alpha`` for a channel
    ``outlier`` times the median or more, 1 for the rest; None when the stream has none. The one rule
    the ONNX and torch equalizations share (formats/onnx/equalize.py, formats/torch/equalize.py)."""
    peak = np.asarray(peak, dtype=np.float64)
    median = float(np.median(peak)) if peak.size >= 4 else 0.0
    hot = np.flatnonzero(peak > outlier * median) if median > 0 else np.array([], int)
    if not hot.size:
        return None
    scale = np.ones(peak.size)
    scale[hot] = (peak[hot] / median) ** alpha
    return {"channels": hot.tolist(), "peak_over_median": [round(float(peak[c] / median), 1) for c in hot],
            "moved_into_weights": [round(float(scale[c]), 2) for c in hot], "scale": scale}


def mixed_scale_nodes(backend: Backend) -> dict[str, str]:
    """Nodes to keep in float, each with its reason: every node that makes or reads a tensor joining
    values whose scales differ by orders of magnitude (a detector's boxes in pixels beside its 0..1
    scores). One INT8 range over such a tensor spends its 256 levels on the large values and
    flattens the small ones. Such a tensor is made by a concatenation whose inputs' peaks are 100x
    apart, and stays mixed through layout ops and further concatenations (YOLOv5's per-level Concat,
    Reshape, then one across levels); a graph output of two scale groups
    (:func:`edgedl.artifacts.scale_groups`) counts too, whatever made it. The concatenation's inputs,
    each of one scale, are still quantized, each with its own range."""
    nodes, outputs = backend.graph()
    concats = [n for n in nodes if n.kind == "concat"]
    peak, values = backend.peaks(sorted({i for n in concats for i in n.inputs if i}))
    mixed: dict[str, str] = {}  # tensor: why
    for node in concats:
        peaks = [peak[i] for i in node.inputs if peak.get(i, 0) > 0]
        if len(peaks) > 1 and max(peaks) >= SCALE_SPLIT * min(peaks):
            mixed[node.outputs[0]] = (f"its concatenation joins values {min(peaks):.3g} to {max(peaks):.3g} in scale "
                                      f"({max(peaks) / min(peaks):.0f}x apart)")
    for name in outputs:
        value = values.get(name)
        if name not in mixed and value is not None and np.ndim(value) >= 1 and scale_groups(np.asarray(value)):
            mixed[name] = "it holds channel groups 100x apart in scale"
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.inputs:
            consumers.setdefault(name, []).append(node)
    producers = {out: node for node in nodes for out in node.outputs}
    pending = list(mixed)
    while pending:  # mixed stays mixed through layout ops and concatenations
        tensor = pending.pop()
        for node in consumers.get(tensor, []):
            if node.kind in ("layout", "concat") and node.outputs and node.outputs[0] not in mixed:
                mixed[node.outputs[0]] = mixed[tensor]
                pending.append(node.outputs[0])
    found: dict[str, str] = {}
    for tensor, why in mixed.items():
        shown = tensor in outputs
        for node in [producers.get(tensor), *consumers.get(tensor, [])]:
            if node is not None and node.name and node.name not in found:
                found[node.name] = (f"'{tensor}'{' (an output)' if shown else ''}: {why}; one INT8 range would "
                                    "flatten the small values, so the nodes that make or read it stay in float")
    return found
