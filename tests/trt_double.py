"""A test double of TensorRT's Python module, for the calls edgedl makes that cannot run here.

TensorRT cannot be installed on this machine (its wheels download from NVIDIA's host). This double is
not TensorRT: it has the names edgedl's loader and runner use (``Runtime``, ``Logger``,
``TensorIOMode``, ``OnnxParserFlag``, ``nptype``), spelt as in TensorRT's Python bindings
(``python/src/infer/pyCore.cpp``: ``engine_host_code_allowed``, ``DLA_core``, ``num_DLA_cores``), and
records every attribute set and call on a runtime, in order, so that a test can assert what edgedl
asks of TensorRT and when (host code allowed before deserializing, the DLA core on the runtime).
"""

from __future__ import annotations

import enum
import types

import numpy as np


class _Logger:
    WARNING, ERROR, INFO, VERBOSE = 2, 1, 3, 4

    def __init__(self, severity=2):
        self.severity = severity


class _IOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class _ParserFlag(enum.IntEnum):
    NATIVE_INSTANCENORM = 0


class _Engine:
    """One input ``input`` (1x1x8x8 float32) and one output ``logits`` (1x10)."""

    tensors = {"input": ((1, 1, 8, 8), _IOMode.INPUT), "logits": ((1, 10), _IOMode.OUTPUT)}
    num_io_tensors = 2

    def get_tensor_name(self, i):
        return list(self.tensors)[i]

    def get_tensor_mode(self, name):
        return self.tensors[name][1]

    def get_tensor_shape(self, name):
        return self.tensors[name][0]

    def get_tensor_dtype(self, name):
        return "float32"

    def create_execution_context(self):
        return types.SimpleNamespace()


class _Runtime:
    """Records ``(attribute, value)`` for each attribute set and ``("deserialize_cuda_engine", n bytes)``."""

    def __init__(self, module, logger):
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "num_DLA_cores", module.dla_cores)
        module.runtimes.append(self)
        object.__setattr__(self, "calls", [])

    def __setattr__(self, name, value):
        self.calls.append((name, value))
        object.__setattr__(self, name, value)

    def deserialize_cuda_engine(self, data: bytes):
        self.calls.append(("deserialize_cuda_engine", len(data)))
        version_compatible = self._module.version_compatible_plans
        if version_compatible and not getattr(self, "engine_host_code_allowed", False):
            return None  # what TensorRT does with a plan that embeds its lean runtime
        return _Engine()


def make(version: str = "10.3.0.30", dla_cores: int = 0, version_compatible_plans: bool = False):
    """A ``tensorrt`` module double. ``version_compatible_plans``: the plans it is given embed a lean
    runtime, so it deserializes them only with host code allowed (as TensorRT does)."""
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    module.dla_cores = dla_cores
    module.version_compatible_plans = version_compatible_plans
    module.runtimes = []
    module.Logger = _Logger
    module.TensorIOMode = _IOMode
    module.OnnxParserFlag = _ParserFlag
    module.nptype = lambda dtype: np.dtype(dtype).type
    module.Runtime = lambda logger: _Runtime(module, logger)
    return module
