"""The commands as a user runs them: exit codes, one-line errors, run directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import edgedl.runtime as rt
from edgedl._fs import sha256_file
from edgedl.cli import main
from edgedl.run import METRIC_KEYS

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
FAST = ["--set", "stages.train.epochs=2", "--set", "stages.benchmark.runs=5",
        "--set", "stages.benchmark.min_seconds=0", "--set", "stages.benchmark.warmup=0",
        "--set", "stages.benchmark.rounds=1"]


def cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def edgedl_cmd(*args) -> subprocess.CompletedProcess:
    """The installed console script's module, in a fresh process (real exit codes and stderr)."""
    return subprocess.run([sys.executable, "-m", "edgedl", *map(str, args)], capture_output=True, text=True)


# ---- compress -----------------------------------------------------------------------------

def test_quickstart_recipe_compresses_within_a_point_of_a_95_percent_baseline(readme_run):
    """The README's first command (conftest's readme_run: one benchmark round instead of three);
    benchmarks/readme_commands.py runs it exactly as written."""
    out, proc = readme_run
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    a = {r["name"]: r for r in manifest["artifacts"]}
    assert [s["stage"] for s in manifest["stages"]] == ["train", "prune", "distill", "export_onnx", "export_tflite",
                                                        "quantize", "evaluate", "benchmark"]
    baseline, final = a["resnet8.fp32.onnx"], a["resnet8.distilled.int8.onnx"]
    tfl32, tfl8 = a["resnet8.distilled.fp32.tflite"], a["resnet8.distilled.int8fio.tflite"]
    assert tfl32["parity"]["max_abs_diff"] < 1e-4  # parity with torch, in the manifest and the report
    assert tfl8["metrics"]["accuracy"] >= tfl32["metrics"]["accuracy"] - 0.01
    gate = tfl8["quantization"]  # the LiteRT INT8 file is held to the same gates as ONNX quantization
    assert gate["reference"] == "resnet8.distilled.fp32.tflite" and gate["quality_metric"] == "accuracy"
    assert gate["accuracy_gate"] is True and gate["drop_points"] <= 1.0 and gate["speed_gate"]["fp32_p50_ms"] > 0
    assert tfl8["summary"].startswith("int8_float_io (ai-edge-quantizer), accuracy gate")
    assert baseline["precision"] == "fp32" and baseline["metrics"]["accuracy"] >= 0.95
    assert final["metrics"]["accuracy"] >= baseline["metrics"]["accuracy"] - 0.01
    assert final["size_bytes"] < baseline["size_bytes"] / 4
    report = (out / "report.md").read_text()
    for record in a.values():
        if record["format"] in ("onnx", "tflite"):  # accuracy, size, MACs and latency for each artifact
            m = record["metrics"]
            assert m["accuracy"] is not None and m["latency_ms"]["p50"] > 0
            assert m["macs"] if record["format"] == "onnx" else record["notes"]["macs"]
            mark = " (not recommended)" if record.get("recommended") is False else ""
            assert f"| {record['name']}{mark} | {record['format']} | {record['precision']} |" in report
            assert f"{100 * m['accuracy']:.2f}%" in report
    assert final["quantization"]["speed_gate"]["verdict"] in report  # INT8 that is not faster says so
    assert "## Parity with the PyTorch model" in report
    assert f"| {tfl8['name']} | {tfl8['parity']['samples']} | {tfl8['parity']['max_abs_diff']:.2e} |" in report
    assert "resnet8.distilled.int8.onnx" in proc.stderr  # the table printed at the end of the run


def test_manifest_describes_every_artifact(quick_run, manifest):
    assert manifest["status"] == "complete"
    assert manifest["recipe"]["name"] == "quickstart" and manifest["recipe"]["stages"][0]["epochs"] == 3
    assert {"python", "edgedl", "torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    assert manifest["host"]["cpu_count"] >= 1 and manifest["device"]["kind"] == "cpu"
    assert [s["stage"] for s in manifest["stages"]] == ["train", "prune", "distill", "export_onnx", "export_tflite",
                                                        "quantize", "evaluate", "benchmark"]
    assert all(s["status"] == "done" for s in manifest["stages"])
    assert [(a["name"], a["precision"], a["parent"]) for a in manifest["artifacts"]] == [
        ("resnet8.pt", "fp32", None),
        ("resnet8.pruned.pt", "fp32", "resnet8.pt"),
        ("resnet8.distilled.pt", "fp32", "resnet8.pruned.pt"),
        ("resnet8.fp32.onnx", "fp32", "resnet8.pt"),
        ("resnet8.pruned.fp32.onnx", "fp32", "resnet8.pruned.pt"),
        ("resnet8.distilled.fp32.onnx", "fp32", "resnet8.distilled.pt"),
        ("resnet8.distilled.fp32.tflite", "fp32", "resnet8.distilled.pt"),
        ("resnet8.distilled.int8fio.tflite", "int8fio", "resnet8.distilled.fp32.tflite"),
        ("resnet8.distilled.int8.onnx", "int8", "resnet8.distilled.fp32.onnx"),
    ]
    for a in manifest["artifacts"]:
        path = quick_run / a["path"]
        assert path.is_file() and not Path(a["path"]).is_absolute()
        assert a["sha256"] == sha256_file(path)
        assert a["size_bytes"] == sum((quick_run / f).stat().st_size for f in a["files"])
        assert tuple(a["metrics"]) == METRIC_KEYS
        for key, value in a["metrics"].items():  # every missing figure says why
            assert value is not None or a["notes"].get(key), (a["name"], key)
    a = {r["name"]: r for r in manifest["artifacts"]}
    for name in ("resnet8.fp32.onnx", "resnet8.pruned.fp32.onnx", "resnet8.distilled.fp32.onnx"):
        assert a[name]["parity"]["max_abs_diff"] < 1e-4 and a[name]["parity"]["top1_agreement"] == 1.0
    for name in ("resnet8.fp32.onnx", "resnet8.pruned.fp32.onnx", "resnet8.distilled.fp32.onnx",
                 "resnet8.distilled.int8.onnx", "resnet8.distilled.fp32.tflite", "resnet8.distilled.int8fio.tflite"):
        m = a[name]["metrics"]  # every runnable artifact: accuracy, size, latency (MACs on ONNX graphs)
        assert 0 <= m["accuracy"] <= 1 and a[name]["size_bytes"] > 0
        assert m["macs"] > 0 if a[name]["format"] == "onnx" else "ONNX" in a[name]["notes"]["macs"]
        assert set(m["latency_ms"]) >= {"p50", "p90", "p99", "mean", "std"}
        assert a[name]["benchmark"]["threads"] == 2 and a[name]["benchmark"]["runs"] >= 20
    assert a["resnet8.fp32.onnx"]["metrics"]["params"] > 70_000 and a["resnet8.fp32.onnx"]["metrics"]["macs"] > 700_000
    # Pruning shows up where it pays: fewer MACs, a smaller file.
    assert a["resnet8.pruned.fp32.onnx"]["metrics"]["macs"] < a["resnet8.fp32.onnx"]["metrics"]["macs"] / 2.5
    assert a["resnet8.pruned.pt"]["pruning"]["finetuned"] and a["resnet8.distilled.pt"]["distillation"]["teacher"] == "resnet8.pt"
    assert a["resnet8.distilled.int8.onnx"]["size_bytes"] < a["resnet8.distilled.fp32.onnx"]["size_bytes"] / 1.5
    assert not list(quick_run.glob(".tmp-*"))  # scratch folders are cleaned up


def test_accuracy_in_the_manifest_is_the_artifacts_own(quick_run, manifest, onnx_artifact):
    from edgedl.data import load_dataset

    test = load_dataset("digits", seed=0).test
    with rt.load(onnx_artifact) as m:
        acc = float((m(test.x).argmax(1) == test.y).mean())
    (record,) = [a for a in manifest["artifacts"] if a["name"] == onnx_artifact.name]
    assert record["metrics"]["accuracy"] == pytest.approx(acc)


def test_sidecar_tells_the_runtime_how_to_feed_the_artifact(onnx_artifact):
    sidecar = json.loads(Path(str(onnx_artifact) + ".json").read_text())
    assert sidecar["sha256"] == sha256_file(onnx_artifact)
    assert sidecar["format"] == "onnx" and sidecar["precision"] == "fp32"
    assert sidecar["inputs"][0]["name"] == "input" and sidecar["inputs"][0]["layout"] == "NCHW"
    assert sidecar["inputs"][0]["dtype"] == "float32" and sidecar["outputs"][0]["name"] == "logits"
    assert sidecar["labels"] == [str(i) for i in range(10)]
    assert set(sidecar["normalization"]) == {"scale", "mean", "std", "resize", "raw", "raw_range"}
    assert sidecar["normalization"]["raw_range"] == [0, 16]
    assert sidecar["normalization"]["resize"] == "bilinear_align_corners" and sidecar["task"] == "classification"


def test_report_has_one_row_per_artifact(quick_run, manifest):
    report = (quick_run / "report.md").read_text()
    for a in manifest["artifacts"]:
        mark = " (not recommended)" if a.get("recommended") is False else ""
        assert f"| {a['name']}{mark} | {a['format']} | {a['precision']} |" in report
    assert "## Why some figures are missing" in report and "energy" in report
    assert "## Compression" in report and "pruned, MACs" in report and "accuracy gate" in report


def test_print_recipe_shows_the_resolved_recipe(capsys):
    code, out, _ = cli(["compress", QUICKSTART, "--print-recipe", "--set", "stages.train.epochs=4"], capsys)
    assert code == 0
    recipe = yaml.safe_load(out)
    assert recipe["stages"][0]["epochs"] == 4 and recipe["stages"][0]["optimizer"] == "adamw"


def test_existing_run_directory_is_refused_without_force(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = cli(["compress", QUICKSTART, "--out", out, *FAST], capsys)
    assert code == 2 and "already exists; pass --force" in err
    assert (out / "keep.txt").read_text() == "mine"
    small = tmp_path / "small.yaml"  # what --force replaces the folder with matters, not the recipe's size
    small.write_text(yaml.safe_dump({"name": "small", "model": "mlp", "data": "random:1x8x8",
                                     "stages": [{"stage": "export_onnx"}]}))
    code, _, err = cli(["compress", small, "--out", out, "--force", "--quiet"], capsys)
    assert code == 0, err
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()


def test_random_data_runs_without_labels_and_says_so(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "latency", "model": "mlp", "data": "random:1x8x8",
        "stages": [{"stage": "export_onnx"}, {"stage": "evaluate"},
                   {"stage": "benchmark", "runs": 3, "warmup": 0, "min_seconds": 0}]}))
    code, _, err = cli(["compress", recipe, "--out", tmp_path / "run", "--quiet"], capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    (a,) = [a for a in manifest["artifacts"] if a["format"] == "onnx"]
    assert a["metrics"]["accuracy"] is None and "no labels" in a["notes"]["accuracy"]
    assert a["metrics"]["latency_ms"]["p50"] > 0
    assert any("weights are random" in n for n in manifest["notes"])


# ---- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "override, message",
    [
        ("model=resnet9000", "unknown model 'resnet9000' (did you mean 'resnet8'?); registered models: cnn1d, conv_autoencoder, gru, lstm, mlp, mobilenetv2_050"),
        ("data=imagenet", "unknown dataset 'imagenet'; known: digits"),
        ("stages.0.epoch=3", "stages.0.train.epoch: unknown field; did you mean 'epochs'? (allowed keys:"),
        ("stages.0.epochs=many", "stages.0.train.epochs: Input should be a valid integer"),
        ("data=missing.npz", "data file not found: missing.npz"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(override, message, tmp_path, capsys):
    code, _, err = cli(["compress", QUICKSTART, "--out", tmp_path / "run", "--set", override], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing was started


def test_missing_recipe_file_and_usage_errors(tmp_path, capsys):
    code, _, err = cli(["compress", tmp_path / "nope.yaml"], capsys)
    assert code == 2 and f"recipe not found: {tmp_path / 'nope.yaml'}" in err
    code, _, err = cli(["compress"], capsys)
    assert code == 2 and "give a RECIPE file, or --model and --data" in err
    code, _, err = cli(["bench", "x.onnx", "--threads", "0"], capsys)
    assert code == 2 and "--threads" in err
    code, _, err = cli(["frobnicate"], capsys)
    assert code == 2 and "No such command" in err


def test_debug_shows_the_traceback(tmp_path, capsys):
    code, _, err = cli(["--debug", "compress", QUICKSTART, "--set", "model=nope", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "Traceback" in err and "unknown model 'nope'" in err
    code, _, err = cli(["compress", QUICKSTART, "--set", "model=nope", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "Traceback" not in err and "unknown model 'nope'" in err


UNSTABLE_MODEL = '''
import torch
from torch import nn

class Noisy(nn.Module):
    """Trains fine, but its eval output depends on random noise: the exported file cannot match."""
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out if self.training else out + torch.randn_like(out)

class Interrupting(Noisy):
    def forward(self, x):
        if not self.training:
            raise KeyboardInterrupt
        return super().forward(x)

def noisy():
    return Noisy()

def interrupting():
    return Interrupting()
'''


def _recipe_with(tmp_path: Path, factory: str) -> Path:
    src = tmp_path / "user_models.py"
    src.write_text(UNSTABLE_MODEL)
    recipe = tmp_path / f"{factory}.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": factory, "model": f"{src}:{factory}", "data": "digits",
        "stages": [{"stage": "train", "epochs": 1}, {"stage": "export_onnx"}, {"stage": "evaluate"}]}))
    return recipe


def _assert_consistent(run: Path) -> dict:
    manifest = json.loads((run / "manifest.json").read_text())
    for a in manifest["artifacts"]:
        assert (run / a["path"]).is_file() and a["sha256"] == sha256_file(run / a["path"])
    assert not list(run.glob(".tmp-*")) and not list((run / "artifacts").glob("*.onnx"))
    return manifest


def test_a_failed_stage_keeps_earlier_results_and_a_consistent_manifest(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = cli(["compress", _recipe_with(tmp_path, "noisy"), "--out", run, "--quiet", "--trust-model-code"],
                       capsys)
    assert code == 1
    # artifacts are named after the factory's file (user_models.py), not the factory function
    assert err.startswith("error: stage 'export_onnx' failed: exported ONNX of user_models.pt differs from torch")
    manifest = _assert_consistent(run)
    assert manifest["status"] == "failed"
    assert [(s["stage"], s["status"]) for s in manifest["stages"]] == [("train", "done"), ("export_onnx", "failed")]
    assert [a["name"] for a in manifest["artifacts"]] == ["user_models.pt"]  # the trained model is kept
    assert "Stage `export_onnx` failed" in (run / "report.md").read_text()


def test_an_interrupted_run_leaves_a_consistent_manifest(tmp_path):
    run = tmp_path / "run"
    proc = edgedl_cmd("compress", _recipe_with(tmp_path, "interrupting"), "--out", run, "--quiet", "--trust-model-code")
    assert proc.returncode == 130 and "interrupted" in proc.stderr
    manifest = _assert_consistent(run)
    assert manifest["status"] == "failed" and manifest["stages"][-1]["error"] == "interrupted"


# ---- train, bench, inspect, models --------------------------------------------------------

def test_train_writes_a_checkpoint_that_is_a_model_spec(tmp_path, capsys):
    ckpt = tmp_path / "mlp.pt"
    code, out, err = cli(["train", "--model", "mlp", "--data", "digits", "--epochs", "5", "--out", ckpt,
                          "--quiet"], capsys)
    assert code == 0, err
    assert f"saved {ckpt}" in out and ckpt.is_file()
    from edgedl.models import load_checkpoint

    loaded = load_checkpoint(ckpt)
    assert loaded.arch["spec"] == "mlp" and loaded.checkpoint["val_accuracy"] > 0.9
    # The same seed gives the same weights (deterministic training).
    again = tmp_path / "again.pt"
    cli(["train", "--model", "mlp", "--data", "digits", "--epochs", "5", "--out", again, "--quiet"], capsys)
    import torch

    a, b = torch.load(ckpt, weights_only=True), torch.load(again, weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_train_shows_a_progress_bar(tmp_path):
    proc = edgedl_cmd("train", "--model", "mlp", "--data", "digits", "--epochs", "2", "--out", tmp_path / "m.pt")
    assert proc.returncode == 0 and "train 2/2" in proc.stderr and "val" in proc.stderr


def test_train_bad_input(tmp_path, capsys):
    code, _, err = cli(["train", "--model", "nope", "--data", "digits", "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "unknown model 'nope'" in err
    code, _, err = cli(["train", "--model", "mlp", "--data", "random:1x8x8", "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "training needs labels" in err
    code, _, err = cli(["train", "--model", "mlp", "--data", "digits", "--out", tmp_path / "no" / "m.pt"], capsys)
    assert code == 2 and f"folder {tmp_path / 'no'} does not exist" in err
    code, _, err = cli(["train", "--model", "mlp", "--data", "digits", "--epochs", "0", "--out", "m.pt"], capsys)
    assert code == 2 and "--epochs" in err


def test_bench_prints_a_table(onnx_artifact):
    proc = edgedl_cmd("bench", onnx_artifact, "--runs", "5", "--warmup", "1", "--min-seconds", "0")
    assert proc.returncode == 0
    assert "p50 ms" in proc.stderr and "onnxruntime" in proc.stderr


def test_bench_and_inspect_bad_files(tmp_path, capsys):
    code, _, err = cli(["bench", tmp_path / "none.onnx"], capsys)
    assert code == 2 and "artifact not found" in err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x01\x02")
    code, _, err = cli(["bench", junk], capsys)
    # parsed in a child first, before ONNX Runtime sees it
    assert code == 2 and "junk.onnx is not a readable ONNX file" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(["inspect", junk], capsys)
    assert code == 2 and "not a readable ONNX file" in err  # bad input: 2, as from compress and build-engine


def test_bench_batch_against_a_fixed_batch_model(tmp_path, capsys):
    import torch

    from edgedl.formats.onnx.export import export_onnx

    path = tmp_path / "fixed.onnx"
    export_onnx(torch.nn.Linear(4, 2), np.zeros((1, 4), np.float32), path, 18, False, "out")
    code, _, err = cli(["bench", path, "--batch", "4", "--runs", "1"], capsys)
    assert code == 2 and "fixed batch of 1; use --batch 1" in err


def test_models_lists_the_registry(capsys):
    code, out, _ = cli(["models"], capsys)
    assert code == 0 and all(n in out for n in ("resnet8", "resnet18", "mobilenetv2_100", "mobilenetv2_050", "mlp"))
    code, out, _ = cli(["models", "resnet*"], capsys)
    assert "mlp" not in out and "resnet18" in out


def test_version(capsys):
    code, out, _ = cli(["--version"], capsys)
    assert code == 0 and "0.1.0" in out


def test_the_one_line_forms_help_says_what_each_flag_sets(capsys):
    """--epochs trains; pruning's fine-tuning and distillation keep their own epochs, which --help names
    (with the numbers the stage configs default to) and --set changes."""
    from edgedl.stages.distill import DistillConfig
    from edgedl.stages.prune import PruneConfig

    code, out, _ = cli(["compress", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0 and "--set stages.prune.finetune_epochs=N" in text and "--set stages.distill.epochs=N" in text
    assert f"--prune fine-tunes {PruneConfig.model_fields['finetune_epochs'].default} epochs" in text
    assert f"--distill runs {DistillConfig.model_fields['epochs'].default}" in text
    code, out, _ = cli(["compress", "--model", "mlp", "--data", "digits", "--epochs", "3", "--prune", "0.5", "--distill",
                        "--set", "stages.prune.finetune_epochs=3", "--set", "stages.distill.epochs=3", "--print-recipe"],
                       capsys)
    stages = {s["stage"]: s for s in yaml.safe_load(out)["stages"]}
    assert (stages["train"]["epochs"], stages["prune"]["finetune_epochs"], stages["distill"]["epochs"]) == (3, 3, 3)
