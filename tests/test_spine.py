"""The spine: registries and what the recipe accepts agree, a stage is one file, a backend is one
file and one table entry, old files keep opening, and the error paths nobody had tested."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

import edgedl.runtime as rt
from edgedl.cli import main
from edgedl.errors import EdgedlError, StageError, UsageError

ROOT = Path(__file__).resolve().parents[1]
V1 = ROOT / "tests" / "data" / "v1"  # files written by edgedl before the format changes of issue 9


def test_the_recipe_accepts_exactly_the_registered_stages_and_targets():
    from edgedl.recipe import Recipe, TARGET_EXPORT_STAGE, Target
    from edgedl.stages import STAGES

    union = typing.get_args(typing.get_args(Recipe.model_fields["stages"].annotation)[0])[0]
    accepted = {typing.get_args(arm.model_fields["stage"].annotation)[0] for arm in typing.get_args(union)}
    assert accepted == set(STAGES)
    assert {t.value for t in Target} == set(TARGET_EXPORT_STAGE) == {"onnx", "tflite", "tensorrt"}
    assert all(STAGES[stage].target == target for target, stage in TARGET_EXPORT_STAGE.items())


TOY = '''"""A toy stage: records how many artifacts the run has so far."""
from typing import Literal

from edgedl.stages.base import RunContext, Stage, StageConfig


class CountConfig(StageConfig):
    stage: Literal["count"]
    label: str = "artifacts"


class CountStage(Stage):
    name = "count"
    Config = CountConfig

    def run(self, ctx: RunContext) -> None:
        ctx.run.manifest["notes"].append(f"{self.config.label}: {len(ctx.run.manifest['artifacts'])}")
'''


def test_adding_a_stage_is_one_file(tmp_path):
    """A copy of the package plus one new file under stages/: the recipe validates it (misspelt
    fields named) and a run executes it."""
    shutil.copytree(ROOT / "edgedl", tmp_path / "edgedl", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "edgedl" / "stages" / "count.py").write_text(TOY)
    code = (
        "from edgedl import api\nfrom edgedl.recipe import validate_recipe\nfrom edgedl.errors import UsageError\n"
        "import sys\n"
        "raw = {'model': 'mlp', 'data': 'digits', 'targets': [], 'stages': [{'stage': 'train', 'epochs': 1},"
        " {'stage': 'count', 'label': 'so far'}]}\n"
        "r = api.compress(validate_recipe(raw), out=sys.argv[1], progress=False)\n"
        "print(r.manifest['notes'][-1])\n"
        "try:\n    validate_recipe({**raw, 'stages': [{'stage': 'count', 'lable': 'x'}]})\n"
        "except UsageError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                         cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "so far: 1" in out.stdout
    assert "stages.0.count.lable: unknown field; did you mean 'label'?" in out.stdout


def test_the_backend_table_drives_load_bench_and_inspect(tiny_conv_onnx):
    from edgedl.runtime.backends import BACKENDS

    for backend in BACKENDS.values():
        for suffix in backend.suffixes:
            assert rt.backend_for(f"model{suffix}") is backend
        assert rt.backend_for_format(backend.format) is backend
        module, _, func = backend.inspect.partition(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func))
    with rt.load(tiny_conv_onnx, backend="onnxruntime") as m:
        assert m.backend == "onnxruntime"
    with pytest.raises(UsageError, match="known file types are .engine, .onnx, .plan, .pt, .pth, .tflite, .trt"):
        rt.backend_for("model.bin")


# ---- old files keep opening; newer ones say so -------------------------------------------------

def test_files_written_before_the_format_changes_still_open():
    with rt.load(V1 / "mlp.fp32.onnx") as m:  # sidecar format 1, sha256 verified
        assert m.trusted and m.predict(np.zeros((8, 8), np.uint8)).label in [str(i) for i in range(10)]
    with rt.load(V1 / "mlp.pt") as m:  # checkpoint format 1 with its sidecar
        assert m(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)
    # format 1 from `edgedl train`: no input shape recorded; rebuilt from the architecture options
    with rt.load(V1 / "trained.pt") as m:
        assert m.inputs[0].shape == (None, 1, 8, 8)


def test_a_file_from_a_newer_edgedl_names_both_versions(tmp_path):
    onnx_copy = tmp_path / "m.onnx"
    shutil.copy(V1 / "mlp.fp32.onnx", onnx_copy)
    sidecar = json.loads((V1 / "mlp.fp32.onnx.json").read_text())
    (tmp_path / "m.onnx.json").write_text(json.dumps({**sidecar, "edgedl_sidecar": 9}))
    with pytest.raises(EdgedlError, match="newer edgedl \\(sidecar format 9\\).*reads formats 1 to 2: upgrade"):
        rt.load(onnx_copy)
    payload = torch.load(V1 / "mlp.pt", weights_only=True)
    torch.save({**payload, "edgedl_checkpoint": 7}, tmp_path / "new.pt")
    with pytest.raises(EdgedlError, match="newer edgedl \\(checkpoint format 7\\).*reads formats 1 to 2: upgrade"):
        rt.load(tmp_path / "new.pt")


# ---- error paths --------------------------------------------------------------------------------

def test_an_internal_error_is_one_line_with_exit_1(monkeypatch, capsys, tiny_conv_onnx):
    from edgedl import api

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "inspect", broken)
    with pytest.raises(SystemExit) as code:
        main(["inspect", str(tiny_conv_onnx)])
    err = capsys.readouterr().err
    assert code.value.code == 1 and err.strip() == ("error: internal error: RuntimeError: boom (rerun with --debug "
                                                    "for the traceback)")


def test_a_missing_backend_is_one_line_naming_the_extra(monkeypatch, capsys, tiny_conv_onnx):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SystemExit) as code:
        main(["bench", str(tiny_conv_onnx), "--runs", "1"])
    err = capsys.readouterr().err.strip()
    assert code.value.code == 1 and err.count("\n") == 0 and "pip install 'edgedl[onnx]'" in err


def test_stage_for_an_unknown_stage_names_the_known_ones():
    from types import SimpleNamespace

    from edgedl.stages import stage_for

    with pytest.raises(UsageError, match="stage 'nope' has no implementation; known: benchmark, build_engine, distill"):
        stage_for(SimpleNamespace(stage="nope"))


def test_a_failing_benchmark_process_is_a_stage_error(tmp_path):
    from edgedl.bench.executors import executor_for
    from edgedl.bench.request import BenchRequest

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(StageError, match="benchmark of bad.onnx failed: error: .*bad.onnx is not a readable ONNX file"):
        executor_for("local").bench(BenchRequest(artifact=str(bad), runs=1), tmp_path)


def test_a_bench_request_travels_unchanged_and_grants_no_trust(tmp_path, tiny_conv_onnx, capsys):
    """The benchmark stage's executors send a BenchRequest file: it is validated field by field, the
    same result comes back as from the flags, and the options cannot be given beside it."""
    import json

    from edgedl.bench.executors import EXECUTORS, executor_for
    from edgedl.bench.request import BenchRequest
    from edgedl.cli import main

    request = BenchRequest(artifact=str(tiny_conv_onnx), runs=3, warmup=0, min_seconds=0, energy="none",
                           idle_seconds=0, input_shapes={"input": [2, 1, 8, 8]})
    result = executor_for("local").bench(request, tmp_path)
    assert result["conditions"]["input_shapes"] == {"input": [2, 1, 8, 8]} and result["conditions"]["runs"] >= 3
    assert set(EXECUTORS) == {"local", "ssh", "adb"}  # one file each, registered by subclassing
    sent = tmp_path / f"{tiny_conv_onnx.name}.request.json"
    assert BenchRequest.read(sent) == request
    (tmp_path / "bad.json").write_text(json.dumps({**request.model_dump(), "runs": 0}))
    for args, message in ((["--request", tmp_path / "bad.json"], "bench request"),
                          (["--request", sent, "--runs", "5"], "--request carries the artifact and every option"),
                          (["--request", sent, tiny_conv_onnx], "--request carries")):
        with pytest.raises(SystemExit) as exc:
            main(["bench", *map(str, args)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and err.count("\n") == 1, err
    (tmp_path / "trust.json").write_text(json.dumps({**request.model_dump(), "trust_model_code": True}))
    with pytest.raises(UsageError, match="trust_model_code"):  # trust is said on the command line, never by a file
        BenchRequest.read(tmp_path / "trust.json")


def test_an_artifact_name_is_used_once(tmp_path):
    from edgedl.recipe import validate_recipe
    from edgedl.run import RunDir

    run = RunDir(tmp_path / "run", validate_recipe({"model": "mlp", "data": "digits", "stages": [{"stage": "evaluate"}],
                                                     "targets": []}))
    for i in range(2):
        produced = run.tempdir() / "a.onnx"
        produced.write_bytes(b"x")
        if i:
            with pytest.raises(UsageError, match="artifact name 'a.onnx' is used twice"):
                run.add_artifact(produced, name="a.onnx", format="onnx", precision="fp32", stage="t")
        else:
            run.add_artifact(produced, name="a.onnx", format="onnx", precision="fp32", stage="t")
    assert len(json.loads((tmp_path / "run" / "manifest.json").read_text())["artifacts"]) == 1
