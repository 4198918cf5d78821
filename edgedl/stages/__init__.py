"""Recipe stages. Importing this package registers every stage class."""

from edgedl.stages import benchmark, distill, evaluate, export_onnx, prune, quantize, sparsify, train  # noqa: F401
from edgedl.stages.base import STAGES, RunContext, Stage, stage_for

__all__ = ["STAGES", "RunContext", "Stage", "stage_for"]
