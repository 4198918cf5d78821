"""The Stage contract: each stage takes the run so far and adds artifacts or metrics to it.

A stage class registers itself by its ``name`` (as Olive's passes do in ``__init_subclass__``);
the recipe's ``stage:`` key picks it.
"""

from __future__ import annotations

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
    baseline_artifact: str | None = None  # the model before the first compression stage
    console: Any = None
    progress: bool = True

    @property
    def stem(self) -> str:
        """A file-name stem for this model's artifacts, e.g. ``resnet8``."""
        from edgedl.models.spec import model_stem

        return model_stem(self.recipe.model.spec)

    def require_torch(self, stage: str) -> None:
        if self.model is None:
            raise UsageError(f"stage '{stage}' needs a PyTorch model; '{self.recipe.model.spec}' is an "
                             "ONNX file, which can be quantized, evaluated and benchmarked but not trained, "
                             "pruned or distilled")

    def save_model(self, suffix: str, stage: str, **extra: Any) -> dict:
        """Save the current torch model as a checkpoint artifact and make it the current one."""
        from edgedl.models import save_checkpoint
        from edgedl.pruning import count_macs_params
        from edgedl.stages.benchmark import BENCH_METRICS

        name = f"{self.stem}{suffix}.pt"
        tmp = self.run.tempdir() / name
        save_checkpoint(tmp, self.model.module, self.model.arch, data=self.dataset.name,
                        seed=self.recipe.seed, stage=stage, input_shape=list(self.dataset.input_shape))
        macs, params = count_macs_params(self.model.module, self.dataset.input_shape)
        record = self.run.add_artifact(
            tmp, name=name, format="torch", precision="fp32", stage=stage, parent=self.model_artifact,
            metrics={"params": params, "macs": macs}, sidecar=self._checkpoint_sidecar(),
            notes={key: "torch checkpoints are not benchmarked (the exported files are what a device runs); "
                        "their accuracy is measured through edgedl.runtime's torch backend" for key in BENCH_METRICS},
            extra=extra,
        )
        self.model_artifact = name
        return record

    def _checkpoint_sidecar(self) -> dict:
        """The same sidecar as an export's, so that edgedl.runtime's torch backend (the reference)
        feeds and post-processes a checkpoint exactly as it does the exported files."""
        import torch

        from edgedl.stages.export_onnx import build_sidecar

        module = self.model.module
        training = module.training
        try:
            with torch.no_grad():
                out = module.eval()(torch.zeros((1, *self.dataset.input_shape)))
        finally:
            module.train(training)
        inputs = [{"name": "input", "shape": [None, *self.dataset.input_shape], "dtype": "float32"}]
        outputs = [{"name": "logits" if self.dataset.num_classes else "output", "shape": [None, *out.shape[1:]],
                    "dtype": "float32"}]
        return build_sidecar(self, inputs, outputs, known_layout=True, source={"model": self.recipe.model.spec})

    def ensure_model_artifact(self) -> str:
        """The current model's checkpoint artifact, saving the loaded model first if it has none."""
        self.require_torch("export_onnx")
        if self.model_artifact is None:
            self.save_model("", stage="load", source={"spec": self.recipe.model.spec})
        return self.model_artifact

    def start_compression(self) -> None:
        """Remember the model before the first compression stage (the default teacher)."""
        if self.baseline_artifact is None:
            self.baseline_artifact = self.ensure_model_artifact()

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
