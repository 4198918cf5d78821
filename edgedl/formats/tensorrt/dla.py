"""Which ONNX nodes TensorRT can place on an Orin/Xavier DLA core, and which fall back to the GPU.

From TensorRT's "DLA Supported Layers and Restrictions" (developer guide, 8.5 to 10.x, Jetson and
DriveOS): FP16 and INT8 only, static shapes, batch at most 4096 and other dimensions at most 8192,
and per-layer limits. The ONNX parser maps each node to a layer first; this module checks the node
against the limits of the layer it becomes. It is a planning aid: the builder's own placement
(``trtexec --useDLACore=N --allowGPUFallback --verbose``, or Polygraphy on the device) has the
last word, and the plan says so.
"""

from __future__ import annotations

from typing import Callable

MAX_BATCH = 4096
MAX_DIM = 8192

# ONNX activations that become an IActivationLayer DLA runs.
ACTIVATIONS = {"Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "PRelu"}
# Element-wise ops DLA runs (IElementWiseLayer: sum, sub, prod, max, min, div, pow, equal, greater, less).
ELEMENTWISE = {"Add", "Sub", "Mul", "Max", "Min", "Div", "Pow", "Equal", "Greater", "Less", "Sum"}
# Ops the parser folds into neighbours or into constants (no layer of their own on a device).
FOLDED = {"Constant", "Identity", "Dropout", "QuantizeLinear", "DequantizeLinear", "BatchNormalization"}


def _ints(node, name: str, default=None) -> list[int]:
    for att in node.attribute:
        if att.name == name:
            return list(att.ints) if att.ints else [att.i]
    return list(default or [])


def _int(node, name: str, default: int) -> int:
    for att in node.attribute:
        if att.name == name:
            return att.i
    return default


def _kernel(node, shapes) -> list[int]:
    return _ints(node, "kernel_shape") or (shapes.get(node.input[1]) or [])[2:]


def _conv(node, shapes) -> list[str]:
    kernel = _kernel(node, shapes)
    if len(kernel) != 2:
        return [f"{len(kernel)}-D convolution (DLA runs 2-D only)"]
    problems = []
    if any(not 1 <= k <= 32 for k in kernel):
        problems.append(f"kernel {kernel} outside [1, 32]")
    pads = _ints(node, "pads", [0, 0, 0, 0])
    if any(not 0 <= p <= 31 for p in pads) or any(p >= k for p, k in zip(pads, kernel + kernel)):
        problems.append(f"padding {pads} outside [0, 31] or not smaller than the kernel")
    strides = _ints(node, "strides", [1, 1])
    if any(not 1 <= s <= 8 for s in strides):
        problems.append(f"stride {strides} outside [1, 8]")
    if any(not 1 <= d <= 32 for d in _ints(node, "dilations", [1, 1])):
        problems.append("dilation outside [1, 32]")
    weight = shapes.get(node.input[1]) or []
    if weight and not 1 <= weight[0] <= 8192:
        problems.append(f"{weight[0]} output channels (DLA: 1 to 8192)")
    if not 1 <= _int(node, "group", 1) <= 8192:
        problems.append("groups outside [1, 8192]")
    return problems


def _deconv(node, shapes) -> list[str]:
    kernel = _kernel(node, shapes)
    if len(kernel) != 2:
        return [f"{len(kernel)}-D deconvolution (DLA runs 2-D only)"]
    problems = []
    if any(not 1 <= k <= 32 for k in kernel) or (kernel[0] == kernel[1] and 23 <= kernel[0] <= 32):
        problems.append(f"kernel {kernel} outside DLA's deconvolution kernels ([1, 22], or non-square up to 32)")
    if any(_ints(node, "pads", [0])):
        problems.append("padding (DLA deconvolution takes none)")
    if _int(node, "group", 1) != 1:
        problems.append("grouped deconvolution")
    if any(d != 1 for d in _ints(node, "dilations", [1, 1])):
        problems.append("dilated deconvolution")
    return problems


def _pool(node, shapes) -> list[str]:
    kernel = _ints(node, "kernel_shape")
    problems = []
    if len(kernel) != 2:
        return [f"{len(kernel)}-D pooling (DLA runs 2-D only)"]
    if any(not 1 <= k <= 8 for k in kernel):
        problems.append(f"window {kernel} outside [1, 8]")
    if any(not 0 <= p <= 7 for p in _ints(node, "pads", [0])):
        problems.append("padding outside [0, 7]")
    if any(not 1 <= s <= 16 for s in _ints(node, "strides", [1, 1])):
        problems.append("stride outside [1, 16]")
    return problems


def _global_pool(node, shapes) -> list[str]:
    shape = shapes.get(node.input[0]) or []
    window = shape[2:]
    if len(window) != 2 or not all(isinstance(d, int) for d in window):
        return ["input shape unknown or not 4-D"]
    if any(d > 8 for d in window):
        return [f"global pooling over {window[0]}x{window[1]} is a window larger than DLA's 8x8"]
    return []


def _concat(node, shapes) -> list[str]:
    axis = _int(node, "axis", 1)
    rank = len(shapes.get(node.output[0]) or [0, 0, 0, 0])
    return [] if axis in (1, 1 - rank) else [f"concatenation on axis {axis} (DLA concatenates channels only)"]


def _softmax(node, shapes) -> list[str]:
    rank = len(shapes.get(node.input[0]) or [])
    axis = _int(node, "axis", -1)
    if rank != 4 or axis not in (1, -3):
        return ["softmax over a non-channel axis or a tensor that is not 4-D (DLA on Orin: 4-D, channel axis)"]
    return []


def _lrn(node, shapes) -> list[str]:
    size = _int(node, "size", 0)
    return [] if size in (3, 5, 7, 9) else [f"LRN window {size} (DLA: 3, 5, 7 or 9)"]


def _resize(node, shapes) -> list[str]:
    mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "nearest")
    return [] if mode in ("nearest", "linear") else [f"resize mode {mode}"]


def _four_d(node, shapes) -> list[str]:
    rank = len(shapes.get(node.output[0]) or [])
    return [] if rank == 4 else [f"a {rank}-D result (DLA shuffles 4-D tensors only, on Orin)"]


def _weighted_matmul(node, shapes) -> list[str]:
    # A fully connected layer runs on DLA as a 1x1 convolution when its weights are constant and
    # its input keeps N, C, 1, 1: a Gemm after Flatten does; a MatMul of two activations does not.
    if len(node.input) < 2 or node.input[1] not in shapes.get("__constants__", ()):
        return ["matrix product of two activations (DLA runs fully connected layers with constant weights)"]
    return []


CHECKS: dict[str, Callable] = {
    "Conv": _conv, "ConvTranspose": _deconv, "MaxPool": _pool, "AveragePool": _pool,
    "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool, "Concat": _concat, "Softmax": _softmax,
    "LRN": _lrn, "Resize": _resize, "Upsample": _resize, "Reshape": _four_d, "Transpose": _four_d,
    "Flatten": _four_d, "Gemm": _weighted_matmul, "MatMul": _weighted_matmul,
}


def node_problems(node, shapes: dict) -> list[str] | None:
    """Why ``node`` would not run on DLA (empty: it would), or None for a node the parser folds away."""
    op = node.op_type
    if op in FOLDED:
        return None
    if op in ACTIVATIONS or op in ELEMENTWISE:
        return []
    check = CHECKS.get(op)
    if check is None:
        return [f"{op} has no DLA layer"]
    return check(node, shapes)
