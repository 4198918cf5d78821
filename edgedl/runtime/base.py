"""The Runner contract every backend follows.

Public methods check inputs and shape the results; backends override the small ``_*_impl``
hooks. A backend is one module; it imports its framework inside ``_load_impl`` so that
``import edgedl.runtime`` needs numpy alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from edgedl.errors import EdgedlError, UsageError
from edgedl.runtime.preprocess import Prediction, check_range, image_to_input, to_prediction


class TensorInfo(NamedTuple):
    """Name, shape (an int per static dimension, a string or None per dynamic one) and dtype;
    the layout (``NCHW``...) and quantization (scale, zero point) where known."""

    name: str
    shape: tuple
    dtype: str
    layout: str | None = None
    quantization: dict | None = None

    @property
    def static_dims(self) -> tuple[tuple[int, int], ...]:
        """(axis, size) of every dimension with a fixed size."""
        return tuple((i, d) for i, d in enumerate(self.shape) if isinstance(d, int) and d >= 0)

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with dynamic dimensions resolved: the first to ``batch``, others to 1."""
        return tuple(
            d if isinstance(d, int) and d >= 0 else (batch if i == 0 else 1)
            for i, d in enumerate(self.shape)
        )

    def describe(self) -> str:
        dims = "x".join(str(d) if isinstance(d, int) and d >= 0 else (d or "?") for d in self.shape)
        return f"{self.name} {dims} {self.dtype}"


def _quantized(info: TensorInfo) -> bool:
    q = info.quantization
    return bool(q and q.get("scale")) and np.dtype(info.dtype).kind in "iu"


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Float32 to the tensor's integer type: round(x / scale) + zero point, clipped to its range."""
    dtype = np.dtype(info.dtype)
    limits = np.iinfo(dtype)
    q = np.round(x / np.float32(info.quantization["scale"])) + info.quantization["zero_point"]
    return np.clip(q, limits.min, limits.max).astype(dtype)


class InputError(UsageError):
    """An input of the wrong name, shape or dtype (nothing is broadcast or cast silently)."""


class Runner:
    """A loaded artifact. Use as ``m(x)`` for one input or ``m({name: x, ...})`` for several.

    Subclasses set ``backend`` and implement ``_load_impl``, ``_run_impl`` and ``_close_impl``,
    and fill ``_inputs`` / ``_outputs`` in ``_load_impl``.
    """

    backend: str = ""
    # Whether the framework's own run call may be entered from several threads at once. When it
    # may not, every call holds the runner's lock (a camera thread and a control thread can share
    # one runner either way).
    thread_safe: bool = True

    def __init__(
        self,
        path: str | os.PathLike,
        sidecar: Mapping[str, Any] | None = None,
        threads: int | None = None,
        compute: str | None = None,
        trusted: bool = False,
        preallocate: bool = False,
        trust_model_code: bool = False,
        factory: str | None = None,
        trusted_engines: Any = None,
    ):
        self.path = Path(path)
        self.trusted_engines = list(trusted_engines) if trusted_engines is not None else None
        self.sidecar: dict[str, Any] = dict(sidecar or {})
        self.threads = threads
        self.compute = compute  # the compute unit (cpu, cuda, a delegate): not a device profile
        self.trusted = trusted  # the file's sha256 matched an edgedl sidecar
        # Formats that name code (a checkpoint's factory) run it only when the caller says so.
        self.trust_model_code = trust_model_code
        self.factory = factory
        # preallocate: outputs land in buffers made once (per input shape) and the same arrays
        # come back on every call; copy what you keep. Backends that cannot leave it False.
        self.preallocate = preallocate
        self._inputs: tuple[TensorInfo, ...] = ()
        self._outputs: tuple[TensorInfo, ...] = ()
        self._closed = False
        import threading  # here: `import edgedl.runtime` stays cheap for apps that start often

        self._lock = threading.Lock()
        self._load_impl()
        # The file's own tensor names: what backends are fed under and asked for, whatever names the
        # sidecar gives the model's tensors afterwards.
        self._file_inputs = [i.name for i in self._inputs]
        self._file_outputs = [o.name for o in self._outputs]
        if not self.thread_safe or self.preallocate:  # shared buffers need the lock too
            self._run_impl = self._locked(self._run_impl)
        self._apply_sidecar_metadata()
        self._output_names = [o.name for o in self._outputs]
        # Pre-computed checks keep the per-call cost to a few hundred nanoseconds.
        self._checks = {
            i.name: (np.dtype(i.dtype), len(i.shape), i.static_dims, i) for i in self._inputs
        }
        self._single = self._inputs[0].name if len(self._inputs) == 1 else None
        self._single_key = self._file_names.get(self._single, self._single)  # what the backend is fed under
        # Quantized outputs come back as float: (index, scale, zero point).
        self._dequant = [(k, o.quantization["scale"], o.quantization["zero_point"])
                         for k, o in enumerate(self._outputs) if _quantized(o)]
        self._dequant_bufs: dict = {}

    def _locked(self, impl):
        lock = self._lock

        def run_locked(feeds):
            with lock:
                return impl(feeds)

        return run_locked

    # ---- metadata -------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self._outputs

    @property
    def labels(self) -> list[str] | None:
        return self.sidecar.get("labels")

    def _apply_sidecar_metadata(self) -> None:
        # The sidecar knows what the file cannot say (layout, the model's own tensor names: a LiteRT
        # file calls its input serving_default_args_0, the ONNX file of the same model "input");
        # quantization parameters the file itself reports win over the sidecar's copy.
        tensors = [*self.sidecar.get("inputs", []), *self.sidecar.get("outputs", [])]
        by_name = {t.get("file_name", t.get("name")): t for t in tensors}
        self._file_names: dict[str, str] = {}  # model name -> the file's name, where they differ

        def enrich(info: TensorInfo, is_input: bool) -> TensorInfo:
            extra = by_name.get(info.name) or {}
            name = extra.get("name", info.name) if "file_name" in extra else info.name
            if name != info.name and is_input:
                self._file_names[name] = info.name
            return TensorInfo(name, info.shape, info.dtype, extra.get("layout", info.layout),
                              info.quantization or extra.get("quantization"))

        self._inputs = tuple(enrich(i, True) for i in self._inputs)
        self._outputs = tuple(enrich(o, False) for o in self._outputs)

    # ---- running --------------------------------------------------------------------------
    def __call__(self, x: np.ndarray | Mapping[str, np.ndarray]) -> Any:
        """Run once. One output comes back as an array, several as a dict keyed by name."""
        if self._single is not None and type(x) is np.ndarray:
            feeds = {self._single_key: self._check(self._single, x)}
        else:
            feeds = self._feeds(x)
        outs = self._run_impl(feeds)
        if self._dequant:
            outs = self._dequantize(outs)
        if len(outs) == 1:
            return outs[0]
        return dict(zip(self._output_names, outs))

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run with named inputs; always returns a dict of named outputs."""
        outs = self._run_impl(self._feeds(feeds))
        return dict(zip(self._output_names, self._dequantize(outs) if self._dequant else outs))

    def _dequantize(self, outs):
        outs = list(outs)
        for k, scale, zero in self._dequant:
            if self.preallocate:
                buf = self._dequant_bufs.get((k, outs[k].shape))
                if buf is None:
                    buf = self._dequant_bufs[(k, outs[k].shape)] = np.empty(outs[k].shape, np.float32)
                np.subtract(outs[k], np.float32(zero), out=buf, dtype=np.float32)
                outs[k] = np.multiply(buf, np.float32(scale), out=buf)
            else:
                outs[k] = (outs[k].astype(np.float32) - np.float32(zero)) * np.float32(scale)
        return outs

    def predict(self, image: np.ndarray | str) -> Prediction:
        """Run one raw image (HxW or HxWxC, uint8 or float, any size) the way the model was
        trained: resize, channels, normalization and layout from the sidecar, int8 quantization
        when the file takes int8. Always a :class:`Prediction`: for a classifier (the sidecar says
        so, or one output of shape (1, classes) without a sidecar) with class, label, score and
        probabilities; for another model with ``output`` alone (the others None).

        An image outside the value range the model was trained on (the sidecar's ``raw_range``,
        e.g. 0..16 for the digits) gives an :class:`InputRangeWarning`.

        A text model (its sidecar names a tokenizer) takes a string: tokenized as at export, its
        prediction's ``output`` is the embedding (feature extraction) or the logits behind its class."""
        tokenizer = (self.sidecar.get("model") or {}).get("tokenizer")
        if isinstance(image, str):
            if not tokenizer:
                raise UsageError("predict() takes a string for text models only (their sidecar names a tokenizer)")
            from edgedl.runtime.text import encode

            names = [i.name for i in self._inputs]
            out = self(encode([image], tokenizer, self.path.parent, names))
            out = out if isinstance(out, np.ndarray) else next(iter(out.values()))
            if self.sidecar.get("task") == "classification":
                return to_prediction(out[0], self.labels)
            return Prediction(None, None, None, None, out[0])
        if self._single is None:
            raise UsageError("predict() takes single-input models; call the model with a dict of arrays")
        info = self._inputs[0]
        normalization = self.sidecar.get("normalization")
        check_range(image, normalization)
        x = image_to_input(image, info.shape, info.layout, normalization, info.name)
        out = self(x)
        out = out if isinstance(out, np.ndarray) else next(iter(out.values()))
        task = self.sidecar.get("task")
        if task == "classification" or self.labels or (task is None and out.ndim == 2 and out.shape[1] > 1):
            return to_prediction(out[0], self.labels)
        return Prediction(None, None, None, None, out[0])

    def warmup(self, n: int = 10, batch: int = 1) -> None:
        """Run ``n`` times on zeros so that lazy initialisation is paid before timing starts."""
        feeds = {self._file_names.get(i.name, i.name): np.zeros(i.concrete_shape(batch), i.dtype) for i in self._inputs}
        for _ in range(n):
            self._run_impl(feeds)

    def _feeds(self, x: Any) -> dict[str, np.ndarray]:
        if isinstance(x, np.ndarray):
            if self._single is None:
                names = ", ".join(self._checks)
                raise InputError(f"this model has several inputs ({names}); pass a dict")
            x = {self._single: x}
        if not isinstance(x, Mapping):
            raise InputError(f"expected a numpy array or a dict of arrays, got {type(x).__name__}")
        missing = [n for n in self._checks if n not in x]
        unknown = [n for n in x if n not in self._checks]
        if missing or unknown:
            raise InputError(
                f"inputs do not match: missing {missing or 'none'}, unknown {unknown or 'none'}; "
                f"expected {', '.join(self._checks)}"
            )
        checked = {}
        for name, value in x.items():
            if not isinstance(value, np.ndarray):
                raise InputError(f"input '{name}' must be a numpy array, got {type(value).__name__}")
            checked[self._file_names.get(name, name)] = self._check(name, value)
        return checked

    def _check(self, name: str, x: np.ndarray) -> np.ndarray:
        """The array to feed: ``x`` itself, or ``x`` quantized when the input is quantized and
        ``x`` is float32 (with the tensor's own scale and zero point, not a silent cast)."""
        dtype, rank, static, info = self._checks[name]
        shape = x.shape
        if len(shape) != rank:
            self._raise_mismatch(info, x)
        for axis, size in static:
            if shape[axis] != size:
                self._raise_mismatch(info, x)
        if x.dtype != dtype:
            if x.dtype == np.float32 and _quantized(info):
                return quantize(x, info)
            self._raise_mismatch(info, x)
        return x

    @staticmethod
    def _raise_mismatch(info: TensorInfo, x: np.ndarray) -> None:
        given = "x".join(map(str, x.shape)) or "scalar"
        also = " (or float32, quantized with its scale)" if _quantized(info) else ""
        raise InputError(
            f"input '{info.name}' expects {info.describe()}{also}, got {given} {x.dtype}; "
            "reshape or cast it (nothing is broadcast or cast silently)"
        )

    # ---- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Free native resources; the runner cannot be used afterwards."""
        if not self._closed:
            with self._lock:
                self._closed = True
                self._close_impl()
                self._run_impl = self._run_closed

    def _run_closed(self, feeds):
        raise EdgedlError(f"{self.path.name} was closed; load it again to run it")

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        ins = ", ".join(i.describe() for i in self._inputs)
        return f"<{type(self).__name__} {self.path.name} [{ins}]>"

    # ---- backend hooks --------------------------------------------------------------------
    def _load_impl(self) -> None:  # pragma: no cover - contract
        raise NotImplementedError

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> Sequence[np.ndarray]:  # pragma: no cover
        """Run ``feeds``, keyed by the file's own tensor names (``self._file_inputs``: those
        ``_load_impl`` put in ``self._inputs`` before the sidecar renamed them), and return the outputs
        in the order of ``self._file_outputs``."""
        raise NotImplementedError

    def _close_impl(self) -> None:
        pass
