from pathlib import Path

import pytest
import yaml

from edgedl.errors import UsageError
from edgedl.recipe import Recipe, apply_overrides, load_recipe, recipe_to_yaml, validate_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def base() -> dict:
    return {"model": "resnet8", "data": "digits",
            "stages": [{"stage": "train", "epochs": 2}, {"stage": "export_onnx"}, {"stage": "evaluate"}]}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_bundled_recipe_validates_and_round_trips(path):
    recipe = load_recipe(path)
    again = validate_recipe(yaml.safe_load(recipe_to_yaml(recipe)))
    assert again == recipe


def test_bundled_recipes_exist():
    assert "quickstart.yaml" in [p.name for p in RECIPES]


def test_strings_expand_to_specs_and_defaults_fill_in():
    r = validate_recipe(base())
    assert r.model.spec == "resnet8" and r.model.kwargs == {} and r.data.spec == "digits"
    assert [s.stage for s in r.stages] == ["train", "export_onnx", "evaluate"]
    assert r.stages[0].epochs == 2 and r.stages[0].lr == 3e-3 and r.stages[1].opset is None
    assert [t.value for t in r.targets] == ["onnx"]


def test_misspelt_field_names_the_path_the_allowed_keys_and_a_guess():
    raw = base()
    raw["stages"][0]["epoch"] = 3
    with pytest.raises(UsageError) as err:
        validate_recipe(raw, source="r.yaml")
    msg = str(err.value)
    assert msg.startswith("r.yaml: stages.0.train.epoch: unknown field; did you mean 'epochs'?")
    assert "allowed keys: batch_size, epochs, label_smoothing, lr, optimizer, stage, weight_decay" in msg


def test_misspelt_top_level_and_nested_model_field():
    raw = base()
    raw["modle"] = "x"
    raw["model"] = {"spec": "resnet8", "kwarg": {}}
    with pytest.raises(UsageError) as err:
        validate_recipe(raw)
    msg = str(err.value)
    assert "modle: unknown field; did you mean 'model'? (allowed keys: data, device, model, name, seed, stages, targets)" in msg
    assert "model.kwarg: unknown field; did you mean 'kwargs'? (allowed keys: input_shapes, keep_dynamic, kwargs, spec, weights)" in msg


def test_mistyped_and_out_of_range_fields():
    raw = base()
    raw["stages"][0]["epochs"] = "many"
    raw["stages"][1]["opset"] = 9
    with pytest.raises(UsageError) as err:
        validate_recipe(raw)
    assert "stages.0.train.epochs: Input should be a valid integer" in str(err.value)
    assert "stages.1.export_onnx.opset: Input should be greater than or equal to 13" in str(err.value)


def test_unknown_stage_lists_the_known_ones():
    raw = base()
    raw["stages"].append({"stage": "distil"})
    with pytest.raises(UsageError, match="'benchmark', 'build_engine', 'distill', 'evaluate', 'export_onnx', 'export_tflite', 'prune', 'qat', 'quantize', 'sparsify', 'train'"):
        validate_recipe(raw)


def test_a_target_needs_its_export_stage():
    raw = base()
    raw["stages"] = [{"stage": "train"}]
    with pytest.raises(UsageError, match="target 'onnx' needs a 'export_onnx' stage"):
        validate_recipe(raw)


def test_missing_required_fields():
    with pytest.raises(UsageError, match="model: required field is missing"):
        validate_recipe({"data": "digits", "stages": [{"stage": "train"}], "targets": []})


def test_overrides_by_index_by_stage_name_and_into_a_string_spec():
    raw = base()
    apply_overrides(raw, ["stages.0.lr=0.1", "stages.export_onnx.opset=17", "model.kwargs.width=8",
                          "seed=7", "targets=[onnx]"])
    r = validate_recipe(raw)
    assert r.stages[0].lr == 0.1 and r.stages[1].opset == 17 and r.seed == 7
    assert r.model.spec == "resnet8" and r.model.kwargs == {"width": 8}


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs", "must look like key=value"),
        ("stages.9.epochs=1", "index out of range"),
        ("stages.prune.ratio=0.5", "no stage 'prune' in the recipe"),
        ("stages.0.epochs.x=1", "'stages.0.epochs' is a value, not a section"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(UsageError, match=message):
        apply_overrides(base(), [override])


def test_missing_and_malformed_recipe_files(tmp_path):
    with pytest.raises(UsageError, match="recipe not found: .*nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(UsageError, match="cannot read recipe"):
        load_recipe(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(UsageError, match="must be a mapping"):
        load_recipe(bad)


def test_schema_forbids_extra_keys_everywhere():
    # Every pydantic model in the schema is strict, so no misspelling passes silently.
    for model in (Recipe, *[a for a in Recipe.model_fields["stages"].annotation.__args__[0].__args__[0].__args__]):
        assert model.model_config.get("extra") == "forbid"


def test_targets_with_a_recipe_add_and_drop_the_targets_stages():
    """`compress RECIPE --targets X`: X are the run's targets, and the stages follow (the README says the
    flags override the recipe): the LiteRT export goes for onnx alone; tensorrt adds build_engine after
    the ONNX quantize; a target's missing export goes before the stages that measure."""
    quickstart = RECIPES[[p.name for p in RECIPES].index("quickstart.yaml")]
    names = lambda r: [s.stage for s in r.stages]  # noqa: E731
    onnx_only = load_recipe(quickstart, targets=["onnx"])
    assert "export_tflite" not in names(onnx_only) and [t.value for t in onnx_only.targets] == ["onnx"]
    trt = load_recipe(quickstart, targets=["tensorrt"])
    assert names(trt) == ["train", "prune", "distill", "export_onnx", "quantize", "build_engine", "evaluate",
                          "benchmark"]
    tflite = load_recipe(quickstart, targets=["tflite"])
    assert "quantize" not in names(tflite) and "export_onnx" not in names(tflite)  # they serve ONNX and TensorRT
    raw = {"model": "mlp", "data": "digits", "stages": [{"stage": "train"}, {"stage": "evaluate"}]}
    from edgedl.recipe import retarget

    retarget(raw, ["tensorrt"])
    assert [s["stage"] for s in raw["stages"]] == ["train", "export_onnx", "build_engine", "evaluate"]
    with pytest.raises(UsageError, match="unknown target"):
        retarget(raw, ["coreml"])
    # a required stage goes before the stage that needs it, and never after a measuring stage it feeds
    for stages, want in ((["train", "evaluate", "export_onnx", "benchmark"],
                          ["train", "evaluate", "export_onnx", "build_engine", "benchmark"]),
                         (["train", "build_engine", "evaluate"], ["train", "export_onnx", "build_engine", "evaluate"])):
        raw = {"stages": [{"stage": s} for s in stages]}
        retarget(raw, ["tensorrt"])
        assert [s["stage"] for s in raw["stages"]] == want
    # --set may name a stage --targets adds
    trt = load_recipe(quickstart, ["stages.build_engine.workspace_mb=512"], targets=["tensorrt"])
    assert next(s for s in trt.stages if s.stage == "build_engine").workspace_mb == 512
