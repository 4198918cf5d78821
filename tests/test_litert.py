"""TFLite / LiteRT: conversion without TensorFlow, precisions, int8 I/O, corrupt files, fallbacks."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import edgedl.runtime as rt
from edgedl import api
from edgedl.errors import EdgedlError, MissingDependencyError, UsageError
from edgedl.runtime import InputError


@pytest.fixture(scope="module")
def tflite_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tflite")
    recipe = out / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": "resnet8", "data": "digits", "seed": 0, "targets": ["onnx", "tflite"],
        "stages": [{"stage": "train", "epochs": 6}, {"stage": "export_onnx"},
                   {"stage": "export_tflite", "precisions": ["fp32", "fp16", "int8_dynamic", "int8", "int8_float_io"],
                    "calibration_samples": 128, "gates": False},  # gates: tested on the quickstart's int8fio
                   {"stage": "evaluate"}, {"stage": "benchmark", "runs": 5, "warmup": 1, "min_seconds": 0}]}))
    run = api.compress(recipe, out=out / "run", progress=False)
    return run.path, run.artifacts


def test_every_precision_converts_matches_and_is_measured(tflite_run):
    run, a = tflite_run
    fp32, int8 = a["resnet8.fp32.tflite"], a["resnet8.int8.tflite"]
    assert fp32["parity"]["max_abs_diff"] < 1e-4 and fp32["parity"]["top1_agreement"] == 1.0
    onnx_acc = a["resnet8.fp32.onnx"]["metrics"]["accuracy"]
    for name in ("resnet8.fp32.tflite", "resnet8.fp16.tflite", "resnet8.int8dyn.tflite", "resnet8.int8.tflite",
                 "resnet8.int8fio.tflite"):
        m = a[name]["metrics"]
        assert a[name]["format"] == "tflite" and m["latency_ms"]["p50"] > 0
        assert abs(m["accuracy"] - onnx_acc) <= 0.02, name  # measured on the .tflite file itself
    assert fp32["metrics"]["accuracy"] == pytest.approx(onnx_acc)
    assert int8["size_bytes"] < 0.35 * fp32["size_bytes"] and a["resnet8.fp16.tflite"]["size_bytes"] < 0.6 * fp32["size_bytes"]
    assert int8["parent"] == "resnet8.fp32.tflite" and int8["calibration"] == {"samples": 128, "requested": 128, "split": "train"}


def test_one_model_has_one_set_of_names_on_every_format(tflite_run):
    """The README's snippet, m.run({"input": x}), on the ONNX file and on every LiteRT file of the same
    model: the LiteRT file's own names (serving_default_args_0, ..._output_0) are kept in the sidecar as
    file_name, and the runtime takes and returns the model's."""
    run, a = tflite_run
    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    with rt.load(run / a["resnet8.fp32.onnx"]["path"]) as ref:
        want = ref.run({"input": x})["logits"]
    for name in ("resnet8.fp32.tflite", "resnet8.int8.tflite", "resnet8.int8fio.tflite"):
        sidecar = json.loads((run / (a[name]["path"] + ".json")).read_text())
        assert sidecar["inputs"][0]["name"] == "input" and sidecar["inputs"][0]["file_name"].startswith("serving_default")
        with rt.load(run / a[name]["path"]) as m:
            assert [i.name for i in m.inputs] == ["input"] and [o.name for o in m.outputs] == ["logits"]
            outs = m.run({"input": x})
            assert list(outs) == ["logits"] and outs["logits"].argmax() == want.argmax()
            m.warmup(2)
            np.testing.assert_array_equal(m(x), outs["logits"])
    shutil.copy(run / a["resnet8.int8fio.tflite"]["path"], run / "bare.tflite")
    with rt.load(run / "bare.tflite") as bare:  # a file without its sidecar: its own names
        assert bare.inputs[0].name.startswith("serving_default")


def test_full_integer_model_has_int8_io_recorded_in_the_sidecar(tflite_run):
    run, a = tflite_run
    sidecar = json.loads((run / (a["resnet8.int8.tflite"]["path"] + ".json")).read_text())
    (inp,), (out,) = sidecar["inputs"], sidecar["outputs"]
    assert inp["dtype"] == "int8" and inp["layout"] == "NCHW" and inp["quantization"]["scale"] > 0
    assert out["dtype"] == "int8" and out["quantization"]["scale"] > 0
    assert sidecar["normalization"]["scale"] == 1 / 16 and sidecar["quantizer"] == "ai-edge-quantizer"


def test_runtime_quantizes_float_inputs_and_dequantizes_outputs(tflite_run):
    run, a = tflite_run
    from edgedl.data import load_dataset

    x = load_dataset("digits").test.x[:1]
    with rt.load(run / a["resnet8.int8.tflite"]["path"]) as m:
        (inp,), (out,) = m.inputs, m.outputs
        q, o = inp.quantization, out.quantization
        from_float = m(x)
        raw_in = np.clip(np.round(x / q["scale"]) + q["zero_point"], -128, 127).astype(np.int8)
        from_int8 = m(raw_in)  # an int8 array goes in as it is
        assert from_float.dtype == np.float32 and np.array_equal(from_float, from_int8)
        # Dequantized: values on the output's grid, i.e. (int - zero point) * scale.
        grid = from_float / o["scale"] + o["zero_point"]
        assert np.allclose(grid, np.round(grid), atol=1e-3)
        with pytest.raises(InputError, match=r"or float32, quantized with its scale"):
            m(x.astype(np.float64))
    with rt.load(run / a["resnet8.fp32.tflite"]["path"]) as m:
        ref = m(x)
    assert from_float.argmax() == ref.argmax()


def test_full_integer_with_float_io_quantizes_inside_the_file(tflite_run):
    """int8_float_io: the same integer graph as int8, with QUANTIZE/DEQUANTIZE at its boundary."""
    run, a = tflite_run
    from edgedl.data import load_dataset
    from edgedl.runtime.litert import interpreter_class
    from edgedl.formats.tflite.graph import summarize

    fio = a["resnet8.int8fio.tflite"]
    assert fio["precision"] == "int8fio" and fio["calibration"] == {"samples": 128, "requested": 128, "split": "train"}
    sidecar = json.loads((run / (fio["path"] + ".json")).read_text())
    assert [t["dtype"] for t in sidecar["inputs"] + sidecar["outputs"]] == ["float32", "float32"]
    assert all(t.get("quantization") is None for t in sidecar["inputs"] + sidecar["outputs"])
    ops = summarize(run / fio["path"])["ops"]
    assert ops.get("QUANTIZE") == 1 and ops.get("DEQUANTIZE") == 1 and ops.get("CONV_2D", 0) >= 7
    assert fio["size_bytes"] < 0.35 * a["resnet8.fp32.tflite"]["size_bytes"]
    # No interpreter-side conversion: the raw interpreter takes float32 and gives float32 ...
    x = load_dataset("digits").test.x[:8]
    cls, _ = interpreter_class()
    interp = cls(model_path=str(run / fio["path"]))
    interp.allocate_tensors()
    (i,), (o,) = interp.get_input_details(), interp.get_output_details()
    assert i["dtype"] == np.float32 and o["dtype"] == np.float32
    # ... and the values equal the int8-I/O file's, dequantized by edgedl.runtime.
    with rt.load(run / fio["path"]) as m_fio, rt.load(run / a["resnet8.int8.tflite"]["path"]) as m_int8:
        for xi in x:
            np.testing.assert_allclose(m_fio(xi[None]), m_int8(xi[None]), atol=1e-5)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b"\x00" * 64, "is not a .tflite file"),
    (lambda b: b[: len(b) // 3], "corrupt|cannot load"),
    (lambda b: b[:4] + b"TFL3" + bytes(len(b) - 8), "corrupt|cannot load"),
])
def test_corrupt_or_truncated_files_are_refused_without_crashing(tflite_run, tmp_path, damage, message):
    run, a = tflite_run
    good = (run / a["resnet8.fp32.tflite"]["path"]).read_bytes()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(damage(good))
    with pytest.raises(EdgedlError, match=message):
        rt.load(bad)  # untrusted: checked, then probed in a child process
    with pytest.raises(SystemExit) as code:
        from edgedl.cli import main

        main(["bench", str(bad), "--runs", "1"])
    assert code.value.code == 2  # a corrupt file is bad input


def _hide(monkeypatch, *modules):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


SHIM = """
# A device that has only tflite_runtime: this sitecustomize (on PYTHONPATH, so every process the
# test starts imports it) takes the real interpreter class, offers it as tflite_runtime's, wraps it
# to leave a marker per process that constructs one, and hides ai_edge_litert.
import os, sys, types
from ai_edge_litert.interpreter import Interpreter as _Real


class Interpreter(_Real):
    def __init__(self, *args, **kwargs):
        open(os.path.join(os.environ["SHIM_MARKERS"], str(os.getpid())), "w").close()
        super().__init__(*args, **kwargs)


package = types.ModuleType("tflite_runtime")
module = types.ModuleType("tflite_runtime.interpreter")
module.Interpreter = Interpreter
sys.modules.update({"tflite_runtime": package, "tflite_runtime.interpreter": module,
                    "ai_edge_litert": None, "ai_edge_litert.interpreter": None})
"""


def test_falls_back_to_tflite_runtime_when_litert_is_absent(tflite_run, tmp_path, monkeypatch):
    """A device with only tflite_runtime, in this process and in the child that probes a file from
    elsewhere: this process forgets what it wrote and probed (a fresh app would not know the file),
    so the probe really runs, and both processes construct tflite_runtime's interpreter."""
    from edgedl.runtime import probed

    monkeypatch.setattr(probed, "_SEEN", set())
    monkeypatch.delenv(probed.ENV, raising=False)
    run, a = tflite_run
    shim_dir, markers = tmp_path / "shim", tmp_path / "markers"
    shim_dir.mkdir()
    markers.mkdir()
    (shim_dir / "sitecustomize.py").write_text(SHIM)
    monkeypatch.setenv("PYTHONPATH", str(shim_dir))
    monkeypatch.setenv("SHIM_MARKERS", str(markers))
    for name in ("tflite_runtime", "tflite_runtime.interpreter", "ai_edge_litert", "ai_edge_litert.interpreter"):
        if name in sys.modules:  # restored after the test, whatever the shim does
            monkeypatch.setitem(sys.modules, name, sys.modules[name])
        else:
            monkeypatch.setitem(sys.modules, name, None)
            monkeypatch.delitem(sys.modules, name)
    exec(compile(SHIM, "sitecustomize", "exec"), {"__name__": "sitecustomize"})  # this process too
    untrusted = tmp_path / "copy.tflite"
    shutil.copy(run / a["resnet8.fp32.tflite"]["path"], untrusted)
    with rt.load(untrusted, threads=1) as m:
        assert m.provider == "tflite_runtime.interpreter"
        assert m(np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 10)
    pids = {p.name for p in markers.iterdir()}
    assert str(os.getpid()) in pids and len(pids) == 2  # this process and the probing child


def test_with_no_interpreter_the_error_names_the_extra(tflite_run, monkeypatch):
    run, a = tflite_run
    _hide(monkeypatch, "ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
          "tflite_runtime.interpreter", "tensorflow", "tensorflow.lite")
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgedl\[litert\]'"):
        rt.load(run / a["resnet8.fp32.tflite"]["path"])


def test_tflite_target_needs_its_export_stage_and_torch(tmp_path, onnx_artifact):
    from edgedl.recipe import validate_recipe

    with pytest.raises(UsageError, match="target 'tflite' needs a 'export_tflite' stage"):
        validate_recipe({"model": "mlp", "data": "digits", "targets": ["tflite"], "stages": [{"stage": "train"}]})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(onnx_artifact), "data": "digits", "targets": ["tflite"],
                                      "stages": [{"stage": "export_tflite"}]}))
    with pytest.raises(UsageError, match="stage\\(s\\) export_tflite need a PyTorch model.*does not take the "
                                         "ONNX->TensorFlow->TFLite route"):
        api.compress(recipe, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_inspect_lists_ops_and_what_the_gpu_delegate_leaves_on_the_cpu(tflite_run, capsys):
    from edgedl.cli import main

    run, a = tflite_run
    fp32, int8 = run / a["resnet8.fp32.tflite"]["path"], run / a["resnet8.int8.tflite"]["path"]
    info = api.inspect(fp32, target="tflite-gpu")
    assert info["ops"]["CONV_2D"] >= 6 and info["nodes"] == sum(info["ops"].values())
    assert info["inputs"][0]["shape"] == [1, 1, 8, 8] and info["size_bytes"] == fp32.stat().st_size
    from edgedl.formats.tflite.graph import GPU_DELEGATE_OPS

    left = info["delegate"]["cpu_ops"]
    assert set(left) == set(info["ops"]) - GPU_DELEGATE_OPS and info["delegate"]["note"] is None
    quantized = api.inspect(int8, target="tflite-gpu")
    assert "integer model" in quantized["delegate"]["note"]
    assert api.inspect(fp32, target="nnapi")["delegate"]["cpu_ops"] is None  # says it cannot tell
    with pytest.raises(SystemExit) as code:
        main(["inspect", str(fp32), "--target", "tflite-gpu"])
    assert code.value.code == 0 and "ops left on the CPU" in capsys.readouterr().out
    with pytest.raises(UsageError, match="--target tflite-gpu applies to .tflite files"):
        api.inspect(run / a["resnet8.fp32.onnx"]["path"], target="tflite-gpu")


def test_inspect_refuses_a_corrupt_tflite(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"garbage!" * 8)
    with pytest.raises(EdgedlError, match="is not a .tflite file"):
        api.inspect(bad)


UNSUPPORTED = '''
import torch

class Binning(torch.nn.Module):
    def forward(self, x):
        return torch.bucketize(x, torch.tensor([0.0, 1.0])).float()

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)
        self.head = torch.nn.Sequential(Binning())
    def forward(self, x):
        return self.head(self.fc(x.flatten(1)))

def build():
    return Net()
'''


def test_an_op_the_converter_cannot_take_is_named_with_its_module(tmp_path):
    src = tmp_path / "net.py"
    src.write_text(UNSUPPORTED)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": f"{src}:build", "data": "digits", "targets": ["tflite"],
                                      "stages": [{"stage": "export_tflite", "precisions": ["fp32"]}]}))
    with pytest.raises(EdgedlError, match=r"cannot convert op aten\.bucketize\.Tensor in module 'head\.0' \(Binning\)"):
        api.compress(recipe, out=tmp_path / "run", progress=False, trust_model_code=True)


def test_the_files_own_quantization_wins_over_a_stale_sidecar(tflite_run, tmp_path):
    run, a = tflite_run
    src = run / a["resnet8.int8.tflite"]["path"]
    copy = tmp_path / src.name
    copy.write_bytes(src.read_bytes())
    sidecar = json.loads(Path(str(src) + ".json").read_text())
    for tensor in sidecar["inputs"] + sidecar["outputs"]:
        tensor["quantization"] = None  # e.g. written by an older tool
    Path(str(copy) + ".json").write_text(json.dumps(sidecar))
    with rt.load(src) as good, rt.load(copy) as stale:
        assert stale.inputs[0].quantization == good.inputs[0].quantization is not None
        assert stale.inputs[0].layout == "NCHW"  # what only the sidecar knows still comes from it
        x = np.zeros((1, 1, 8, 8), np.float32)
        assert np.array_equal(stale(x), good(x))


def test_pt2e_quantizer_gives_a_full_integer_file_of_the_same_accuracy(tflite_run, tmp_path):
    """The alternative INT8 path (litert-torch's PT2E quantizer), from the same checkpoint."""
    run, a = tflite_run
    from edgedl.recipe import validate_recipe

    out = api.compress(validate_recipe({
        "model": str(run / a["resnet8.pt"]["path"]), "data": "digits", "seed": 0, "targets": ["tflite"],
        "stages": [{"stage": "export_tflite", "precisions": ["int8"], "quantizer": "pt2e", "calibration_samples": 64},
                   {"stage": "evaluate"}]}), out=tmp_path / "pt2e", progress=False)
    (pt2e,) = [x for x in out.manifest["artifacts"] if x["format"] == "tflite"]
    sidecar = json.loads((out.path / (pt2e["path"] + ".json")).read_text())
    assert sidecar["quantizer"] == "litert-torch pt2e" and sidecar["inputs"][0]["dtype"] == "int8"
    assert pt2e["calibration"] == {"samples": 64, "requested": 64, "split": "train"} and pt2e["parent"] == "resnet8.pt"
    assert pt2e["size_bytes"] < 0.35 * a["resnet8.fp32.tflite"]["size_bytes"]
    assert pt2e["parity"]["top1_agreement"] >= 0.9
    assert abs(pt2e["metrics"]["accuracy"] - a["resnet8.fp32.tflite"]["metrics"]["accuracy"]) <= 0.03


def test_an_int8_file_is_benchmarked_on_real_data_and_loads_without_native_chatter(tflite_run):
    """bench feeds float samples through the runtime's own input handling (quantized with the
    file's scale), and the interpreter's "INFO: Created TensorFlow Lite XNNPACK delegate" line
    does not reach the user's terminal."""
    import subprocess

    run, a = tflite_run
    path = run / a["resnet8.int8.tflite"]["path"]
    r = subprocess.run([sys.executable, "-m", "edgedl", "bench", str(path), "--data", "digits", "--runs", "3",
                        "--min-seconds", "0", "--json", "-", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["conditions"]["feeds"] == "data:digits" and result["metrics"]["latency_ms"]["p50"] > 0
    assert "XNNPACK" not in r.stderr and "INFO" not in r.stderr
