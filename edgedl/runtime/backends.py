"""The one table of runtime backends: what each runs, where its code lives, what installs it.

``load()``, ``edgedl bench`` and ``edgedl inspect`` all read this table; a new backend is one
module under ``edgedl/runtime/`` and one entry here. Nothing is imported until a backend is used.
"""

from __future__ import annotations

from typing import NamedTuple


class Backend(NamedTuple):
    """One runtime backend.

    Attributes:
        name: what ``load(backend=...)`` takes.
        runner: ``module:Class`` of its Runner.
        format: the artifact format it runs (the manifest's and sidecar's ``format``).
        suffixes: file suffixes it runs when no sidecar says otherwise.
        extra: the pip extra that installs its framework.
        compute: compute units its ``compute=`` takes (None is the first).
        inspect: ``module:function`` describing a file of this format, or None.
        runs_code: loading a file may execute code the file names (then a trust flag is needed).
        framework: the Python module the backend imports (a remote device is checked for it first).
    """

    name: str
    runner: str
    format: str
    suffixes: tuple[str, ...]
    extra: str
    compute: tuple[str, ...] = ("cpu",)
    inspect: str | None = None
    runs_code: bool = False
    framework: str = ""


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("onnxruntime", "edgedl.runtime.onnxrt:OnnxRuntimeRunner", "onnx", (".onnx",), "onnx", ("cpu", "cpu-qdq", "cuda", "tensorrt"),
            inspect="edgedl.formats.onnx.graph:summarize", framework="onnxruntime"),
    Backend("litert", "edgedl.runtime.litert:LiteRTRunner", "tflite", (".tflite",), "litert", ("cpu", "xnnpack", "cpu-no-xnnpack"),
            inspect="edgedl.formats.tflite.graph:summarize", framework="ai_edge_litert"),
    Backend("torch", "edgedl.runtime.torchrt:TorchRunner", "torch", (".pt", ".pth"), "torch", ("cpu", "cuda", "cuda-fp16"),
            inspect="edgedl.formats.torch.checkpoint:summarize", runs_code=True, framework="torch"),
    # An engine is native code for one GPU and TensorRT version: loading it passes engine_guard first.
    Backend("tensorrt", "edgedl.runtime.tensorrt:TensorRTRunner", "tensorrt", (".engine", ".plan", ".trt"), "tensorrt",
            ("gpu", "dla:0", "dla:1"), inspect="edgedl.runtime.tensorrt:summarize", runs_code=False, framework="tensorrt"),
)}
