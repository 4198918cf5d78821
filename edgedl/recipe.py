"""Recipe schema: YAML validated by pydantic, stages as a union keyed on ``stage:``.

The CLI builds the same Recipe a user could write (``--print-recipe`` shows it). Validation
errors name the field path and the keys allowed there.
"""

from __future__ import annotations

import difflib
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgedl.errors import UsageError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


from edgedl.stages import STAGES  # noqa: E402  (imports every stage file: the registry below)

# Where artifacts run: each target is served by the export stage that declares it.
TARGET_EXPORT_STAGE = {cls.target: name for name, cls in STAGES.items() if cls.target}
Target = Enum("Target", {t: t for t in TARGET_EXPORT_STAGE}, type=str)
Target.__doc__ = "Where artifacts run. Each target needs its export stage in the recipe."


class ModelSpec(_Strict):
    """The model: a registry name, ``file.py:factory``, ``module:factory``, a checkpoint, a TorchScript
    file, a ``.pt2``, a Hugging Face folder or an ONNX file (docs/models.md)."""

    spec: str
    kwargs: dict[str, Any] = Field(default_factory=dict, description="architecture options")
    weights: Optional[str] = Field(None, description="weights the spec's architecture takes: a state_dict .pt, "
                                                     ".safetensors or an edgedl checkpoint (--model mynet.py:build "
                                                     "--weights mynet_state.pt)")
    input_shapes: dict[str, list[int]] = Field(
        default_factory=dict, description="ONNX models: fix dynamic input dimensions, {name: [1, 3, 224, 224]}")
    keep_dynamic: bool = Field(False, description="ONNX models: keep dynamic dimensions past the batch dynamic in "
                                                  "every artifact (calibrated on the data's shape; the files still "
                                                  "take any size), instead of fixing them from the data")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"spec": value} if isinstance(value, str) else value


class DataSpec(_Strict):
    """The data: ``digits[:CxHxW]``, ``digits:seq``, ``random:CxHxW``, ``path/to/file.npz``,
    ``images:FOLDER``, ``text:FILE`` or ``path/to/feeds.py:function`` (docs/models.md)."""

    spec: str
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"spec": value} if isinstance(value, str) else value


# The union of every registered stage's config, keyed on ``stage:``.
StageConfig = Annotated[Union[tuple(cls.Config for cls in STAGES.values())], Field(discriminator="stage")]


class Recipe(_Strict):
    """A run: the model, the data, the ordered stages and the targets."""

    name: str = "run"
    model: ModelSpec
    data: DataSpec
    seed: int = 0
    stages: list[StageConfig] = Field(min_length=1)
    targets: list[Target] = Field(default_factory=lambda: [Target.onnx])
    # The device profile the artifacts are for (edgedl devices list); None is the host running edgedl.
    device: Optional[str] = None

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: Optional[str]) -> Optional[str]:
        if value in (None, "host"):
            return value
        from edgedl.devices import get_profile

        try:
            get_profile(value)
        except UsageError as exc:  # an unknown name lists the known ones
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _sparsify_comes_last(self) -> "Recipe":
        names = [s.stage for s in self.stages]
        if "sparsify" in names:
            later = [n for n in names[names.index("sparsify") + 1 :] if n in ("train", "prune", "distill")]
            if later:
                raise ValueError(f"sparsify must come after {', '.join(later)}: training after it would refill "
                                 "the zeroed weights")
        return self

    @model_validator(mode="after")
    def _targets_have_exports(self) -> "Recipe":
        present = {s.stage for s in self.stages}
        for target in self.targets:
            needed = TARGET_EXPORT_STAGE[target.value]
            if needed not in present:
                raise ValueError(f"target '{target.value}' needs a '{needed}' stage in stages")
        return self


# ---- loading ------------------------------------------------------------------------------

def load_recipe(path: str | Path, overrides: list[str] | None = None, targets: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply ``key=value`` overrides, make ``targets`` its targets (:func:`retarget`),
    and validate it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"recipe not found: {path}")
    from edgedl._fs import read_yaml

    raw = read_yaml(path, "recipe")  # plain data: no python/object tags, no aliases
    if not isinstance(raw, dict):
        raise UsageError(f"recipe {path} must be a mapping with model, data and stages")
    if targets:  # first: --set may then name a stage the targets added (stages.build_engine.workspace_mb=512)
        retarget(raw, targets)
    apply_overrides(raw, overrides or [])
    return validate_recipe(raw, source=str(path))


def retarget(raw: dict, targets: list[str]) -> None:
    """Make ``targets`` the recipe's targets, in place: drop the stages that serve none of them (the
    LiteRT export for ``--targets onnx``) and add the export stages a target needs that the recipe
    lacks (``build_engine``, and ``export_onnx`` before it, for ``--targets tensorrt``), before the
    first stage that measures. Each stage says what it serves and requires (``Stage.serves``)."""
    unknown = [t for t in targets if t not in TARGET_EXPORT_STAGE]
    if unknown:
        raise UsageError(f"--targets: unknown target(s) {unknown}; known: {', '.join(sorted(TARGET_EXPORT_STAGE))}")
    stages = [s for s in raw.get("stages") or [] if not isinstance(s, dict) or s.get("stage") not in STAGES
              or not STAGES[s["stage"]].serves or set(STAGES[s["stage"]].serves) & set(targets)]

    def where(name: str) -> int | None:
        return next((i for i, s in enumerate(stages) if isinstance(s, dict) and s.get("stage") == name), None)

    def add(name: str, before: str | None = None) -> None:
        for needed in STAGES[name].requires:
            add(needed, before=name)
        if where(name) is not None:
            return
        at = next((i for i, s in enumerate(stages) if isinstance(s, dict) and s.get("stage") in STAGES
                   and STAGES[s["stage"]].measures), len(stages))
        if before is not None and where(before) is not None:  # a stage the recipe has needs this one first
            at = min(at, where(before))
        after = max([where(n) + 1 for n in STAGES[name].requires] + [0])  # never before what it needs
        stages.insert(max(at, after), {"stage": name})

    for target in targets:
        add(TARGET_EXPORT_STAGE[target])
    raw["stages"] = stages
    raw["targets"] = list(targets)


def validate_recipe(raw: dict, source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(f"{source}: {format_validation_error(exc)}") from None


def apply_overrides(raw: dict, overrides: list[str]) -> None:
    """Apply ``a.b.c=value`` overrides in place; a list index may be a number or a stage name.

    ``stages.train.epochs=3`` sets ``epochs`` of the first stage whose ``stage`` is ``train``.
    Values are parsed as YAML, so ``3`` is an int and ``[onnx]`` a list.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set '{item}' must look like key=value, e.g. stages.train.epochs=3")
        value = yaml.safe_load(text) if text else ""
        parts = key.split(".")
        node: Any = raw
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                index = _list_index(node, part, where)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if isinstance(node.get(part), str) and part in ("model", "data"):
                        node[part] = {"spec": node[part]}  # model=x, then model.kwargs.y=1
                    node = node.setdefault(part, {})
            else:
                raise UsageError(f"--set {key}: '{'.'.join(parts[:i])}' is a value, not a section")


def _list_index(node: list, part: str, where: str) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(node) <= index < len(node):
            raise UsageError(f"--set {where}: index out of range (the list has {len(node)} items)")
        return index
    for index, item in enumerate(node):
        if isinstance(item, dict) and item.get("stage") == part:
            return index
    names = [item.get("stage") for item in node if isinstance(item, dict)]
    raise UsageError(f"--set {where}: no stage '{part}' in the recipe; it has {names}")


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field.path: message (allowed keys: ...)``."""
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = sorted(_fields_at(Recipe, loc[:-1]))
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            guess = f"; did you mean '{hint[0]}'?" if hint else ""
            lines.append(f"{path}: unknown field{guess} (allowed keys: {', '.join(allowed)})")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                msg = "required field is missing"
            lines.append(f"{path}: {msg}")
    return "; ".join(lines)


def _fields_at(model: type[BaseModel], loc: list) -> list[str]:
    """Field names of the pydantic model reached by following ``loc`` from ``model``."""
    current: Any = model
    for part in loc:
        current = _unwrap(current, part)
        if current is None:
            return []
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _unwrap(annotation: Any, part: Any) -> Any:
    """One step down the type tree: a field of a model, an item of a list, a tagged union arm."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return _strip(field.annotation) if field else None
    origin = typing.get_origin(annotation)
    if origin in (list, tuple) and isinstance(part, int):
        return _strip(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        for arm in typing.get_args(annotation):
            arm = _strip(arm)
            tag = getattr(arm, "model_fields", {}).get("stage")
            if tag is not None and part in typing.get_args(tag.annotation):
                return arm
    return None


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _strip(args[0])
    return annotation


def recipe_from_flags(
    model: str,
    data: str,
    epochs: int | None = None,
    prune: float | None = None,
    distill: bool = False,
    quantize: str | None = None,
    targets: list[str] | None = None,
    qat: bool = False,
    input_shapes: dict[str, list[int]] | None = None,
    seed: int = 0,
    weights: str | None = None,
    device: str | None = None,
) -> Recipe:
    """The recipe the one-line ``edgedl compress --model ... --data ...`` form stands for.

    Every target gets its export stage: ``onnx`` export_onnx (and quantize), ``tensorrt`` the same
    plus build_engine (lint, on-device build plan, the engine where this machine is the device), ``tflite``
    export_tflite with fp32 and, for ``--quantize int8``, full-integer INT8 with float I/O inside
    the file (what apps that feed floats run fastest); fp16 and int8_dynamic map likewise. ``qat``
    adds quantization-aware training, which writes its own INT8 file for each target.
    """
    targets = targets or ["onnx"]
    known = sorted(TARGET_EXPORT_STAGE)
    unknown = [t for t in targets if t not in TARGET_EXPORT_STAGE]
    if unknown:
        raise UsageError(f"--targets: unknown target(s) {unknown}; known: {', '.join(known)}")
    stages: list[dict] = []
    if epochs:
        stages.append({"stage": "train", "epochs": epochs})
    if prune is not None:
        stages.append({"stage": "prune", "ratio": prune})
    if distill:
        stages.append({"stage": "distill"})
    if "onnx" in targets or "tensorrt" in targets:
        stages.append({"stage": "export_onnx"})
        if quantize:  # for a tensorrt target, quantize's scheme auto is TensorRT's symmetric Q/DQ
            stages.append({"stage": "quantize", "precision": quantize})
    if "tflite" in targets:
        tflite = {"int8": "int8_float_io", "fp16": "fp16", "int8_dynamic": "int8_dynamic"}
        stages.append({"stage": "export_tflite", "precisions": ["fp32"] + ([tflite[quantize]] if quantize else [])})
    if qat:  # after the float files it is judged against; before build_engine, which then takes its file
        stages.append({"stage": "qat"})
    if "tensorrt" in targets:
        stages.append({"stage": "build_engine"})
    stages += [{"stage": "evaluate"}, {"stage": "benchmark"}]
    from edgedl.models.spec import model_stem

    raw = {"name": model_stem(model), "model": {"spec": model, "input_shapes": input_shapes or {}, "weights": weights},
           "data": data, "seed": seed, "stages": stages, "targets": targets, "device": device}
    return validate_recipe(raw, source="flags")


def parse_input_shapes(items: list[str]) -> dict[str, list[int]]:
    """``name=1x3x224x224`` items to ``{name: [1, 3, 224, 224]}``."""
    shapes = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            shape = [int(d) for d in dims.split("x")]
        except ValueError:
            shape = []
        if not sep or not name or not shape or min(shape) < 1:
            raise UsageError(f"--input-shape '{item}' must look like name=1x3x224x224")
        shapes[name] = shape
    return shapes


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
