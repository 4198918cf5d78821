"""Recipe stages, one file each. Importing this package imports every module in the folder,
which registers each stage with its config class: a new stage is one new file."""

import importlib
import pkgutil

from edgedl.stages.base import STAGES, RunContext, Stage, StageConfig, stage_for

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STAGES", "RunContext", "Stage", "StageConfig", "stage_for"]
