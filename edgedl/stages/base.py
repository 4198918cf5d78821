"""The Stage contract: each stage takes the run so far and adds artifacts or metrics to it.

A stage is one file under ``edgedl/stages/``: its config class (a :class:`StageConfig` with a
``stage: Literal[name]`` field) and its :class:`Stage` subclass, which registers itself by
``name`` (as Olive's passes do in ``__init_subclass__``). The recipe's union of stage configs is
built from that registry, and ``edgedl.stages`` imports every module in the folder, so adding a
stage touches no other file.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from edgedl.artifacts import BENCH_METRICS, checkpoint_sidecar, example_inputs, task_of, with_tokenizer_beside
from edgedl.data import Dataset
from edgedl.errors import UsageError

if TYPE_CHECKING:  # the recipe builds its stage union from this registry: no import back
    from edgedl.recipe import Recipe
    from edgedl.run import RunDir

STAGES: dict[str, type["Stage"]] = {}


class StageConfig(BaseModel):
    """Base of every stage's config: strict (a misspelt field is an error naming it)."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class RunContext:
    """What the stages share: the recipe, the run folder, the data and the current torch model."""

    recipe: "Recipe"
    run: "RunDir"
    dataset: Dataset
    model: Any = None  # edgedl.models.LoadedModel, the model later stages compress or export
    model_artifact: str | None = None  # the manifest name of the artifact holding that model
    baseline_artifact: str | None = None  # the model before the first compression stage
    console: Any = None
    progress: bool = True
    trust_model_code: bool = False  # the user said to run code that files of this run name
    constraints: dict = None  # what the recipe's targets ask of artifacts (Stage.constraints), merged
    device: Any = None  # edgedl.devices.Device, resolved once per run (None: this host)

    def __post_init__(self):
        self.constraints = dict(self.constraints or {})
        if self.device is None:
            from edgedl.devices import Device

            self.device = Device.resolve(self.recipe.device)

    @property
    def stem(self) -> str:
        """A file-name stem for this model's artifacts, e.g. ``resnet8``."""
        from edgedl.models.spec import model_stem

        return model_stem(self.recipe.model.spec)

    @property
    def factory(self) -> str | None:
        """The model the user named, when its code runs to rebuild a checkpoint of this run (a factory,
        a TorchScript file, a Hugging Face folder): they named it, and it was checked when it opened."""
        from edgedl.models.importers import importer_for

        spec = self.recipe.model.spec
        return spec if importer_for(spec).name not in ("registry", "checkpoint", "onnx") else None

    @property
    def model_info(self) -> dict | None:
        """What the model's folder says beyond its weights (a Hugging Face task, tokenizer, image
        preprocessing), for the sidecars. Its tokenizer file is copied into the run once, beside the
        artifacts, and named relative to them, so the run folder travels to a device whole."""
        info = getattr(self.model, "hf", None)
        if not info:
            return None
        self.model.hf = with_tokenizer_beside(info, self.run.artifacts_dir, self.stem)  # once: named relative after
        return self.model.hf

    @property
    def task(self) -> str:
        """What the model does: ``classification``, ``embedding`` (feature extraction) or ``reconstruction``."""
        return task_of(self.model_info)

    def require_torch(self, stage: str) -> None:
        if self.model is None:
            raise UsageError(f"stage '{stage}' needs a PyTorch model; '{self.recipe.model.spec}' is an "
                             "ONNX file, which can be quantized, evaluated and benchmarked but not trained, "
                             "pruned or distilled")

    def save_model(self, suffix: str, stage: str, **extra: Any) -> dict:
        """Save the current torch model as a checkpoint artifact and make it the current one."""
        from edgedl.formats.torch.pruning import count_macs_params
        from edgedl.models import save_checkpoint

        name = f"{self.stem}{suffix}.pt"
        tmp = self.run.tempdir() / name
        save_checkpoint(tmp, self.model.module, self.model.arch, data=self.dataset.name,
                        seed=self.recipe.seed, stage=stage, input_shape=list(self.dataset.input_shape))
        example = example_inputs(self.model.inputs) if self.model.inputs else None
        macs, params = count_macs_params(self.model.module, self.dataset.input_shape, example)
        record = self.run.add_artifact(
            tmp, name=name, format="torch", precision="fp32", stage=stage, parent=self.model_artifact,
            metrics={"params": params, "macs": macs},
            sidecar=checkpoint_sidecar(self.model.module, self.dataset, self.recipe.model.spec, self.model.inputs,
                                       self.model_info),
            notes={key: "torch checkpoints are not benchmarked (the exported files are what a device runs); "
                        "their accuracy is measured through edgedl.runtime's torch backend" for key in BENCH_METRICS},
            extra=extra,
        )
        self.model_artifact = name
        return record

    def litert_sidecar(self, path, quantizer: str | None) -> dict:
        """The sidecar of a .tflite file litert-torch converted from the current model: its own tensors
        (int8 inputs of a full-integer file among them) under the model's names, NCHW as litert-torch
        keeps it."""
        from edgedl.artifacts import build_sidecar, runner_tensors, under_model_names
        from edgedl.runtime.sidecar import read_sidecar

        model_io = read_sidecar(self.run.artifact_path(self.run.artifact(self.model_artifact))) or {}
        inputs, outputs = runner_tensors(path)
        return build_sidecar(self.dataset, under_model_names(inputs, model_io.get("inputs", [])),
                             under_model_names(outputs, model_io.get("outputs", [])), known_layout=True,
                             model=self.model_info, source={"model": self.recipe.model.spec, "artifact": self.model_artifact},
                             converter="litert-torch", quantizer=quantizer)

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

    def load_checkpoint(self, record: dict):
        """A checkpoint of this run, rebuilt with the factory the user named (if any)."""
        from edgedl.models import load_checkpoint

        return load_checkpoint(self.run.artifact_path(record), factory=self.factory,
                               trust_model_code=self.trust_model_code)

    def log(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message)


class Stage:
    """One step of a run. Subclasses set ``name`` and ``Config`` and implement :meth:`run`.

    ``target``: the recipe target this stage's artifacts serve (an export stage), if any.
    ``serves``: the targets whose artifacts the stage makes or works on (empty: every target's, as
        training does); ``--targets`` drops a stage that serves none of the targets asked for.
    ``requires``: the stages that must run before this one (added with it by ``--targets``).
    ``measures``: the stage measures what the others made (evaluate, benchmark): added stages go
        before the first of these.
    ``needs_torch``: the stage works on the PyTorch model (refused before any work for an ONNX model);
    a string says why, for the message.
    ``modules``: the kinds of torch model such a stage takes (an importer's ``module``): ``python`` (the
    model's class), ``pickle`` (an unpickled module), ``graph`` (a torch.export graph), ``script``.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[StageConfig]]
    target: ClassVar[str | None] = None
    serves: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()
    measures: ClassVar[bool] = False
    needs_torch: ClassVar[bool | str] = False
    modules: ClassVar[tuple[str, ...]] = ("python", "pickle")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.name:
            return
        if cls.name in STAGES:
            raise ValueError(f"stage '{cls.name}' is defined twice")
        tag = cls.Config.model_fields.get("stage")
        if tag is None or typing.get_args(tag.annotation) != (cls.name,):
            raise TypeError(f"{cls.__name__}.Config needs a field stage: Literal['{cls.name}']")
        STAGES[cls.name] = cls

    def __init__(self, config: Any):
        self.config = config

    def constraints(self, recipe: "Recipe") -> dict:
        """What this stage's target asks of the other stages' artifacts, e.g. ``{"onnx_opset": (low,
        high, why)}``; merged into ``RunContext.constraints`` before any work."""
        return {}

    def check(self, recipe: "Recipe", constraints: dict) -> None:
        """Refuse (UsageError) what this stage would refuse later, before any data or model is loaded."""

    def run(self, ctx: RunContext) -> None:  # pragma: no cover - contract
        raise NotImplementedError


def stage_for(config: Any) -> Stage:
    """Instantiate the stage that implements a validated stage config."""
    cls = STAGES.get(getattr(config, "stage", None))
    if cls is None:
        raise UsageError(f"stage '{getattr(config, 'stage', config)}' has no implementation; known: "
                         f"{', '.join(sorted(STAGES))}")
    return cls(config)
