import json
import subprocess
import sys

import numpy as np
import pytest

from edgedl import api
from edgedl.bench import LatencyResult, measure_latency, peak_rss_mb
from edgedl.data.feeds import data_feeds, random_feeds
from edgedl.errors import UsageError
from edgedl.run import METRIC_KEYS
from edgedl.runtime import TensorInfo


def test_statistics_of_known_samples():
    r = LatencyResult(np.arange(1, 101, dtype=float), batch=4, wall_s=5.0)
    s = r.stats()
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5) and s["std"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert s["min"] == 1 and s["max"] == 100
    assert r.throughput_ips == pytest.approx(4 * 100 / 5.050)  # 100 calls took 5050 ms


def test_measure_runs_warmup_then_at_least_runs_calls():
    calls = []
    r = measure_latency(calls.append, runs=7, warmup=3, min_seconds=0)
    assert calls == list(range(3)) + list(range(7))  # warm-up indices, then timed indices
    assert len(r.samples_ms) == 7 and (r.samples_ms >= 0).all()


def test_measure_keeps_going_until_min_seconds():
    import time

    r = measure_latency(lambda i: time.sleep(0.002), runs=1, warmup=0, min_seconds=0.05)
    assert r.wall_s >= 0.05 and len(r.samples_ms) > 1


def test_random_feeds_follow_dtype_and_keep_ids_small():
    inputs = [TensorInfo("ids", ("batch", 16), "int64"), TensorInfo("x", ("batch", 3), "float32"),
              TensorInfo("mask", (None, 16), "bool")]
    (feed, *_) = random_feeds(inputs, batch=2)
    assert feed["ids"].shape == (2, 16) and feed["ids"].dtype == np.int64
    assert set(np.unique(feed["ids"])) <= {0, 1}
    assert feed["x"].dtype == np.float32 and feed["mask"].dtype == bool


def test_a_fixed_batch_input_refuses_another_batch():
    with pytest.raises(UsageError, match="fixed batch of 1; use --batch 1"):
        random_feeds([TensorInfo("x", (1, 3), "float32")], batch=8)


def test_data_feeds_batch_real_samples():
    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    feeds = data_feeds([TensorInfo("x", ("n", 3), "float32")], x, batch=4)
    assert len(feeds) == 2 and np.array_equal(feeds[1]["x"], x[4:8])
    assert data_feeds([TensorInfo("x", ("n", 3), "float32")], x.astype(np.float64), batch=1)[0]["x"].dtype == np.float32
    with pytest.raises(UsageError, match="data for input 'x' is int64 but the model takes float32"):
        data_feeds([TensorInfo("x", ("n", 3), "float32")], x.astype(np.int64), batch=1)


def test_peak_rss_is_the_high_water_mark_of_this_process_not_its_parent():
    """VmHWM belongs to the address space: a child started after the parent touched 400 MB reports
    its own peak, where ru_maxrss would carry the parent's over through fork and exec."""
    big = np.ones(400 * 2**20 // 8)  # 400 MB, touched
    parent = peak_rss_mb()
    assert parent >= 400
    code = "from edgedl.bench import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert child < parent - 300
    del big


def test_bench_reports_the_manifest_metric_keys(onnx_artifact):
    result = api.bench(onnx_artifact, runs=5, warmup=1, min_seconds=0, batch=3, threads=1)
    assert tuple(result["metrics"]) == METRIC_KEYS
    m = result["metrics"]
    assert set(m["latency_ms"]) >= {"p50", "p90", "p99", "mean", "std"}
    assert m["latency_ms"]["p50"] <= m["latency_ms"]["p99"]
    assert m["throughput_ips"] > 0 and m["peak_rss_mb"] > 0
    # Read from the ONNX graph, where BatchNorm is folded: every conv gains a bias.
    from torch import nn

    from edgedl.models import create_model

    torch_model = create_model("resnet8", num_classes=10, in_channels=1)
    expected = sum(m.weight.numel() + m.out_channels for m in torch_model.modules() if isinstance(m, nn.Conv2d))
    expected += sum(p.numel() for p in torch_model.fc.parameters())
    assert m["params"] == expected
    assert m["macs"] > 700_000
    assert m["accuracy"] is None and m["energy_j_per_inference"] is None
    assert "energy_j_per_inference" in result["notes"] and "accuracy" in result["notes"]
    c = result["conditions"]
    assert c["batch"] == 3 and c["threads"] == 1 and c["runs"] == 5 and c["feeds"] == "random"
    assert c["versions"]["onnxruntime"] and c["host"]["cpu_count"]


def test_bench_with_data_feeds_real_samples(onnx_artifact):
    result = api.bench(onnx_artifact, data="digits", runs=3, warmup=0, min_seconds=0, batch=2)
    assert result["conditions"]["feeds"] == "data:digits"
    with pytest.raises(UsageError, match="--runs must be at least 1"):
        api.bench(onnx_artifact, runs=0)
    with pytest.raises(UsageError, match="array 'input' has shape \\[\\d+, 1, 16, 16\\], which does not fit input"):
        api.bench(onnx_artifact, data="digits:1x16x16", runs=1, warmup=0, min_seconds=0)


def test_bench_json_is_what_the_manifest_stores(onnx_artifact, tmp_path):
    from edgedl.cli import main

    out = tmp_path / "b.json"
    with pytest.raises(SystemExit) as code:
        main(["bench", str(onnx_artifact), "--runs", "4", "--warmup", "0", "--min-seconds", "0", "--json", str(out),
              "--quiet"])
    assert code.value.code == 0
    data = json.loads(out.read_text())
    assert tuple(data["metrics"]) == METRIC_KEYS and data["conditions"]["runs"] == 4
