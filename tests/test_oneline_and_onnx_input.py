"""The one-line compress form, and models that arrive as ONNX files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from edgedl.cli import main


def cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


FAST_BENCH = ["--set", "stages.benchmark.runs=3", "--set", "stages.benchmark.warmup=0",
              "--set", "stages.benchmark.min_seconds=0", "--set", "stages.benchmark.rounds=1"]
NOBENCH = ["--no-bench"]  # where the test is not about timing


def test_flags_build_the_same_recipe_a_user_could_write(capsys):
    code, out, err = cli(["compress", "--model", "resnet18", "--data", "random:3x224x224", "--prune", "0.5",
                          "--quantize", "int8", "--print-recipe"], capsys)
    assert code == 0, err
    recipe = yaml.safe_load(out)
    assert recipe["name"] == "resnet18" and recipe["model"]["spec"] == "resnet18"
    assert [s["stage"] for s in recipe["stages"]] == ["prune", "export_onnx", "quantize", "evaluate", "benchmark"]
    assert recipe["stages"][0]["ratio"] == 0.5 and recipe["stages"][2]["precision"] == "int8"
    code, out, _ = cli(["compress", "--model", "mlp", "--data", "digits", "--epochs", "3", "--distill",
                        "--print-recipe"], capsys)
    assert [s["stage"] for s in yaml.safe_load(out)["stages"]][:2] == ["train", "distill"]
    for source in (["--model", "mlp", "--data", "digits"], ["recipes/quickstart.yaml"]):  # time the files elsewhere
        code, out, _ = cli(["compress", *source, "--no-bench", "--print-recipe"], capsys)
        assert code == 0 and [s["stage"] for s in yaml.safe_load(out)["stages"]][-1] == "evaluate"
    code, _, err = cli(["compress", "--model", "mlp", "--data", "digits", "--no-bench", "--on", "orin"], capsys)
    assert code == 2 and "--on runs the benchmark stage on a device and --no-bench leaves it out" in err


@pytest.mark.parametrize("args, message", [
    (["--model", "mlp", "--data", "digits", "--prune", "1.5"], "--prune"),
    (["--model", "mlp", "--data", "digits", "--quantize", "int4"], "--quantize"),
    (["--model", "mlp"], "give a RECIPE file, or --model and --data"),
    (["recipes/quickstart.yaml", "--prune", "0.3"], "--prune builds a recipe; with a recipe file use --set"),
    (["--model", "mlp", "--data", "digits", "--targets", "tflite2"], "unknown target(s) ['tflite2']; known: onnx, tensorrt, tflite"),
    (["--model", "mlp", "--data", "digits", "--input-shape", "x=1xAx3"], "must look like name=1x3x224x224"),
    (["--model", "mlp", "--data", "digits", "--input-shape", "x=1x64"], "applies to .onnx models"),
])
def test_one_line_bad_input(args, message, capsys, tmp_path):
    code, _, err = cli(["compress", *args, "--out", tmp_path / "r"], capsys)
    assert code == 2 and message in err


def test_latency_study_without_labels(tmp_path, capsys):
    """The issue's example at a small size: no labels, so prune without fine-tuning and say so."""
    code, _, err = cli(["compress", "--model", "resnet8", "--data", "random:3x32x32", "--prune", "0.5",
                        "--quantize", "int8", "--out", tmp_path / "r", "--quiet", *FAST_BENCH,
                        "--set", "stages.quantize.calibration_samples=32"], capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    names = [a["name"] for a in manifest["artifacts"]]
    assert names == ["resnet8.pt", "resnet8.pruned.pt", "resnet8.fp32.onnx", "resnet8.pruned.fp32.onnx",
                     "resnet8.pruned.int8.onnx"]
    int8 = manifest["artifacts"][-1]
    # Without labels the gate measures agreement with the float model, and says so.
    assert int8["quantization"]["quality_metric"] == "top1_agreement"
    assert all(a["metrics"]["latency_ms"] for a in manifest["artifacts"] if a["format"] == "onnx")
    assert any("pruned without fine-tuning" in n for n in manifest["notes"])


# ---- models that arrive as ONNX -----------------------------------------------------------

def dynamic_copy(src: Path, dst: Path) -> Path:
    """The same model with every input dimension dynamic, as many exported files come."""
    model = onnx.load(str(src))
    for i, dim in enumerate(model.graph.input[0].type.tensor_type.shape.dim):
        dim.Clear()
        dim.dim_param = f"d{i}"
    del model.graph.value_info[:]
    onnx.save(model, str(dst))
    return dst


def test_an_onnx_model_is_imported_quantized_evaluated_and_benchmarked(onnx_artifact, tmp_path, capsys):
    model = dynamic_copy(onnx_artifact, tmp_path / "user.onnx")
    code, _, err = cli(["compress", "--model", model, "--data", "digits", "--quantize", "int8",
                        "--out", tmp_path / "r", "--quiet", *FAST_BENCH,
                        "--set", "stages.quantize.calibration_samples=64"], capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    fp32, int8 = manifest["artifacts"]
    assert fp32["name"] == "user.fp32.onnx" and fp32["imported"]["fixed_dims"] == {"input": {"1": 1, "2": 8, "3": 8}}
    assert fp32["metrics"]["accuracy"] > 0.8 and abs(int8["metrics"]["accuracy"] - fp32["metrics"]["accuracy"]) <= 0.02
    assert int8["quantization"]["quality_metric"] == "accuracy"


def test_input_shape_fixes_the_batch_too(onnx_artifact, tmp_path, capsys):
    model = dynamic_copy(onnx_artifact, tmp_path / "user.onnx")
    code, _, err = cli(["compress", "--model", model, "--data", "digits", "--input-shape", "input=1x1x8x8",
                        "--out", tmp_path / "r", "--quiet", *FAST_BENCH], capsys)
    assert code == 0, err
    (fp32,) = json.loads((tmp_path / "r" / "manifest.json").read_text())["artifacts"]
    assert fp32["imported"]["fixed_dims"] == {"input": {"0": 1, "1": 1, "2": 8, "3": 8}}
    assert fp32["metrics"]["accuracy"] > 0.8  # evaluated one sample at a time
    code, _, err = cli(["compress", "--model", model, "--data", "digits", "--input-shape", "image=1x1x8x8",
                        "--out", tmp_path / "r2"], capsys)
    assert code == 2 and "--input-shape names ['image'], but the model's inputs are ['input']" in err
    assert not (tmp_path / "r2").exists()  # found before any work


def test_torch_only_stages_say_why_they_cannot_take_onnx(onnx_artifact, tmp_path, capsys):
    code, _, err = cli(["compress", "--model", onnx_artifact, "--data", "digits", "--prune", "0.5",
                        "--out", tmp_path / "r"], capsys)
    assert code == 2 and not (tmp_path / "r").exists()
    assert "stage(s) prune need a PyTorch model" in err and "can be quantized, evaluated and benchmarked" in err


def old_opset_model(path: Path) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm at opset 11, input 'image' with a dynamic batch."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(8, np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((5, 8)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(np.zeros(5, np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["scores"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 16, 16])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def test_old_opset_model_with_unlabelled_calibration_named_after_its_input(tmp_path, capsys):
    model = old_opset_model(tmp_path / "old.onnx")
    data = tmp_path / "calib.npz"
    np.savez(data, image=np.random.default_rng(1).standard_normal((120, 3, 16, 16)).astype(np.float32))
    code, _, err = cli(["compress", "--model", model, "--data", data, "--quantize", "int8", "--out", tmp_path / "r",
                        "--quiet", *NOBENCH, "--set", "stages.quantize.calibration_samples=64",
                        "--set", "stages.quantize.on_gate_miss=warn"], capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    fp32, int8 = manifest["artifacts"]
    assert fp32["metrics"]["accuracy"] is None and "no labels" in fp32["notes"]["accuracy"]
    q = int8["quantization"]
    assert q["quality_metric"] == "top1_agreement" and q["calibration"]["split"] == "train"
    quantized = onnx.load(str(tmp_path / "r" / int8["path"]))
    assert next(o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert any(n.op_type == "DequantizeLinear" for n in quantized.graph.node)


def test_a_file_from_a_newer_onnx_package_is_fitted_to_onnx_runtime(tmp_path, capsys):
    """onnx 1.23's make_model writes IR version 14 at any opset, and ONNX Runtime 1.31 reads up to IR 13
    and opset 26: a user's file saved by the newer package failed in ONNX Runtime with its own error. The
    import lowers the IR version and takes a newer opset down with ONNX's version converter, and says so."""
    import onnxruntime as ort

    from edgedl.formats.onnx.export import onnxruntime_reads

    ir, newest = onnxruntime_reads(30, 40)  # probed down from versions no ONNX Runtime reads yet
    opset = min(onnx.defs.onnx_opset_version(), newest + 1)  # one past ONNX Runtime where onnx knows one
    model = onnx.version_converter.convert_version(onnx.load(str(old_opset_model(tmp_path / "old.onnx"))), opset)
    model.ir_version = ir + 1
    onnx.save(model, str(tmp_path / "new.onnx"))
    with pytest.raises(Exception, match="IR version"):  # the file as the user has it
        ort.InferenceSession(str(tmp_path / "new.onnx"), providers=["CPUExecutionProvider"])
    code, _, err = cli(["bench", tmp_path / "new.onnx", "--runs", "3"], capsys)  # as it is: what to do, in one line
    assert code == 2 and f"is newer than ONNX Runtime {ort.__version__} reads" in err and "edgedl compress" in err
    data = tmp_path / "calib.npz"
    np.savez(data, image=np.random.default_rng(1).standard_normal((120, 3, 16, 16)).astype(np.float32))
    code, _, err = cli(["compress", "--model", tmp_path / "new.onnx", "--data", data, "--quantize", "int8",
                        "--out", tmp_path / "r", "--quiet", *NOBENCH, "--set", "stages.quantize.calibration=minmax",
                        "--set", "stages.quantize.calibration_samples=64",
                        "--set", "stages.quantize.on_gate_miss=warn"], capsys)
    assert code == 0, err
    fp32, int8 = json.loads((tmp_path / "r" / "manifest.json").read_text())["artifacts"]
    fitted = fp32["imported"]["fitted"]
    assert f"IR version {ir + 1} written as {ir}" in fitted[-1]
    assert (f"opset {opset} taken down to {newest}" in fitted[0]) == (opset > newest)
    written = onnx.load(str(tmp_path / "r" / fp32["path"]))
    assert written.ir_version == ir and max(o.version for o in written.opset_import if o.domain == "") <= newest
    assert int8["quantization"]["speed_gate"]["quantized_p50_ms"] > 0  # ONNX Runtime read and timed both files
