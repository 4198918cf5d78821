"""What a format supplies to the INT8 search: a few calls over its own files, behind edgedl types.

The search, the gates and the rules (:mod:`edgedl.quantization.search`) are one algorithm; a backend
only quantizes a file with some nodes left in float, lists the nodes it can quantize and describes
its graph and intermediate values for the mixed-scale rule (NNCF's ``algorithm.py`` over
``onnx_backend.py``). One file per format, registered by format name: ONNX Runtime's QDQ (whose
``tensorrt`` scheme is TensorRT's explicit Q/DQ) in ``formats/onnx/quantize.py`` and LiteRT's
ai-edge-quantizer in ``formats/tflite/quantize.py``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable

BUILTIN = ("onnx", "tflite")  # edgedl.formats.<name>.quantize defines each
_REGISTRY: dict[str, type["Backend"]] = {}


@dataclass(frozen=True)
class Node:
    """One node of a format's graph, as the rules see it: ``kind`` is ``concat``, ``layout`` (a
    reshape, transpose, squeeze: values pass through unchanged) or the op's own name."""

    name: str
    op: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class Backend:
    """One format's quantizer over one float file, calibrated on the run's samples."""

    format: ClassVar[str] = ""
    suffix: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.format:
            _REGISTRY[cls.format] = cls

    def schemes(self) -> list[str]:
        """The schemes to try, each a complete way to quantize this file for its target."""
        raise NotImplementedError

    def quantize(self, scheme: str, dst: Path, exclude: Iterable[str] = (), only: Iterable[str] | None = None) -> None:
        """Write ``dst``: everything ``scheme`` quantizes except ``exclude`` (or only ``only``)."""
        raise NotImplementedError

    def variants(self, dst: Path) -> dict[str, Path]:
        """Files the last :meth:`quantize` of ``dst`` wrote beside it, each ``dst`` with one refinement
        left out, keyed by the refinement (ONNX: bias correction). The search judges them too and keeps
        the better, so a refinement never costs the gate's measure."""
        return {}

    def quantizable_nodes(self) -> list[tuple[str, str]]:
        """(name, op) of every node the quantizer can touch, in graph order."""
        raise NotImplementedError

    def graph(self) -> tuple[list[Node], list[str]]:
        """The nodes and the graph's output names, for the mixed-scale rule."""
        raise NotImplementedError

    def peaks(self, tensors: list[str]) -> tuple[dict[str, float], dict[str, "object"]]:
        """Float model, calibration samples: each of ``tensors``' peak |value| (float tensors that
        could be read), and the graph outputs' values stacked over the samples."""
        raise NotImplementedError

    def calibrations(self) -> list[str]:
        """The calibration methods this backend may range its activations with, the one in use first;
        where that one's whole-INT8 files miss the gate, the search measures the others. One method:
        nothing to compare."""
        return []

    def use_calibration(self, method: str) -> None:
        """Range the next files with ``method`` (one of :meth:`calibrations`)."""
        raise NotImplementedError

    def slow_in_int8(self) -> dict[str, str]:
        """Nodes whose INT8 kernels are often slower than float, with what they are (grouped
        convolutions on CPUs): the speed gate retries them in float."""
        return {}

    def runtime(self, scheme: str) -> str | None:
        """The runtime a scheme's file is made for where that is not the one timing it here."""
        return None


def backend_for(fmt: str) -> type[Backend]:
    """The registered backend class for a format name (``onnx``, ``tflite``)."""
    if fmt not in _REGISTRY and fmt in BUILTIN:
        importlib.import_module(f"edgedl.formats.{fmt}.quantize")
    if fmt not in _REGISTRY:
        raise KeyError(f"no quantization backend for {fmt}; there are {', '.join(BUILTIN)}")
    return _REGISTRY[fmt]


def registered() -> dict[str, type[Backend]]:
    for fmt in BUILTIN:
        backend_for(fmt)
    return dict(_REGISTRY)


def peaks_and_outputs(names: list[str], runs: list[list], outputs: list[str]) -> tuple[dict, dict]:
    """For :meth:`Backend.peaks`: from each run's values of ``names`` (one list per sample), the
    peak |value| of every float tensor read, and the graph outputs' values stacked over the runs."""
    import numpy as np

    floats = [i for i, _ in enumerate(names) if runs and all(np.issubdtype(np.asarray(r[i]).dtype, np.floating)
                                                             for r in runs)]
    peak = {names[i]: max(float(np.abs(np.asarray(r[i], dtype=np.float64)).max()) if np.size(r[i]) else 0.0
                          for r in runs) for i in floats}
    values = {names[i]: np.concatenate([np.asarray(r[i]) for r in runs]) for i in floats
              if names[i] in outputs and all(np.ndim(r[i]) >= 1 for r in runs)}
    return peak, values
