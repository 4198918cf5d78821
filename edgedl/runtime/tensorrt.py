"""TensorRT backend: runs a serialized engine (``.engine``) built on this device.

Name-based I/O (``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``: TensorRT 8.5 and
later), device memory, pinned host buffers and a stream from cuda-python, CUDA events timing each
call's GPU work (``gpu_ms``) apart from the copies. Before anything is deserialized the engine must
pass :mod:`edgedl.runtime.engine_guard`: pinned by the user, its sidecar's hash, compute capability
and TensorRT version matching this device.
"""

from __future__ import annotations

import numpy as np

from edgedl.errors import EdgedlError, UsageError
from edgedl.runtime.base import Runner, TensorInfo

TENSORRT_MISSING = ("TensorRT is not installed here: on a Jetson it comes with JetPack (python3-libnvinfer, in the "
                    "system Python: make a venv with --system-site-packages), elsewhere from NVIDIA's index (pip "
                    "install tensorrt --extra-index-url https://pypi.nvidia.com)")


def import_tensorrt():
    """The ``tensorrt`` module, or one line saying where TensorRT comes from (no pip extra installs it)."""
    try:
        import tensorrt
    except ImportError:
        raise EdgedlError(TENSORRT_MISSING) from None
    return tensorrt


def running_facts() -> dict:
    """This device's TensorRT version, GPU name and compute capability, platform and DLA cores."""
    from edgedl.runtime import cuda_mem
    from edgedl.runtime.platform import this_platform

    trt = import_tensorrt()
    gpu = cuda_mem.gpu_facts()  # first: a CUDA that cannot reach the GPU is named here, in one line
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    return {"tensorrt": trt.__version__, **gpu, **this_platform(), "dla_cores": int(getattr(runtime, "num_DLA_cores", 0))}


def deserialize(trt, data: bytes, version_compatible: bool, dla_core: int | None, logger=None):
    """Deserialize a pinned engine as its build requires; returns (runtime, engine or None).

    A version-compatible plan carries its own lean runtime, which TensorRT runs only after
    ``engine_host_code_allowed`` (NVIDIA's version-compatibility guide; trtexec does the same on load):
    set for such engines alone, after the trust pin was checked. ``DLA_core`` on the runtime picks the
    core the engine runs on (the build's core is only where it was built for).
    """
    runtime = trt.Runtime(logger or trt.Logger(trt.Logger.WARNING))
    if version_compatible:
        runtime.engine_host_code_allowed = True
    if dla_core is not None:
        runtime.DLA_core = int(dla_core)
    return runtime, runtime.deserialize_cuda_engine(data)


def dla_core_for(compute: str | None, sidecar: dict | None) -> int | None:
    """The DLA core an engine runs on: ``compute="dla:N"`` (or ``dlaN``) picks one, else the core it was
    built for (None: the GPU). Two engines built for core 0 share the two DLAs with ``dla:1`` on one."""
    built = (sidecar or {}).get("dla_core")
    if compute in (None, "gpu", "cuda"):
        return built
    text = str(compute).lower().replace("dla:", "dla")
    if text.startswith("dla") and text[3:].isdigit():
        if built is None:
            raise UsageError(f"compute={compute}: this engine was built for the GPU, not a DLA; build it with "
                              "edgedl build-engine --dla N")
        return int(text[3:])
    raise UsageError(f"unknown compute unit '{compute}' for TensorRT; use gpu, or dla:N for an engine built for a "
                      "DLA")


class TensorRTRunner(Runner):
    """Runs a TensorRT engine on the GPU (``compute`` None or ``gpu``); see the module docstring."""

    backend = "tensorrt"
    thread_safe = False  # one execution context and one stream

    def _load_impl(self) -> None:
        from edgedl._fs import sha256_file
        from edgedl.runtime import cuda_mem, engine_guard

        dla_core = dla_core_for(self.compute, self.sidecar)
        digest = sha256_file(self.path)
        trusted = self.trusted_engines
        # Origin and integrity first: they need no TensorRT, and an unpinned file is refused everywhere.
        engine_guard.check_origin(self.path, self.sidecar, digest, trusted, self.trust_model_code)
        trt = import_tensorrt()
        engine_guard.check(self.path, self.sidecar, digest, running_facts(), trusted, self.trust_model_code, dla_core)
        built = (self.sidecar or {}).get("tensorrt") or {}
        self._runtime, self._engine = deserialize(trt, self.path.read_bytes(), bool(built.get("version_compatible")),
                                                  dla_core)
        if self._engine is None:
            raise UsageError(f"TensorRT could not deserialize {self.path.name}; rebuild it on this device with "
                              "edgedl build-engine")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}

        def info(name):
            shape = tuple(None if d < 0 else int(d) for d in self._engine.get_tensor_shape(name))
            return TensorInfo(name, shape, np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))).name)

        self._inputs = tuple(info(n) for n in names if is_input[n])
        self._outputs = tuple(info(n) for n in names if not is_input[n])
        self._engine_inputs, self._engine_outputs = self._inputs, self._outputs  # the engine's names
        self._stream = cuda_mem.Stream()
        self._bufs: dict = {}  # name -> (PinnedArray, DeviceBuffer)
        self._bound_for = None
        self.gpu_ms: list[float] = []

    def _bind(self, feeds: dict) -> None:
        """Set the input shapes and (re)allocate buffers when they change."""
        from edgedl.runtime import cuda_mem

        self._free_buffers()
        for info in self._engine_inputs:
            value = feeds[info.name]
            if not self._context.set_input_shape(info.name, tuple(value.shape)):
                raise EdgedlError(f"input '{info.name}' shape {'x'.join(map(str, value.shape))} is outside the engine's "
                                  "optimization profile; rebuild with a wider --batch MIN,OPT,MAX")
            self._bufs[info.name] = (cuda_mem.PinnedArray(value.shape, info.dtype), cuda_mem.DeviceBuffer(value.nbytes))
        for info in self._engine_outputs:
            shape = tuple(self._context.get_tensor_shape(info.name))
            host = cuda_mem.PinnedArray(shape, info.dtype)
            self._bufs[info.name] = (host, cuda_mem.DeviceBuffer(host.nbytes))
        for name, (_, device) in self._bufs.items():
            self._context.set_tensor_address(name, device.ptr)
        self._bound_for = {k: v.shape for k, v in feeds.items()}

    def _run_impl(self, feeds):
        if self._bound_for != {k: v.shape for k, v in feeds.items()}:
            self._bind(feeds)
        stream = self._stream
        for info in self._engine_inputs:
            host, device = self._bufs[info.name]
            np.copyto(host.array, feeds[info.name])
            stream.to_device(device, host)
        stream.mark_start()
        if not self._context.execute_async_v3(stream.ptr):
            raise EdgedlError(f"TensorRT failed to run {self.path.name} (execute_async_v3 returned false)")
        stream.mark_end()
        for info in self._engine_outputs:
            host, device = self._bufs[info.name]
            stream.to_host(host, device)
        stream.synchronize()
        self.gpu_ms.append(stream.elapsed_ms())
        outs = [self._bufs[o.name][0].array for o in self._engine_outputs]
        return outs if self.preallocate else [o.copy() for o in outs]

    def _free_buffers(self) -> None:
        for host, device in self._bufs.values():
            host.free()
            device.free()
        self._bufs = {}
        self._bound_for = None

    def _close_impl(self) -> None:
        self._free_buffers()
        self._stream.free()
        self._context = self._engine = self._runtime = None


def summarize(path, target: str | None = None) -> dict:
    """``edgedl inspect`` of an engine: what its sidecar records (the engine itself is not opened:
    deserializing it runs native code, and needs this device's TensorRT)."""
    from pathlib import Path

    from edgedl.runtime.sidecar import read_sidecar

    path = Path(path)
    sidecar = read_sidecar(path) or {}
    io = sidecar.get("io") or []
    tensors = lambda mode: [{"name": t["name"], "shape": t["shape"], "dtype": t["dtype"]}  # noqa: E731
                            for t in io if t.get("mode") == mode]
    trt = sidecar.get("tensorrt") or {}
    return {"path": str(path), "format": "tensorrt", "inputs": tensors("input"), "outputs": tensors("output"),
            "opsets": {}, "ops": {}, "nodes": None, "params": None, "macs": None, "size_bytes": path.stat().st_size,
            "engine": {k: sidecar.get(k) for k in ("precision", "gpu", "dla_core", "sparsity", "source_onnx",
                                                     "cache_key")} | {"tensorrt": trt},
            "notes": {} if sidecar else {"engine": "no sidecar: the GPU and TensorRT version it was built for are "
                                                   "unknown"}}
