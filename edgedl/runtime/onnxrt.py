"""ONNX Runtime backend."""

from __future__ import annotations

import re

from edgedl.errors import EdgedlError, MissingDependencyError, UsageError
from edgedl.runtime.base import Runner, TensorInfo

# ONNX Runtime reports element types as strings such as "tensor(float)".
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(uint32)": "uint32",
    "tensor(int64)": "int64",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}

_PROVIDERS = {
    None: ["CPUExecutionProvider"],
    "cpu": ["CPUExecutionProvider"],
    # Q/DQ pairs as their definition computes them, in float (graph optimizations off: none fused into
    # integer kernels; ops a file holds as integer ops, QLinearConv or MatMulInteger, stay integer):
    # what a file made for TensorRT computes there, without a CPU's own rounding or saturation
    "cpu-qdq": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _external_data_inside(path) -> None:
    """Refuse external data outside the model's folder before ONNX Runtime reads it, where the onnx
    package is loaded already (a workstation: compress, inspect, bench). In a device app the runtime
    imports onnxruntime alone, whose own check (1.31) refuses absolute paths, '..' and symlinks out.
    An app's own files are not parsed in a child process first: that is for files from elsewhere."""
    import sys

    if "onnx" not in sys.modules:
        return
    from edgedl.formats.onnx.graph import load_graph

    load_graph(path)


def _info(node) -> TensorInfo:
    dtype = _ORT_DTYPES.get(node.type)
    if dtype is None:
        raise EdgedlError(f"tensor '{node.name}' has type {node.type}, which edgedl does not feed")
    return TensorInfo(node.name, tuple(node.shape), dtype)


class OnnxRuntimeRunner(Runner):
    """Runs ``.onnx`` files with ONNX Runtime (CPU by default, ``compute='cuda'`` or ``'tensorrt'`` for those execution providers)."""

    backend = "onnxruntime"

    def _load_impl(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("onnxruntime", "onnx", "Running ONNX models") from None
        if self.compute not in _PROVIDERS:
            raise UsageError(f"unknown compute unit '{self.compute}' for ONNX Runtime; use cpu, cpu-qdq, cuda or tensorrt")
        providers = _PROVIDERS[self.compute]
        missing = [p for p in providers[:1] if p not in ort.get_available_providers()]
        if missing:
            raise EdgedlError(
                f"ONNX Runtime here has no {missing[0]}; install onnxruntime-gpu or use compute=cpu"
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.compute == "cpu-qdq":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
            options.inter_op_num_threads = 1
        _external_data_inside(self.path)
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # ORT raises several private exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            newer = re.search(r"(IR version: \d+), max supported IR version: (\d+)", first) or \
                re.search(r"(Opset \d+) is under development.*till opset (\d+)", str(exc), re.S)
            if newer:  # a file saved by a newer onnx package: say what to do, not only what failed
                what = newer.group(1).replace(":", "").replace("Opset", "opset")
                first = (f"its {what} is newer than ONNX Runtime {ort.__version__} reads (up to {newer.group(2)}); "
                         f"upgrade onnxruntime here, or bring the file through `edgedl compress --model FILE --data "
                         f"...`, whose fp32 copy is fitted to the ONNX Runtime beside it")
            raise UsageError(f"ONNX Runtime cannot load {self.path}: {first}") from None
        self._inputs = tuple(_info(i) for i in self._session.get_inputs())
        self._outputs = tuple(_info(o) for o in self._session.get_outputs())
        self._run = self._session.run
        if self.preallocate:
            self._binding = self._session.io_binding()
            self._bound_for = None  # the input shapes the bound output buffers fit
            self._buffers: list = []
            self._bound_inputs: dict = {}  # name -> (array bound, its shape); held, so its memory stays valid
            self._run_impl = self._run_bound

    def _run_impl(self, feeds):
        return self._run(self._file_outputs, feeds)

    def _run_bound(self, feeds):
        """IO binding: inputs are read in place, outputs written into buffers made once per input
        shape (the first call with a new shape lets ORT allocate and keeps what it made)."""
        binding, bound = self._binding, self._bound_inputs
        for name, value in feeds.items():
            held = bound.get(name)
            if held is None or held[0] is not value or held[1] != value.shape:  # the same array again
                binding.bind_cpu_input(name, value)  # is read in place: no rebinding
                bound[name] = (value, value.shape)
        shapes = tuple(v.shape for v in feeds.values())
        if shapes != self._bound_for:
            for name in self._file_outputs:
                binding.bind_output(name, "cpu")
            self._session.run_with_iobinding(binding)
            self._buffers = binding.copy_outputs_to_cpu()
            for name, buf in zip(self._file_outputs, self._buffers):
                binding.bind_output(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
            self._bound_for = shapes
            return self._buffers
        self._session.run_with_iobinding(binding)
        return self._buffers

    def _close_impl(self) -> None:
        self._run = None
        self._binding = None
        self._session = None
