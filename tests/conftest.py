"""Shared fixtures: small real models and runs, built once per test session."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Every bench and compress stores its result (~/.edgedl/results.db by default): the suite's go to a
# database of its own, inherited by the commands it runs in child processes, and removed at the end.
_RESULTS = tempfile.mkdtemp(prefix="edgedl-tests-")
atexit.register(shutil.rmtree, _RESULTS, ignore_errors=True)
os.environ["EDGEDL_RESULTS_DB"] = f"sqlite:///{_RESULTS}/results.db"


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> Path:
    """A real compress run of the quickstart recipe (train, prune, distill, export, quantize, evaluate,
    benchmark) on 8x8 digits, every stage shortened."""
    from edgedl import api

    out = tmp_path_factory.mktemp("runs") / "quick"
    api.compress(
        ROOT / "recipes" / "quickstart.yaml",
        out=out,
        overrides=["data=digits", "stages.train.epochs=3", "stages.prune.finetune_epochs=1", "stages.distill.epochs=1",
                   "stages.quantize.calibration_samples=64", "stages.quantize.on_gate_miss=warn",
                   "stages.export_tflite.calibration_samples=64",
                   "stages.benchmark.runs=20", "stages.benchmark.min_seconds=0", "stages.benchmark.warmup=2",
                   "stages.benchmark.rounds=1"],
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def readme_run(tmp_path_factory) -> tuple[Path, "subprocess.CompletedProcess"]:
    """The README's first command, in a fresh process, with one benchmark round instead of the recipe's
    three (a third of the stage's fresh processes) of 0.5 s instead of 2 s per file, written to
    runs/quickstart of a work folder where the README's other commands then run as written;
    benchmarks/readme_commands.py runs it as is."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("readme") / "runs" / "quickstart"
    proc = subprocess.run([sys.executable, "-m", "edgedl", "compress", str(ROOT / "recipes" / "quickstart.yaml"),
                           "--out", str(out), "--set", "stages.benchmark.rounds=1",
                           "--set", "stages.benchmark.min_seconds=0.5"], capture_output=True, text=True)
    return out, proc


@pytest.fixture(scope="session")
def jetson_run(tmp_path_factory) -> Path:
    """The bundled Jetson recipe (train, prune, distill, INT8 for TensorRT, build plan, evaluate, benchmark) for
    jetson-orin-nano, through the CLI, shortened: 8x8 digits, 2 epochs, a 100x speed bar (which timings
    here must not judge), 2 benchmark rounds."""
    from edgedl.cli import main

    out = tmp_path_factory.mktemp("runs") / "jetson"
    overrides = ["data=digits", "stages.train.epochs=2", "stages.prune.finetune_epochs=1", "stages.distill.epochs=1",
                 "stages.quantize.calibration_samples=64", "stages.quantize.min_speedup=100.0",
                 "stages.benchmark.runs=40", "stages.benchmark.warmup=2", "stages.benchmark.min_seconds=0",
                 "stages.benchmark.rounds=2"]
    with pytest.raises(SystemExit) as exc:
        main(["compress", str(ROOT / "recipes" / "jetson-orin-nano.yaml"), "--out", str(out), "--quiet"]
             + [arg for o in overrides for arg in ("--set", o)])
    assert exc.value.code == 0
    return out


@pytest.fixture(scope="session")
def manifest(quick_run) -> dict:
    return json.loads((quick_run / "manifest.json").read_text())


@pytest.fixture(scope="session")
def onnx_artifact(quick_run, manifest) -> Path:
    """The fp32 ONNX export of the trained (uncompressed) model."""
    (record,) = [a for a in manifest["artifacts"] if a["name"] == "resnet8.fp32.onnx"]
    return quick_run / record["path"]


@pytest.fixture(scope="session")
def tiny_conv_onnx(tmp_path_factory) -> Path:
    """Conv(1->8, 3x3, pad 1) + BN + ReLU + global pool + Linear(8->10) on 1x8x8, no sidecar."""
    import torch
    from torch import nn

    from edgedl.formats.onnx.export import export_onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    export_onnx(model, np.zeros((2, 1, 8, 8), np.float32), path, 18, True, "logits")
    return path


def run_python(code: str) -> str:
    """Run code in a fresh interpreter (same venv) and return its stdout."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return proc.stdout
