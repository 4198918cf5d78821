"""Channel equalization of an exported torch graph before quantization-aware training: the same rule
as ``formats/onnx/equalize.py`` (``edgedl.quantization.rules.outlier_scales``), over aten ops.

Fake quantization keeps one range per activation tensor, and QAT's observers follow the values, so
training alone cannot take a channel a hundred times larger than the rest out of a range it
dominates. Where such channels sit on a stream of linear ops (tensors joined by ``aten.add``,
written by convolutions, read only by convolutions of one group or one group per channel, each
weight used by that one node), their scale moves into the weights first, the function unchanged,
as post-training INT8 does for the ONNX file.
"""

from __future__ import annotations

import numpy as np

CONVS = ("aten.conv1d.default", "aten.conv2d.default")
ADDS = ("aten.add.Tensor", "aten.add_.Tensor")


def _name(node) -> str:
    return str(node.target) if node.op == "call_function" else ""


def equalize(graph, sample) -> list[dict]:
    """Equalize ``graph`` (a torch.export GraphModule, BatchNorm folded) in place, with per-channel
    peaks from ``sample`` (a batch); returns one record per stream changed."""
    import torch
    from torch import fx

    from edgedl.quantization.rules import outlier_scales

    params = dict(graph.named_parameters()) | dict(graph.named_buffers())

    def weight(node):
        return params.get(node.target) if isinstance(node, fx.Node) and node.op == "get_attr" else None

    parent: dict = {}

    def find(node):
        while parent.setdefault(node, node) is not node:
            node = parent[node]
        return node

    adds = [n for n in graph.graph.nodes if _name(n) in ADDS and all(isinstance(a, fx.Node) for a in n.args[:2])]
    for add in adds:
        for other in add.args[:2]:
            parent[find(other)] = find(add)
    groups: dict = {}
    for node in graph.graph.nodes:
        if _name(node) in CONVS or node in parent:
            groups.setdefault(find(node), []).append(node)
    streams = []
    for members in groups.values():
        writers, readers, ok = [], [], True
        joins = {id(a) for a in adds if a in members}
        for node in members:
            if id(node) not in joins:
                if _name(node) in CONVS and weight(node.args[1]) is not None and \
                        (len(node.args) < 3 or node.args[2] is None or weight(node.args[2]) is not None):
                    writers.append(node)
                else:
                    ok = False
            for user in node.users:
                if id(user) in joins:
                    continue
                groups_arg = user.args[6] if _name(user) in CONVS and len(user.args) > 6 else 1
                if _name(user) in CONVS and user.args[0] is node and weight(user.args[1]) is not None:
                    readers.append((user, "conv" if groups_arg == 1 else "depthwise"))
                else:  # a linear layer works on the last axis, not the channels; anything else is not linear
                    ok = False
        if ok and writers and readers:
            streams.append((members, writers, readers))
    if not streams:
        return []
    peaks: dict = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n in watched and isinstance(out, torch.Tensor) and out.dim() >= 2:
                per = out.detach().abs().amax(dim=[d for d in range(out.dim()) if d != 1]).double().numpy()
                peaks[n] = np.maximum(peaks.get(n, per), per)
            return out

    watched = {n for members, _, _ in streams for n in members}
    with torch.no_grad():
        Recorder(graph).run(sample)
    done = []
    with torch.no_grad():
        for members, writers, readers in streams:
            per = [peaks[n] for n in members if n in peaks]
            if not per or len({p.shape for p in per}) != 1:
                continue
            found = outlier_scales(np.max(per, axis=0))
            if found is None:
                continue
            scale = torch.from_numpy(found.pop("scale")).float()
            scaled = [a for w in writers for a in w.args[1:3] if isinstance(a, fx.Node)] + [r.args[1] for r, _ in readers]
            shapes_fit = all(weight(w.args[1]).shape[0] == scale.numel() for w in writers) and all(
                weight(r.args[1]).shape[1 if how == "conv" else 0] == scale.numel()
                and (how == "conv" or r.args[6] == scale.numel()) for r, how in readers)
            tied = len({weight(a).data_ptr() for a in scaled}) != len(scaled) or any(len(a.users) != 1 for a in scaled)
            if not shapes_fit or tied:  # a weight used twice would be scaled twice
                continue
            for w in writers:
                tensor = weight(w.args[1])
                tensor.mul_((1 / scale).reshape(-1, *[1] * (tensor.dim() - 1)))
                if len(w.args) > 2 and w.args[2] is not None:
                    weight(w.args[2]).mul_(1 / scale)
            for r, how in readers:
                tensor = weight(r.args[1])
                axis = 1 if how == "conv" else 0
                shape = [1] * tensor.dim()
                shape[axis] = -1
                tensor.mul_(scale.reshape(shape))
            done.append({"tensors": [n.name for n in members][:4], **found})
    return done
