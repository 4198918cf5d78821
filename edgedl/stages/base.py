"""The Stage contract: each stage takes the run so far and adds artifacts or metrics to it.

A stage class registers itself by its ``name`` (as Olive's passes do in ``__init_subclass__``);
the recipe's ``stage:`` key picks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from edgedl.data import Dataset
from edgedl.errors import UsageError
from edgedl.recipe import Recipe
from edgedl.run import RunDir

STAGES: dict[str, type["Stage"]] = {}


@dataclass
class RunContext:
    """What the stages share: the recipe, the run folder, the data and the current torch model."""

    recipe: Recipe
    run: RunDir
    dataset: Dataset
    model: Any = None  # edgedl.models.LoadedModel, the model later stages compress or export
    model_artifact: str | None = None  # the manifest name of the artifact holding that model
    console: Any = None
    progress: bool = True

    @property
    def stem(self) -> str:
        """A file-name stem for this model's artifacts, e.g. ``resnet8``."""
        spec = self.recipe.model.spec
        base = spec.rpartition(":")[2] if ":" in spec else spec.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", base) or "model"

    def log(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message)


class Stage:
    """One step of a run. Subclasses set ``name`` and implement :meth:`run`."""

    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.name in STAGES:
                raise ValueError(f"stage '{cls.name}' is defined twice")
            STAGES[cls.name] = cls

    def __init__(self, config: Any):
        self.config = config

    def run(self, ctx: RunContext) -> None:  # pragma: no cover - contract
        raise NotImplementedError


def stage_for(config: Any) -> Stage:
    """Instantiate the stage that implements a validated stage config."""
    cls = STAGES.get(config.stage)
    if cls is None:
        raise UsageError(f"stage '{config.stage}' has no implementation; known: {', '.join(sorted(STAGES))}")
    return cls(config)
