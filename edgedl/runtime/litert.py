"""LiteRT (TensorFlow Lite) backend: ai-edge-litert, else tflite_runtime, else tensorflow.lite."""

from __future__ import annotations

import contextlib
import os
import struct
import sys

import numpy as np

from edgedl.errors import MissingDependencyError, UsageError
from edgedl.runtime.base import Runner, TensorInfo

# Where a device may have the interpreter, newest first.
PROVIDERS = (("ai_edge_litert.interpreter", "Interpreter"), ("tflite_runtime.interpreter", "Interpreter"),
             ("tensorflow.lite", "Interpreter"))


def interpreter_class() -> tuple[type, str]:
    """The first interpreter this device has, and the module it came from."""
    import importlib

    for module, attr in PROVIDERS:
        try:
            return getattr(importlib.import_module(module), attr), module
        except ImportError:
            continue
    raise MissingDependencyError("ai-edge-litert", "litert", "Running .tflite models")


def check_flatbuffer(path) -> None:
    """Refuse what is not a TFLite flatbuffer before a native parser sees it."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        size = fh.seek(0, 2)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise UsageError(f"{path} is not a .tflite file (no TFL3 flatbuffer identifier)")
    (root,) = struct.unpack("<I", head[:4])
    if root >= size:
        raise UsageError(f"{path} is truncated or corrupt (its root table lies past the end of the file)")


@contextlib.contextmanager
def native_output_silenced(fds: tuple[int, ...] = (1, 2)):
    """Send what native code writes to these file descriptors to /dev/null meanwhile: the
    interpreter prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on every load.
    Errors still surface as Python exceptions."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(fd) for fd in fds]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(devnull, fd)
        yield
    finally:
        for fd, copy in zip(fds, saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


_PROBE = ("import sys\nfrom edgedl.runtime.litert import interpreter_class, native_output_silenced\n"
          "cls, _ = interpreter_class()\nwith native_output_silenced((1,)):\n"
          "    it = cls(model_path=sys.argv[1])\n    it.allocate_tensors()\n")


def probe(path, timeout: float = 120) -> None:
    """Load the file in a child process first (unless this process or its parent did): a corrupt
    model may crash the native parser, and then only the child dies."""
    from edgedl.runtime import probed

    probed.in_child(path, _PROBE, "the LiteRT interpreter", prefix=f"LiteRT cannot load {path}: ", timeout=timeout)


def _info(detail: dict) -> TensorInfo:
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    shape = tuple(int(d) if d >= 0 else None for d in dims)
    scale, zero = detail.get("quantization", (0.0, 0))
    quant = {"scale": float(scale), "zero_point": int(zero)} if scale else None
    return TensorInfo(detail["name"], shape, np.dtype(detail["dtype"]).name, quantization=quant)


class LiteRTRunner(Runner):
    """Runs ``.tflite`` files; XNNPACK is on by default in the interpreter."""

    backend = "litert"
    thread_safe = False  # one interpreter holds one set of tensors: calls take the runner's lock

    def _load_impl(self) -> None:
        cls, self.provider = interpreter_class()
        options = {}
        if self.compute == "cpu-no-xnnpack":  # the built-in kernels alone, XNNPACK off
            from ai_edge_litert.interpreter import OpResolverType

            options["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        elif self.compute not in (None, "cpu", "xnnpack"):
            raise UsageError(f"unknown compute unit '{self.compute}' for LiteRT here: use xnnpack (the default) or "
                              "cpu-no-xnnpack; the GPU and NPU delegates run on the phone")
        check_flatbuffer(self.path)
        probe(self.path)  # not skipped for a sidecar's sha256: it says which file, not that it is safe
        try:
            with native_output_silenced():
                self._interp = cls(model_path=str(self.path), num_threads=self.threads, **options)
                self._interp.allocate_tensors()
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"LiteRT cannot load {self.path}: {first}") from None
        try:
            self._refresh()
        except UnicodeDecodeError:  # names are decoded from the flatbuffer as they are read
            raise UsageError(f"{self.path} is corrupt: a tensor name in it is not UTF-8") from None
        self._inputs = tuple(_info(d) for d in self._in)
        self._outputs = tuple(_info(d) for d in self._out)
        self._buffers: list = []

    def _refresh(self) -> None:
        """Cache what each call needs: (name, index, shape) per input, index per output."""
        self._in = self._interp.get_input_details()
        self._out = self._interp.get_output_details()
        self._in_plan = [(d["name"], d["index"], tuple(int(v) for v in d["shape"])) for d in self._in]
        self._out_index = [d["index"] for d in self._out]
        single = len(self._in_plan) == 1 and len(self._out_index) == 1 and not self.preallocate
        self._single_plan = (*self._in_plan[0], self._out_index[0]) if single else None

    def _run_impl(self, feeds):
        plan = self._single_plan  # the common case, one input and one output: nothing looked up
        if plan is not None:
            name, index, shape, out = plan
            value = feeds[name]
            if value.shape == shape:
                interp = self._interp
                interp.set_tensor(index, value)
                interp.invoke()
                return [interp.get_tensor(out)]
        return self._run_general(feeds)

    def _run_general(self, feeds):
        interp = self._interp
        for name, index, shape in self._in_plan:
            value = feeds[name]
            if value.shape != shape:  # a dynamic dimension changed size
                interp.resize_tensor_input(index, value.shape)
                interp.allocate_tensors()
                self._refresh()
            interp.set_tensor(index, value)
        interp.invoke()
        if self.preallocate:  # copy out of the interpreter's buffers into ours, made once per shape
            bufs = self._buffers
            if len(bufs) != len(self._out) or any(b.shape != tuple(d["shape"]) for b, d in zip(bufs, self._out)):
                bufs = self._buffers = [np.empty(tuple(d["shape"]), d["dtype"]) for d in self._out]
            for buf, index in zip(bufs, self._out_index):
                np.copyto(buf, interp.tensor(index)())
            return bufs
        get = interp.get_tensor
        return [get(index) for index in self._out_index]

    def _close_impl(self) -> None:
        self._interp = None
