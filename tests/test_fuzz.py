"""A small sample of benchmarks/fuzz_loaders.py (which runs thousands; its count is in RESULTS.md):
truncated, bit-flipped and random files for every loader end in an edgedl error naming the file,
never a traceback or a dead process. Hypothesis drives the loaders that are pure Python (recipe,
device profile, sidecar, Hugging Face config, safetensors header); the native parsers (ONNX,
TFLite, TorchScript, .pt2, checkpoints) run in the benchmark's worker process, which survives
a parser crash and counts it."""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fuzz_loaders  # noqa: E402

from edgedl.errors import EdgedlError  # noqa: E402


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return fuzz_loaders.make_seeds(tmp_path_factory.mktemp("fuzz") / "seeds")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["recipe", "profile", "sidecar", "hf_config", "safetensors"]),
       how=st.sampled_from(fuzz_loaders.MUTATIONS), seed=st.integers(0, 2**32 - 1))
def test_pure_python_loaders_give_an_edgedl_error_naming_the_file(seeds, tmp_path, kind, how, seed):
    source = seeds[kind]
    case = tmp_path / f"case{seed}"
    if kind == "hf_config":
        shutil.copytree(source.parent, case)
    else:
        case.mkdir()
        if kind == "sidecar":
            shutil.copy(seeds["onnx"], case / seeds["onnx"].name)
    path = case / source.name
    path.write_bytes(fuzz_loaders.mutate(source.read_bytes(), how, random.Random(seed)))
    try:
        fuzz_loaders.open_file(kind, path)
    except EdgedlError as exc:
        assert path.name in str(exc) or case.name in str(exc), str(exc)
    finally:
        shutil.rmtree(case, ignore_errors=True)


def test_native_parsers_in_a_worker_never_traceback_and_crashes_are_contained(seeds, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    jobs = [j for j in fuzz_loaders.write_cases(seeds, cases, 250, seed=7)
            if j[0] in ("onnx", "tflite", "torchscript", "pt2", "checkpoint")]
    results = fuzz_loaders.run(jobs, tmp_path)
    assert len(results) == len(jobs) == 125
    tracebacks = [r for r in results if r["outcome"] == "traceback"]
    assert not tracebacks, tracebacks[:3]
    errors = [r for r in results if r["outcome"] == "error"]
    assert errors and all(r["names_file"] and r["one_line"] for r in errors), [r for r in errors if not r["names_file"]][:3]
    for record in (r for r in results if r["outcome"] == "crash"):
        assert fuzz_loaders.contained(record)["contained"], record
