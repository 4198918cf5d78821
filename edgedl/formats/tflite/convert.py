"""PyTorch -> LiteRT through litert-torch (no TensorFlow); quantization is in ``quantize.py``.

With ``quantize.py``, the only module that calls ``litert_torch``. The onnx2tf route is not
used: it pins numpy 1.x and exact TensorFlow versions, and users report exports that silently
produce nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path

import numpy as np

from edgedl.errors import EdgedlError, MissingDependencyError


@contextlib.contextmanager
def quiet():
    """Both libraries narrate their steps, partly from C++ straight to file descriptors 1 and 2;
    keep edgedl's output to its own lines. Errors still surface as exceptions."""
    from edgedl.runtime.litert import native_output_silenced

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with native_output_silenced(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        absl.setLevel(level)


def convert(module, sample: np.ndarray, path: Path) -> None:
    """Convert a torch module to an fp32 .tflite file, traced with ``sample`` (batch 1)."""
    try:
        with quiet():  # importing it prints native start-up notices (oneDNN, torchao kernels)
            import litert_torch
    except ImportError:
        raise MissingDependencyError("litert-torch", "litert-convert", "TFLite export") from None
    import torch

    try:
        with quiet():
            edge = litert_torch.convert(module.eval(), (torch.from_numpy(sample),))
            edge.export(str(path))
    except Exception as exc:
        text = str(exc)
        match = re.search(r"Lowering not found: (\S+)", text)
        if match:
            op = match.group(1)
            where = locate_op(module, sample, op)
            place = f" in module '{where[0]}' ({where[1]})" if where else ""
            raise EdgedlError(f"litert-torch cannot convert op {op}{place}: it has no LiteRT lowering; replace it "
                              "with supported ops or move it out of the exported model") from None
        first = (text.strip().splitlines() or [type(exc).__name__])[0]
        raise EdgedlError(f"litert-torch cannot convert the model: {first} (rerun with --debug for the full trace)") from None


def locate_op(module, sample: np.ndarray, op: str) -> tuple[str, str] | None:
    """The module path and class holding the first node that calls ``op`` (e.g. aten.bucketize.Tensor),
    from torch.export's module stack; None if it cannot be found."""
    import torch

    try:
        program = torch.export.export(module.eval(), (torch.from_numpy(sample),))
        graphs = [program.graph, program.run_decompositions().graph]
    except Exception:
        return None
    for graph in graphs:
        for node in graph.nodes:
            if node.op == "call_function" and str(node.target) == op:
                stack = node.meta.get("nn_module_stack") or {}
                if stack:
                    path, cls = list(stack.values())[-1]
                    return path or "(top level)", getattr(cls, "__name__", str(cls)).rsplit(".", 1)[-1]
                return "(top level)", type(module).__name__
    return None
