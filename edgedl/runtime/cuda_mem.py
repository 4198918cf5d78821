"""Device memory, pinned host buffers, a stream and CUDA-event timing through NVIDIA's cuda-python
(``cuda.bindings.runtime``): what the TensorRT backend needs, with no torch or pycuda.

Every call returns ``(error, value...)``; :func:`call` turns an error into one line naming it.
"""

from __future__ import annotations

import ctypes

import numpy as np

from edgedl.errors import EdgedlError, MissingDependencyError
from edgedl.runtime.platform import version_key


def cudart():
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python before 12.6
        except ImportError:
            raise MissingDependencyError("cuda-python", "tensorrt", "TensorRT's GPU memory and streams") from None
    return runtime


def call(result, what: str):
    """Check a cuda-python call's error code; return its value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        rt = cudart()
        name = rt.cudaGetErrorName(err)[1]
        raise EdgedlError(f"CUDA {what} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else (tuple(values) if values else None)


class DeviceBuffer:
    """``nbytes`` of GPU memory."""

    def __init__(self, nbytes: int):
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(call(cudart().cudaMalloc(self.nbytes), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            call(cudart().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


class PinnedArray:
    """A page-locked host array (fast, asynchronous copies), seen from numpy without a copy."""

    def __init__(self, shape: tuple[int, ...], dtype):
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.nbytes = max(int(np.prod(self.shape)) * self.dtype.itemsize, 1)
        self.ptr = int(call(cudart().cudaMallocHost(self.nbytes), "cudaMallocHost"))
        raw = ctypes.cast(ctypes.c_void_p(self.ptr), ctypes.POINTER(ctypes.c_ubyte))
        self.array = np.ctypeslib.as_array(raw, (self.nbytes,))[: int(np.prod(self.shape)) * self.dtype.itemsize] \
            .view(self.dtype).reshape(self.shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None
            call(cudart().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


class Stream:
    """A CUDA stream with copies in both directions and event timing of what runs between marks."""

    def __init__(self):
        rt = cudart()
        self._rt = rt
        self.handle = call(rt.cudaStreamCreate(), "cudaStreamCreate")
        self._start = call(rt.cudaEventCreate(), "cudaEventCreate")
        self._end = call(rt.cudaEventCreate(), "cudaEventCreate")

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def to_device(self, dst: DeviceBuffer, src: PinnedArray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        call(self._rt.cudaMemcpyAsync(dst.ptr, src.ptr, src.nbytes, kind, self.handle), "copy to the GPU")

    def to_host(self, dst: PinnedArray, src: DeviceBuffer) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        call(self._rt.cudaMemcpyAsync(dst.ptr, src.ptr, dst.nbytes, kind, self.handle), "copy to the host")

    def mark_start(self) -> None:
        call(self._rt.cudaEventRecord(self._start, self.handle), "cudaEventRecord")

    def mark_end(self) -> None:
        call(self._rt.cudaEventRecord(self._end, self.handle), "cudaEventRecord")

    def synchronize(self) -> None:
        call(self._rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def elapsed_ms(self) -> float:
        """GPU time between the last start and end marks (call after synchronize)."""
        return float(call(self._rt.cudaEventElapsedTime(self._start, self._end), "cudaEventElapsedTime"))

    def free(self) -> None:
        if self.handle is not None:
            call(self._rt.cudaEventDestroy(self._start), "cudaEventDestroy")
            call(self._rt.cudaEventDestroy(self._end), "cudaEventDestroy")
            call(self._rt.cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None


def gpu_facts(index: int = 0) -> dict:
    """Name and compute capability of GPU ``index``.

    Raises:
        EdgedlError: CUDA cannot read the GPU; the line says which cuda-python is installed, the CUDA
            the driver supports, and the range to install when the two majors differ (an unknown compute
            capability must never reach the engine guard).
    """
    rt = cudart()
    err, prop = rt.cudaGetDeviceProperties(index)
    if int(err) != 0:
        raise EdgedlError(f"CUDA cannot read GPU {index} ({_error_name(rt, err)}): {binding_hint(rt)}")
    name = prop.name
    name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return {"gpu": name.rstrip("\x00"), "compute_capability": f"{prop.major}.{prop.minor}"}


def _error_name(rt, err) -> str:
    try:
        name = rt.cudaGetErrorName(err)[1]
    except Exception:  # a binding that cannot even name its error
        return str(err)
    return name.decode() if isinstance(name, bytes) else str(name)


def binding_hint(rt) -> str:
    """What to check when CUDA calls fail: cuda-python's major against the driver's CUDA."""
    from importlib import metadata

    installed = None
    for dist in ("cuda-python", "cuda-bindings"):
        try:
            installed = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    try:
        err, version = rt.cudaDriverGetVersion()
        driver = f"{int(version) // 1000}.{int(version) % 1000 // 10}" if int(err) == 0 and int(version) else None
    except Exception:
        driver = None
    if driver and version_key(driver)[0] < 12:
        return f"this driver runs CUDA {driver}, and edgedl's TensorRT backend needs CUDA 12 or later (JetPack 6 or later)"
    if installed and driver and version_key(installed)[0] != version_key(driver)[0]:
        return (f"cuda-python {installed} is built for CUDA {installed.split('.')[0]} and this driver runs CUDA {driver}: "
                f"pip install '{cuda_python_spec(driver)}'")
    return (f"cuda-python {installed or '(version unknown)'}, driver CUDA {driver or 'unknown'}; check that a GPU is "
            "visible (nvidia-smi, or tegrastats on a Jetson) and that cuda-python's major matches the driver's CUDA")


def cuda_python_spec(cuda: str | None) -> str | None:
    """The cuda-python range for a device's CUDA, or None where edgedl's TensorRT backend has none.

    cuda-python shares its major version with the CUDA toolkit and supports any minor of that major
    (cuda-bindings' support policy); 13.0 dropped the ``cuda.cudart`` module and needs CUDA 13.
    edgedl[tensorrt] takes cuda-python 12 or later, so CUDA 11 and older (JetPack 4 and 5) get none.
    """
    major = version_key(cuda)[:1]
    if not major or major[0] < 12:
        return None
    return f"cuda-python>={major[0]}.0,<{major[0] + 1}"
