"""One measurement, one verdict: the benchmark stage times each file and its float parent in
alternating rounds of fresh processes; the speed verdict is the ratio of the figures the table
shows, with an interval over the rounds, and it never judges a device that is not this host."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgedl.quantization.speed import median_round, round_p50, verdict
from edgedl.devices import resolve_device


def rounds(*p50s_and_halfwidths):
    """Bench results as `edgedl bench --json` writes them, reduced to what the verdict reads."""
    return [round_p50({"metrics": {"latency_ms": {"p50": p50}}, "statistics": {"latency_ci95_ms": {"p50": [p50 - h, p50 + h]}}})
            for p50, h in p50s_and_halfwidths]


def test_the_verdict_follows_the_interval():
    parent = rounds((2.0, 0.02), (2.1, 0.02), (1.9, 0.02))
    fast = verdict(parent, rounds((1.0, 0.01), (1.05, 0.01), (0.95, 0.01)), "int8", "m.fp32.onnx", 1.1)
    assert fast["passed"] is True and fast["speedup"] == pytest.approx(2.0)
    assert fast["verdict"].startswith("int8 is faster than m.fp32.onnx on this host: 2.00x (1.000 against 2.000 ms")
    slow = verdict(parent, rounds((2.6, 0.02), (2.7, 0.02), (2.5, 0.02)), "int8", "m.fp32.onnx", 1.1)
    assert slow["passed"] is False and "is slower than" in slow["verdict"] and "keep m.fp32.onnx" in slow["verdict"]
    same = verdict(parent, rounds((2.0, 0.3), (1.7, 0.3), (2.2, 0.3)), "int8", "m.fp32.onnx", 1.1)
    assert same["passed"] is None and same["verdict"].startswith("no clear difference between int8 and m.fp32.onnx")
    # drift between rounds widens the interval even when each round is tight
    drift = verdict(rounds((2.0, 0.01), (2.0, 0.01)), rounds((1.0, 0.01), (2.5, 0.01)), "int8", "m.fp32.onnx", 1.1)
    assert drift["interval"][0] < 1.0 < drift["interval"][1] and drift["passed"] is None
    assert median_round(rounds((3.0, 0), (1.0, 0), (2.0, 0))) == 2


def test_a_device_that_is_not_this_host_is_never_judged_here():
    device = resolve_device("jetson-orin-nano")
    slow = verdict(rounds((1.0, 0.01)), rounds((2.0, 0.01)), "int8", "m.fp32.onnx", 1.1, device)
    assert slow["passed"] is None and "waits for a bench on the device" in slow["verdict"]
    assert "this host's timings" in slow["verdict"]


def test_compress_for_a_jetson_labels_host_timings_and_the_table_agrees_with_the_verdict(jetson_run):
    manifest = json.loads((jetson_run / "manifest.json").read_text())
    a = {r["name"]: r for r in manifest["artifacts"]}
    fp32, int8 = a["resnet8.distilled.fp32.onnx"], a["resnet8.distilled.int8.onnx"]
    gate = int8["quantization"]["speed_gate"]
    # the verdict is the ratio of the two p50s the table shows
    assert gate["fp32_p50_ms"] == fp32["metrics"]["latency_ms"]["p50"]
    assert gate["quantized_p50_ms"] == int8["metrics"]["latency_ms"]["p50"]
    assert gate["rounds"] == 2 and len(int8["benchmark"]["rounds"]) == 2 and gate["quick_check"]
    # a 100x bar would fail on this host, but the target is a Jetson: no verdict against the file here
    assert gate["passed"] is None and int8["recommended"] is True
    assert "waits for a bench on the device" in gate["verdict"] and "keep" not in gate["verdict"]
    assert "not recommended" not in (jetson_run / "report.md").read_text()
    assert manifest["device"]["name"] == "jetson-orin-nano" and manifest["device"]["on_device"] is False
    assert int8["benchmark"]["device"]["name"] == "jetson-orin-nano"
    assert any("not jetson-orin-nano's" in line for line in int8["benchmark"]["where"])


def test_accuracy_on_a_small_test_set_carries_its_binomial_interval(quick_run, manifest):
    from edgedl.artifacts import wilson_interval

    low, high = wilson_interval(0.95, 200)
    assert low == pytest.approx(0.9102, abs=1e-3) and high == pytest.approx(0.9726, abs=1e-3)  # Wilson, 95%
    assert wilson_interval(1.0, 50)[1] == 1.0 and wilson_interval(1.0, 50)[0] == pytest.approx(0.9287, abs=1e-3)
    record = next(a for a in manifest["artifacts"] if a["name"] == "resnet8.fp32.onnx")
    evaluated = record["evaluated_on"]
    lo, hi = evaluated["accuracy_ci95"]
    assert lo < record["metrics"]["accuracy"] < hi and evaluated["samples"] == 269  # 15% of 1797 digits, per class


def test_until_stable_stops_at_the_target_or_says_it_ran_out_of_time(monkeypatch):
    import time

    from edgedl.bench import stability

    bimodal = stability.until_stable(lambda i: time.sleep(0.002 if i % 2 else 0), runs=20, min_seconds=0.02,
                                     batch=1, limit_s=0.2)
    result, info = bimodal  # half the calls 2 ms, half 0: the median is not pinned down
    assert info["stable"] is False and info["batches"] >= 2 and info["limit_s"] == 0.2
    assert len(result.samples_ms) >= 40 and info["p50_half_width_pct"] > 2
    widths = iter([0.05, 0.01])  # the interval narrows below 2% on the second batch
    monkeypatch.setattr(stability, "p50_half_width", lambda samples: next(widths))
    result, info = stability.until_stable(lambda i: None, runs=30, min_seconds=0, batch=1, limit_s=60)
    assert info["stable"] is True and info["batches"] == 2 and len(result.samples_ms) == 60


def test_sustained_load_reports_the_drift_and_flags_it():
    import time

    from edgedl.bench.stability import drift_flags, sustained

    heat = sustained(lambda i: time.sleep(0.001 if i < 40 else 0.002), seconds=0.4, batch=1, windows=4)
    assert len(heat["windows"]) == 4 and heat["windows"][0]["p50_ms"] < heat["windows"][-1]["p50_ms"]
    assert heat["drift"]["p50"] > 0.5
    (flag,) = drift_flags(heat)
    assert flag.startswith("p50 moved +") and "of sustained load" in flag


def test_the_torch_backend_on_cuda_refuses_without_a_gpu_and_times_kernels_with_one(quick_run, manifest):
    """No GPU here: compute='cuda' and 'cuda-fp16' must say so. On a machine with one, the bench
    reports CUDA-event kernel time apart from wall-clock time."""
    import torch

    import edgedl.runtime as rt
    from edgedl import api
    from edgedl.errors import EdgedlError

    record = next(a for a in manifest["artifacts"] if a["name"] == "resnet8.distilled.pt")
    path = quick_run / record["path"]
    if not torch.cuda.is_available():
        for compute in ("cuda", "cuda-fp16"):
            with pytest.raises(EdgedlError, match="torch here has no CUDA device; use compute=cpu"):
                rt.load(path, compute=compute)
        with pytest.raises(EdgedlError, match="unknown compute unit 'tpu' for the torch backend"):
            rt.load(path, compute="tpu")
        pytest.skip("no CUDA GPU on this machine: the kernel-timing half did not run")
    result = api.bench(path, compute="cuda-fp16", runs=20, min_seconds=0, energy="none")
    assert result["gpu_time_ms"]["calls"] == result["conditions"]["runs"]
    assert 0 < result["gpu_time_ms"]["p50"] <= result["metrics"]["latency_ms"]["p99"]


def test_a_warning_raised_in_several_rounds_is_shown_once_with_its_count():
    from edgedl.stages.benchmark import round_flags

    rounds_ = [{"flags": ["p99 is 3.4x p50: a long tail", "other processes kept 1.2 CPU cores busy"]},
               {"flags": ["p99 is 3.2x p50: a long tail"]}, {"flags": []}]
    assert round_flags(rounds_) == ["p99 is 3.4x p50: a long tail (in 2 of 3 rounds)",
                                    "other processes kept 1.2 CPU cores busy (in 1 of 3 rounds)"]
    assert round_flags(rounds_[:1]) == ["p99 is 3.4x p50: a long tail", "other processes kept 1.2 CPU cores busy"]


def test_cpus_pin_the_bench_and_an_api_caller_gets_its_affinity_back(tiny_conv_onnx):
    import os

    from edgedl import api

    before = os.sched_getaffinity(0)
    result = api.bench(tiny_conv_onnx, runs=5, min_seconds=0, energy="none", cpus=[min(before)])
    assert result["conditions"]["cpus"] == [min(before)] and os.sched_getaffinity(0) == before


def test_a_float_model_at_chance_level_is_said_to_prove_nothing(tmp_path, manifest):
    """An untrained model scores about 10% on the ten digits, and so does its INT8 file: the gate is
    "met" with a drop of zero. The run says the float model is at chance level; a trained one is not."""
    from edgedl import api
    from edgedl.quantization.quality import Quality
    from edgedl.recipe import recipe_from_flags

    from edgedl.recipe import validate_recipe

    raw = recipe_from_flags("mlp", "digits", quantize="int8").model_dump(mode="json")
    raw["stages"] = [s for s in raw["stages"] if s["stage"] != "benchmark"]
    run = api.compress(validate_recipe(raw), out=tmp_path / "run", progress=False)
    (int8,) = [a for a in run.manifest["artifacts"] if a["precision"] == "int8"]
    assert "at chance level" in int8["quantization"]["reference_warning"] and "WARNING" in int8["summary"]
    assert any("at chance level" in note for note in run.manifest["notes"])
    trained = [a for a in manifest["artifacts"] if a.get("quantization")]
    assert trained and all(not a["quantization"].get("reference_warning") for a in trained)
    quality = Quality.__new__(Quality)  # the rule alone, on labels whose commonest class is 60%
    quality.kind, quality.y, quality.reference_value = "accuracy", np.array([0] * 60 + [1] * 40), 0.62
    assert "60.00%" in quality._at_chance()
    quality.reference_value = 0.75
    assert quality._at_chance() is None
