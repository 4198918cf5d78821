"""A new user's second hour (issue 17): documented commands that fail, figures that contradict each
other, errors that come late. Each test here failed on the code before it; items that belong to one
capability are tested beside it (test_litert: one set of tensor names; test_recipe: --targets with a
recipe; test_realtime: RateLoop's callback; test_verdicts: a model at chance level)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgedl import report

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgedl", *args], capture_output=True, text=True)


def test_a_not_recommended_artifact_is_marked_in_the_table(quick_run, manifest):
    fake = {**manifest, "artifacts": [{**a, "recommended": None} for a in manifest["artifacts"]]}
    fake["artifacts"][-1]["recommended"] = False
    name = fake["artifacts"][-1]["name"]
    cells = [row[0] for row in report.rows(fake)]
    assert cells[-1] == f"{name} (not recommended)" and all("not recommended" not in c for c in cells[:-1])
    assert f"| {name} (not recommended) |" in report.markdown(fake)
    styles = [row.style for row in report.table(fake, 200).rows]
    assert styles[-1] == "dim" and styles[0] is None


def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, tiny_conv_onnx):
    """--out /proc/x used to fail as an internal error after training; bench --json /proc/x.json after
    the whole benchmark, losing it. Now each exits 2 in one line, at once."""
    import time

    for args in (["compress", "--model", "mlp", "--data", "digits", "--epochs", "1", "--out", "/proc/edgedl-run"],
                 ["bench", str(tiny_conv_onnx), "--json", "/proc/edgedl.json", "--runs", "5"],
                 ["train", "--model", "mlp", "--data", "digits", "--out", "/proc/m.pt"],
                 ["bench", str(tiny_conv_onnx), "--json", str(tmp_path), "--runs", "5"]):
        start = time.perf_counter()
        proc = cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.stderr)
        assert lines[0].startswith("error: ") and "--" in lines[0]
        assert "cannot write in /proc" in lines[0] or "is a directory" in lines[0]
        assert "benchmarked" not in proc.stdout + proc.stderr and time.perf_counter() - start < 60
    assert not Path("/proc/edgedl-run").exists()


def test_bad_input_exits_2_from_every_command(tmp_path, tiny_conv_onnx):
    """One rule, as the README says: a corrupt file or an unknown compute unit is bad input (2) from
    bench, inspect, compress and build-engine alike; 1 is for failures of the work itself."""
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x01\x02 not protobuf")
    for args in (["bench", str(junk)], ["inspect", str(junk)], ["build-engine", str(junk), "--dry-run"],
                 ["compress", "--model", str(junk), "--data", "digits", "--out", str(tmp_path / "run")],
                 ["bench", str(tiny_conv_onnx), "--compute", "gpu", "--runs", "5"]):
        proc = cli(*args)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
    assert "unknown compute unit 'gpu' for ONNX Runtime" in proc.stderr


def test_model_names_are_checked_before_torch_is_imported():
    """An unknown name or a missing .py took 10 s (torch first) and had no "did you mean"."""
    code = ("import sys\nfrom edgedl.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('torch' in sys.modules, e.code)")
    for args, message in ((["compress", "--model", "resnt8", "--data", "digits"], "did you mean 'resnet8'?"),
                          (["train", "--model", "mobilenetv2_05", "--data", "digits", "--out", "/tmp/x.pt"],
                           "did you mean 'mobilenetv2_050'?"),
                          (["compress", "--model", "nofile.py:build", "--data", "digits"], "model file not found: nofile.py")):
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        assert proc.stdout.split() == ["False", "2"] and message in proc.stderr, (args, proc.stdout, proc.stderr)
    proc = cli("models", "yolo")
    assert proc.returncode == 2 and "no registered model matches 'yolo'" in proc.stderr


def test_the_registry_knows_its_builtin_names_without_importing_them():
    from edgedl.models import registry

    registry._ensure_builtin()
    assert set(registry.BUILTIN) == set(registry._REGISTRY)  # every built-in, and no name twice
    for name, module in registry.BUILTIN.items():
        assert registry._REGISTRY[name].factory.__module__ == f"edgedl.models.{module}"


def test_the_small_things_a_user_reads(quick_run, manifest, capsys):
    """Plurals, units, one prefix for errors, shapes without "None", no opset domain no node uses."""
    import onnx

    from edgedl.cli import _above_idle, main
    from edgedl.errors import counted

    assert (counted(1, "layer"), counted(3, "layer"), counted(1, "batch", "batches"), counted(2, "batch", "batches")) == \
        ("1 layer", "3 layers", "1 batch", "2 batches")
    energy = {"uncertainty_j_per_inference": 2e-5}
    assert _above_idle(-1e-5, energy).startswith(", not distinguishable from idle")  # a negative net is noise
    assert _above_idle(1e-3, energy) == ", 1.0000 mJ above idle" and _above_idle(None, energy) == ""
    with pytest.raises(SystemExit) as code:
        main(["compress", str(ROOT / "recipes" / "quickstart.yaml"), "--prune", "0.5"])
    err = capsys.readouterr().err
    assert code.value.code == 2 and err.startswith("error: --prune builds a recipe;") and "Error:" not in err
    checkpoint = next(a for a in manifest["artifacts"] if a["format"] == "torch")
    with pytest.raises(SystemExit):
        main(["inspect", str(quick_run / checkpoint["path"])])
    out = capsys.readouterr().out
    assert "?x1x8x8" in out and "None" not in out
    int8 = next(a for a in manifest["artifacts"] if a["format"] == "onnx" and a["precision"] == "int8")
    model = onnx.load(str(quick_run / int8["path"]))
    assert {o.domain for o in model.opset_import} == {n.domain for n in model.graph.node} == {""}


def test_a_batch_given_by_input_shape_is_the_batch_bench_reports(tmp_path):
    """`--input-shape input=4x...` feeds 4 samples a call: the header, the JSON and the throughput say 4."""
    import json

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 16, 16])])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    out = tmp_path / "b.json"
    proc = cli("bench", str(path), "--input-shape", "input=4x1x16x16", "--runs", "30", "--min-seconds", "0",
               "--energy", "none", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["conditions"]["batch"] == 4 and result["conditions"]["input_shapes"]["input"][0] == 4
    calls_per_s = 1000 / result["metrics"]["latency_ms"]["mean"]  # throughput counts samples: 4 a call
    assert result["metrics"]["throughput_ips"] == pytest.approx(4 * calls_per_s, rel=1e-6)
    assert "batch 4" in proc.stdout + proc.stderr
    proc = cli("bench", str(path), "--input-shape", "input=4x1x16x16", "--batch", "2", "--runs", "5")
    assert proc.returncode == 2 and "--batch 2 and --input-shape's batch 4 disagree" in proc.stderr


def test_bench_profile_reports_shares_and_says_the_profiler_slows_kernels(tiny_conv_onnx, tmp_path):
    """Per-op milliseconds under the profiler added up to 2-3x the p50 timed without it, with no word
    of why: the profile is a separate pass, after warm-up runs, reported as shares."""
    import json

    out = tmp_path / "p.json"
    proc = cli("bench", str(tiny_conv_onnx), "--profile", "--runs", "20", "--min-seconds", "0", "--energy", "none",
               "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    ops = json.loads(out.read_text())["op_ms"]
    assert set(ops["shares"]) == set(ops["ops"]) and 0.99 <= sum(ops["shares"].values()) <= 1.0 + 1e-9
    assert "slows" in ops["note"] and "warm-up" in ops["source"]
    text = " ".join((proc.stdout + proc.stderr).split())
    assert "where the time goes" in text and "measured without the profiler" in text
    assert re.search(r"Conv \d+%", text)


def test_the_latency_intervals_keep_the_benchs_memory_small():
    """--until-stable raised peak RSS from 66 to 112 MB: the bootstrap drew 2M resampled latencies at a
    time (indices, draws and np.percentile's copy: 46 MB). It now draws at most 200k at a time, with
    the same intervals."""
    import tracemalloc

    import numpy as np

    from edgedl.bench.latency import percentile_intervals

    samples = np.random.default_rng(0).gamma(4.0, 0.05, 20_000)
    tracemalloc.start()
    try:
        ci = percentile_intervals(samples)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak / 2**20
    p50 = float(np.percentile(samples, 50))
    assert ci["p50"][0] < p50 < ci["p50"][1] and ci["p50"][1] - ci["p50"][0] < 0.02 * p50


def test_a_run_recommends_the_file_its_gates_passed(tmp_path):
    import json

    import edgedl.runtime as rt
    from edgedl.errors import UsageError

    artifacts = [{"name": "m.fp32.tflite", "path": "artifacts/m.fp32.tflite", "format": "tflite", "precision": "fp32"},
                 {"name": "m.int8.tflite", "path": "artifacts/m.int8.tflite", "format": "tflite", "precision": "int8",
                  "recommended": False, "summary": "int8 is not faster than m.fp32.tflite on this host"},
                 {"name": "m.fp32.onnx", "path": "artifacts/m.fp32.onnx", "format": "onnx", "precision": "fp32"},
                 {"name": "m.int8.onnx", "path": "artifacts/m.int8.onnx", "format": "onnx", "precision": "int8",
                  "recommended": True, "summary": "accuracy gate met; 1.9x faster"}]
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": artifacts}))
    path, why = rt.recommended(tmp_path, "tflite")
    assert path == tmp_path / "artifacts/m.fp32.tflite" and "m.int8.tflite is not recommended (int8 is not faster" in why
    path, why = rt.recommended(tmp_path, "onnx")
    assert path == tmp_path / "artifacts/m.int8.onnx" and why.startswith("m.int8.onnx: recommended by its run")
    with pytest.raises(UsageError, match="no tensorrt artifact"):
        rt.recommended(tmp_path, "tensorrt")


def test_the_review_cases(tmp_path):
    """Edge cases found in review: an unwritable or wrong-kind output, a callback that takes something
    else than the tick, a dominant class, tensors that are not the same by position, a bad manifest."""
    import json

    import numpy as np

    import edgedl.runtime as rt
    from edgedl._fs import check_writable
    from edgedl.artifacts import under_model_names
    from edgedl.errors import UsageError
    from edgedl.quantization.quality import Quality

    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UsageError, match="is a folder; give a file name"):
        check_writable(tmp_path, "--json")
    with pytest.raises(UsageError, match="is a file; give a folder"):
        check_writable(tmp_path / "a-file", "--out", folder=True)
    with pytest.raises(UsageError, match="folder .*missing does not exist"):
        check_writable(tmp_path / "missing" / "x.json", "--json")
    check_writable(tmp_path / "new" / "run", "--out", folder=True)  # a run folder is made with its parents
    check_writable(Path("relative.json"), "--json")  # the current folder
    assert not (tmp_path / "new").exists()
    with pytest.raises(UsageError, match="must take the tick number or nothing"):
        rt.RateLoop(10, lambda tick, frame: None)
    quality = Quality.__new__(Quality)
    quality.kind, quality.y = "accuracy", np.array([0] * 96 + [1] * 4)
    quality.reference_value = 0.99  # one class of 96%: 99% is not chance
    assert quality._at_chance() is None
    quality.reference_value = 0.96
    assert "at chance level" in quality._at_chance()
    file = [{"name": "args_0", "shape": [1, 3, 8, 8]}, {"name": "args_1", "shape": [1, 4]}]
    model = [{"name": "image", "shape": [None, 4]}, {"name": "state", "shape": [None, 3, 8, 8]}]
    assert under_model_names(file, model) == file  # not the same tensors by position: the file's names stay
    assert [t["name"] for t in under_model_names(file, model[::-1])] == ["state", "image"]
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": [{"name": "x"}]}))
    with pytest.raises(UsageError, match="not a readable edgedl manifest"):
        rt.recommended(tmp_path, "onnx")
