"""Recipe stages. Importing this package registers every stage class."""

from edgedl.stages import (  # noqa: F401
    benchmark, distill, evaluate, export_onnx, export_tflite, prune, quantize, sparsify, train)
from edgedl.stages.base import STAGES, RunContext, Stage, stage_for

__all__ = ["STAGES", "RunContext", "Stage", "stage_for"]
