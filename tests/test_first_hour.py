"""A new user's first hour (issue 9): each test here failed on the code before it.

Real models and data throughout: a tiny real conv net exported by torch, ONNX graphs built with
onnx.helper for multi-input and dynamic shapes, scikit-learn's digits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import edgedl.runtime as rt
from edgedl import api
from edgedl.errors import TrustError, UsageError
from edgedl.recipe import recipe_from_flags

ROOT = Path(__file__).resolve().parents[1]
EDGEDL = [sys.executable, "-m", "edgedl"]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEDL, *args], capture_output=True, text=True, cwd=cwd)


def multi_input_onnx(path: Path) -> Path:
    """A streaming-style model: input (N, 4) float, state (2, 1, 3) float, sr () int64 -> (N, 3)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["mm"]),
        helper.make_node("ReduceSum", ["state"], ["s"], keepdims=0),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["s", "srf"], ["ss"]),
        helper.make_node("Add", ["mm", "ss"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "stream", [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, 3]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
    ], [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    return path


def dynamic_hw_onnx(tiny_conv_onnx: Path, path: Path) -> Path:
    """The tiny conv net with its height and width made dynamic (N x 1 x H x W)."""
    import onnx

    model = onnx.load(str(tiny_conv_onnx))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis, name in ((2, "H"), (3, "W")):
        dims[axis].Clear()
        dims[axis].dim_param = name
    del model.graph.value_info[:]
    onnx.save(model, str(path))
    return path


# ---- 1. calibration takes what the data has ---------------------------------------------------

def test_latency_study_from_the_readme_calibrates_on_what_random_data_has(tmp_path):
    """`edgedl compress --model resnet8 --data random:... --prune 0.5 --quantize int8` used to fail
    asking for 256 calibration samples from 64."""
    recipe = recipe_from_flags("resnet8", "random:1x8x8", prune=0.5, quantize="int8")
    # the benchmark stage is the quickstart fixture's to test; benchmarks/readme_commands.py runs the whole line
    recipe.stages = [s for s in recipe.stages if s.stage != "benchmark"]
    result = api.compress(recipe, out=tmp_path / "run", progress=False)
    assert result.status == "complete"
    (q,) = [a for a in result.artifacts.values() if a["produced_by"] == "quantize"]
    calib = q["quantization"]["calibration"]
    assert calib["samples"] == 64 and calib["requested"] == 256 and "random data" in calib["warning"]
    assert q["quantization"]["quality_metric"] == "top1_agreement"
    assert result.artifact_path(q["name"]).is_file()


def test_a_small_unlabelled_set_calibrates_on_most_of_it_and_warns(tmp_path, tiny_conv_onnx):
    np.savez(tmp_path / "mine.npz", x=np.random.default_rng(0).standard_normal((24, 1, 8, 8)).astype(np.float32))
    recipe = recipe_from_flags(str(tiny_conv_onnx), str(tmp_path / "mine.npz"), quantize="int8")
    recipe.stages = [s for s in recipe.stages if s.stage != "benchmark"]
    result = api.compress(recipe, out=tmp_path / "run", progress=False)
    (q,) = [a for a in result.artifacts.values() if a["produced_by"] == "quantize"]
    calib = q["quantization"]["calibration"]
    # 24 unlabelled samples: no test split is kept apart (no accuracy to report), 4 held out for agreement.
    assert calib["samples"] == 20 and "only 20 training samples" in calib["warning"]
    assert any("20 samples calibrate, 4 are held out" in n for n in result.manifest["notes"])


# ---- 2. the one-line form reaches TFLite ------------------------------------------------------

@pytest.mark.parametrize("targets, stages", [
    (["tflite"], ["export_tflite", "evaluate", "benchmark"]),
    (["onnx", "tflite"], ["export_onnx", "quantize", "export_tflite", "evaluate", "benchmark"]),
])
def test_one_line_form_builds_every_targets_export(targets, stages):
    recipe = recipe_from_flags("mlp", "digits", quantize="int8", targets=targets)
    assert [s.stage for s in recipe.stages] == stages
    (tflite,) = [s for s in recipe.stages if s.stage == "export_tflite"]
    assert tflite.precisions == ["fp32", "int8_float_io"]


def test_one_line_form_names_an_unknown_target():
    r = cli("compress", "--model", "mlp", "--data", "digits", "--targets", "onnx,tensorrtx", "--print-recipe")
    assert r.returncode == 2 and "unknown target(s) ['tensorrtx']" in r.stderr


# ---- 3. multi-input models are fed by input name ----------------------------------------------

def test_bench_feeds_a_multi_input_model_from_arrays_named_after_its_inputs(tmp_path):
    model = multi_input_onnx(tmp_path / "stream.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "feed.npz", input=rng.standard_normal((40, 4)).astype(np.float32),
             state=np.ones((2, 1, 3), np.float32), sr=np.array(16000, np.int64))
    result = api.bench(model, data=str(tmp_path / "feed.npz"), runs=5, warmup=1, min_seconds=0, batch=2)
    assert result["conditions"]["input_shapes"] == {"input": [2, 4], "state": [2, 1, 3], "sr": []}
    # One whole feed per sample: an array with one more dimension than its input.
    np.savez(tmp_path / "steps.npz", input=rng.standard_normal((6, 1, 4)).astype(np.float32),
             state=np.zeros((6, 2, 1, 3), np.float32), sr=np.array(8000, np.int64))
    result = api.bench(model, data=str(tmp_path / "steps.npz"), runs=3, warmup=0, min_seconds=0)
    assert result["conditions"]["input_shapes"]["state"] == [2, 1, 3]


def test_feeds_keep_integer_dtypes_and_apply_constants():
    from edgedl.data.feeds import resolve
    from edgedl.runtime import TensorInfo

    inputs = [TensorInfo("input", ("N", 4), "float32"), TensorInfo("sr", (), "int64")]
    samples = resolve({"input": np.zeros((5, 4), np.float64), "sr": np.array(16000)}, inputs)
    feed, n = samples.batch(3, 4)
    assert n == 2 and feed["input"].shape == (2, 4) and feed["input"].dtype == np.float32
    assert feed["sr"].dtype == np.int64 and int(feed["sr"]) == 16000
    with pytest.raises(UsageError, match="array 'input' has shape \\[5, 3\\]"):
        resolve({"input": np.zeros((5, 3), np.float32), "sr": np.array(1)}, inputs)
    with pytest.raises(UsageError, match="missing \\['sr'\\]"):
        resolve({"input": np.zeros((5, 4), np.float32)}, inputs)


def test_a_multi_input_model_quantizes_with_named_calibration_and_agreement(tmp_path):
    model = multi_input_onnx(tmp_path / "stream.onnx")
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "feed.npz", input=rng.standard_normal((60, 4)).astype(np.float32),
             state=np.ones((2, 1, 3), np.float32), sr=np.array(2, np.int64))
    recipe = recipe_from_flags(str(model), str(tmp_path / "feed.npz"), quantize="int8")
    recipe.stages = [s for s in recipe.stages if s.stage != "benchmark"]
    for s in recipe.stages:
        if s.stage == "quantize":
            s.speed_gate = False
    result = api.compress(recipe, out=tmp_path / "run", progress=False)
    (q,) = [a for a in result.artifacts.values() if a["produced_by"] == "quantize"]
    assert q["quantization"]["calibration"]["samples"] == 51
    # (N, 3) outputs read as three classes: quality is top-1 agreement with the float file on held-out samples
    assert q["quantization"]["quality_metric"] == "top1_agreement" and q["quantization"]["quality"] >= 0.9


# ---- 4. opening a checkpoint never runs code it names -----------------------------------------

def _checkpoint_naming(path: Path, spec: str, kwargs: dict) -> Path:
    torch.save({"edgedl_checkpoint": 2, "arch": {"spec": spec, "kwargs": kwargs}, "structure": None,
                "state_dict": {}, "meta": {"input_shape": [1, 8, 8]}}, path)
    return path


def test_a_checkpoint_naming_os_system_does_not_run_it(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = _checkpoint_naming(tmp_path / "evil.pt", "os:system", {"command": f"touch {marker}"})
    with pytest.raises(TrustError, match="--trust-model-code"):
        rt.load(ckpt)
    r = cli("bench", str(ckpt), "--runs", "1")
    assert r.returncode == 2 and "does not run code a file names" in r.stderr and "Traceback" not in r.stderr
    r = cli("inspect", str(ckpt))  # inspect reads it without building the architecture
    assert r.returncode == 0 and "os:system" in r.stdout and "runs code" in r.stdout
    r = cli("compress", "--model", str(ckpt), "--data", "digits", "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_factory_checkpoint_runs_only_when_trusted_or_named(tmp_path):
    src = tmp_path / "nets" / "mynet.py"
    src.parent.mkdir()
    src.write_text("import torch\n\ndef build(num_classes=10, in_channels=1, input_size=(8, 8)):\n"
                   "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64 * in_channels, num_classes))\n")
    out = tmp_path / "ckpts" / "net.pt"
    out.parent.mkdir()
    api.train(f"{src}:build", "digits", out, epochs=1, progress=False)
    payload = torch.load(out, weights_only=True)
    assert payload["arch"]["spec"] == "../nets/mynet.py:build"  # relative: no trainer's folders inside
    with pytest.raises(TrustError, match=r"--model \.\./nets/mynet\.py:build --weights \S*ckpts/net\.pt"):
        rt.load(out)
    with rt.load(out, trust_model_code=True) as m:
        assert m(np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 10)
    with rt.load(out, factory=f"{src}:build") as m:
        assert m(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)
    # A recipe file naming a factory needs the flag; --model on the command line is the user's own.
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {src}:build\ndata: digits\nstages: [{{stage: export_onnx}}]\n")
    r = cli("compress", str(recipe), "--out", str(tmp_path / "r1"), "--quiet")
    assert r.returncode == 2 and "--trust-model-code" in r.stderr and not (tmp_path / "r1").exists()
    r = cli("compress", "--model", f"{src}:build", "--weights", str(out), "--data", "digits",
            "--out", str(tmp_path / "r2"), "--quiet")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "r2" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert any(a["name"] == "mynet.fp32.onnx" for a in manifest["artifacts"])  # named after the file, not "build"


# ---- 5. what `edgedl train` writes opens everywhere -------------------------------------------

def test_a_trained_checkpoint_opens_with_bench_runtime_inspect_and_compress(tmp_path):
    out = tmp_path / "mlp.pt"
    r = cli("train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mlp.pt.json").is_file()
    r = cli("bench", str(out), "--runs", "3", "--min-seconds", "0", "--json", "-", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["metrics"]["latency_ms"]["p50"] > 0
    with rt.load(out) as m:
        assert m.predict(np.zeros((8, 8), np.uint8)).label in [str(i) for i in range(10)]
    info = api.inspect(out)
    assert info["params"] == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10 and info["macs"] > 0


# ---- 6. an INT8 .tflite is benchmarked on real data: tests/test_litert.py ---------------------

# ---- 7. dynamic dimensions are never silently 1 -----------------------------------------------

def test_dynamic_image_size_needs_a_shape_for_bench_and_is_unknown_to_inspect(tmp_path, tiny_conv_onnx):
    model = dynamic_hw_onnx(tiny_conv_onnx, tmp_path / "dyn.onnx")
    info = api.inspect(model)
    assert info["macs"] is None and "--input-shape" in info["notes"]["macs"]
    assert api.inspect(model, input_shapes={"input": [1, 1, 8, 8]})["macs"] == 4608 + 80
    r = cli("bench", str(model), "--runs", "1")
    assert r.returncode == 2 and "dynamic axis 2 ('H'), axis 3 ('W')" in r.stderr and "--input-shape input=" in r.stderr
    result = api.bench(model, runs=3, warmup=0, min_seconds=0, input_shapes={"input": [1, 1, 16, 16]})
    assert result["conditions"]["input_shapes"] == {"input": [1, 1, 16, 16]}
    assert result["metrics"]["macs"] == 4 * 4608 + 80
    with pytest.raises(UsageError, match="--input-shape names \\['foo'\\]"):
        api.bench(model, runs=1, input_shapes={"foo": [1, 1, 8, 8]})


# ---- 8. user errors are found before any work -------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--input-shape", "foo=1x1x8x8"], "--input-shape names ['foo']"),
    (["--prune", "0.5"], "stage(s) prune need a PyTorch model"),
])
def test_compress_refuses_bad_flags_before_any_work(tmp_path, tiny_conv_onnx, args, message):
    r = cli("compress", "--model", str(tiny_conv_onnx), "--data", "digits", *args, "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_a_corrupt_model_file_is_a_usage_error_before_any_work(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    r = cli("compress", "--model", str(bad), "--data", "digits", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "not a readable ONNX file" in r.stderr and not (tmp_path / "run").exists()
    bad_pt = tmp_path / "broken.pt"
    bad_pt.write_bytes(b"not a zip")
    r = cli("compress", "--model", str(bad_pt), "--data", "digits", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "cannot read checkpoint" in r.stderr and not (tmp_path / "run").exists()


def test_flags_given_with_a_recipe_are_applied(tmp_path):
    r = cli("compress", str(ROOT / "recipes" / "quickstart.yaml"), "--targets", "onnx", "--model", "mlp",
            "--print-recipe")
    assert r.returncode == 0, r.stderr
    import yaml

    resolved = yaml.safe_load(r.stdout)
    assert resolved["targets"] == ["onnx"] and resolved["model"]["spec"] == "mlp"


# ---- 9. bench --json ---------------------------------------------------------------------------

def test_bench_json_into_a_missing_folder_is_refused_before_the_benchmark(tmp_path, tiny_conv_onnx):
    r = cli("bench", str(tiny_conv_onnx), "--json", str(tmp_path / "nope" / "x.json"), "--min-seconds", "30")
    assert r.returncode == 2 and "folder" in r.stderr and "does not exist" in r.stderr


def test_bench_json_dash_is_standard_output(tmp_path, tiny_conv_onnx):
    r = cli("bench", str(tiny_conv_onnx), "--json", "-", "--runs", "3", "--min-seconds", "0", "--quiet",
            cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["metrics"]["latency_ms"]["p50"] > 0
    assert not (tmp_path / "-").exists()


# ---- 10. the table fits 80 columns and the verdicts are on screen ------------------------------

@pytest.mark.parametrize("own_measure", [None, "my_metrics.py:worst_class_recall_over_all_the_digits"])
def test_the_summary_fits_80_columns_with_every_number_and_verdict(manifest, own_measure):
    """With the recipe's own measure too (an evaluate stage's metric, of a long name): a column of its
    own, whose figures are whole at 80 columns as every other's."""
    import copy

    from rich.console import Console

    from edgedl import report

    if own_measure:
        manifest = copy.deepcopy(manifest)
        for i, a in enumerate(manifest["artifacts"]):
            a["metrics"]["metric"] = {"name": own_measure, "value": 0.9123 + i / 1000, "reference": "x"}
    console = Console(width=80, record=True, file=open("/dev/null", "w"))
    report.show(console, manifest)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for a in manifest["artifacts"]:
        p50 = (a["metrics"]["latency_ms"] or {}).get("p50")
        if p50 is not None:
            assert f"{p50:.3f}" in text
        if own_measure:
            assert f"{a['metrics']['metric']['value']:.4f}" in text
    assert "accuracy gate" in text
    assert "…" not in text


# ---- 11. smaller ones ---------------------------------------------------------------------------

def test_fp16_onnx_counts_its_macs(tmp_path, tiny_conv_onnx):
    from edgedl.formats.onnx import graph, quantize

    quantize.convert_fp16(tiny_conv_onnx, tmp_path / "fp16.onnx")
    assert graph.count_macs(graph.load_graph(tmp_path / "fp16.onnx"))[0] == 4608 + 80


def test_predict_returns_a_prediction_without_a_sidecar(tiny_conv_onnx):
    with rt.load(tiny_conv_onnx) as m:
        p = m.predict(np.zeros((8, 8), np.float32))
    assert isinstance(p, rt.Prediction) and p.label == str(p.class_id) and p.scores.shape == (10,)


def test_predict_warns_when_an_image_is_outside_the_trained_range(quick_run, manifest):
    (record,) = [a for a in manifest["artifacts"] if a["name"] == "resnet8.fp32.onnx"]
    with rt.load(quick_run / record["path"]) as m:
        with pytest.warns(rt.InputRangeWarning, match="0..16"):
            m.predict(np.full((8, 8), 255, np.uint8))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m.predict(np.full((8, 8), 16, np.uint8))


def test_models_matches_a_substring():
    r = cli("models", "resnet")
    assert r.returncode == 0 and "resnet8" in r.stdout and "resnet18" in r.stdout


def test_train_refuses_an_onnx_file_name(tmp_path):
    r = cli("train", "--model", "mlp", "--data", "digits", "--out", str(tmp_path / "x.onnx"))
    assert r.returncode == 2 and "name it .pt" in r.stderr and not (tmp_path / "x.onnx").exists()


def test_debug_works_after_the_subcommand(tmp_path):
    r = cli("inspect", str(tmp_path / "missing.onnx"), "--debug")
    assert r.returncode == 2 and "Traceback" in r.stderr and "artifact not found" in r.stderr


def test_report_gives_each_missing_reason_once(quick_run):
    text = (quick_run / "report.md").read_text()
    assert text.count("torch checkpoints are not benchmarked") == 1


# ---- a model no one here made ---------------------------------------------------------------------

def test_a_model_zoo_ir3_graph_prepares_for_quantization_with_its_one_real_input(tmp_path):
    """SqueezeNet from the ONNX model zoo (the light copy the onnx package ships: IR 3, opset 9,
    every weight also listed as a graph input). Upgraded to opset 13 for QDQ, it used to keep IR 3,
    and ORT's pre-processing left 17 weight inputs dangling that calibration then asked data for."""
    import onnx

    from edgedl.formats.onnx import graph, quantize

    source = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"
    assert onnx.load(str(source)).ir_version == 3
    quantize.prepare(source, tmp_path / "prepared.onnx")
    prepared = graph.load_graph(tmp_path / "prepared.onnx")
    assert [i.name for i in graph.input_infos(prepared)] == ["data_0"] and prepared.ir_version >= 7
    with rt.load(tmp_path / "prepared.onnx") as m:
        assert m(np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 1000, 1, 1)
