"""Static description of a .tflite file, and which ops a delegate would leave on the CPU."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edgedl.errors import UsageError
from edgedl.formats.onnx.graph import COUNTED_ON_ONNX

# The TFLite GPU delegate's documented op table (tensorflow.org/lite/performance/gpu, "GPU ML
# operations support"): 16- and 32-bit float. Only version 1 of each op by default, so quantized
# (int8) variants stay on the CPU unless the app enables the delegate's quantized-model support.
GPU_DELEGATE_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXP", "FULLY_CONNECTED",
    "LOGICAL_AND", "LOGISTIC", "LSTM", "MAX_POOL_2D", "MAXIMUM", "MINIMUM", "MUL", "PAD", "PRELU", "RELU",
    "RELU6", "RESHAPE", "RESIZE_BILINEAR", "SOFTMAX", "STRIDED_SLICE", "SUB", "TRANSPOSE_CONV",
})
TARGETS = ("tflite-gpu", "nnapi")


def _interpreter(path: Path):
    from edgedl.runtime.litert import check_flatbuffer, interpreter_class, probe

    check_flatbuffer(path)
    probe(path)  # inspect reads files from anywhere: a corrupt one must not crash this process
    cls, provider = interpreter_class()
    return cls(model_path=str(path)), provider


def summarize(path: str | Path, target: str | None = None) -> dict[str, Any]:
    """Inputs, outputs, op histogram and size; with ``target``, the ops left on the CPU."""
    path = Path(path)
    if target is not None and target not in TARGETS:
        raise UsageError(f"unknown --target '{target}'; use one of {', '.join(TARGETS)}")
    try:
        return _summarize(path, target)
    except (ValueError, RuntimeError) as exc:  # the interpreter's own refusals (UnicodeDecodeError is a ValueError)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(f"{path} is not a readable .tflite file: {first}") from None


def _summarize(path: Path, target: str | None) -> dict[str, Any]:
    interp, provider = _interpreter(path)
    tensors = lambda details: [  # noqa: E731
        {"name": d["name"], "shape": [int(x) if x >= 0 else None for x in d.get("shape_signature", d["shape"])],
         "dtype": d["dtype"].__name__, "quantization": {"scale": float(d["quantization"][0]),
                                                       "zero_point": int(d["quantization"][1])}
         if d["quantization"][0] else None}
        for d in details]
    ops = [op["op_name"] for op in interp._get_ops_details()]
    info: dict[str, Any] = {
        "path": str(path), "format": "tflite", "interpreter": provider,
        "inputs": tensors(interp.get_input_details()), "outputs": tensors(interp.get_output_details()),
        "ops": dict(Counter(ops).most_common()), "nodes": len(ops), "params": None, "macs": None,
        "notes": {"params": COUNTED_ON_ONNX, "macs": COUNTED_ON_ONNX},
        "size_bytes": path.stat().st_size,
    }
    if target == "tflite-gpu":
        quantized = any(t["dtype"] in ("int8", "uint8") for t in info["inputs"] + info["outputs"])
        left = {op: n for op, n in info["ops"].items() if op not in GPU_DELEGATE_OPS}
        info["delegate"] = {
            "target": target, "source": "TFLite GPU delegate documented op table",
            "cpu_ops": left, "cpu_op_count": sum(left.values()),
            "note": ("integer model: the GPU delegate runs float ops by default, so its quantized ops stay on "
                     "the CPU unless the app enables quantized-model support; use the fp32 or fp16 export for "
                     "the GPU") if quantized else None,
        }
    elif target == "nnapi":
        info["delegate"] = {
            "target": target, "cpu_ops": None, "cpu_op_count": None,
            "note": ("not knowable off the device: NNAPI support depends on each phone's drivers (and NNAPI is "
                     "deprecated from Android 15); run `edgedl bench` on the phone instead"),
        }
    return info
