"""Smoke tests of examples/: each runs as the README says, on a smaller budget, and prints its
latency percentiles and deadline misses."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(*args: str, timeout: float = 600) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def drone_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("drone") / "drone"
    run_example("examples/drone_landing.py", "train", "--out", str(out), "--samples", "800", "--epochs", "4")
    return out


def test_drone_example_trains_and_flies_at_30_hz(drone_run):
    artifacts = drone_run / "artifacts"
    assert (artifacts / "resnet8.int8.tflite").is_file() and (artifacts / "resnet8.fp32.onnx").is_file()
    out = run_example("examples/drone_landing.py", "fly", "--model", str(drone_run), "--seconds", "2")  # as the README
    chosen = re.search(r"^model: ([^\s:]+)", out, re.M).group(1)
    manifest = json.loads((drone_run / "manifest.json").read_text())
    record = next(a for a in manifest["artifacts"] if a["name"] == chosen)
    assert record["format"] == "tflite" and record.get("recommended") is not False  # never a file its run advises against
    assert re.search(rf"model {re.escape(chosen)} \(litert\)", out)
    assert re.search(r"\d+ ticks at 30 Hz: latency p50 [\d.]+ ms, p90 [\d.]+ ms, p99 [\d.]+ ms", out), out
    assert "deadline misses" in out and "decisions: LAND" in out
    ticks = int(re.search(r"(\d+) ticks at 30 Hz", out).group(1))
    assert ticks >= 1  # how many depends on this machine's clock; RateLoop's counting is tested on a simulated clock
    accuracy = float(re.search(r"accuracy against the synthetic truth: ([\d.]+)%", out).group(1))
    assert accuracy >= 80  # the INT8 model really tells obstacles from clear ground


def test_drone_example_switches_to_a_fallback_under_an_impossible_budget(drone_run):
    artifacts = drone_run / "artifacts"
    out = run_example("examples/drone_landing.py", "fly", "--model", str(artifacts / "resnet8.fp32.onnx"),
                      "--fallback", str(artifacts / "resnet8.int8.tflite"), "--budget-ms", "0.0001",
                      "--seconds", "1")
    assert "'switches': 1" in out and "'on_fallback': True" in out


def test_drone_example_reads_a_npy_frame_stack(drone_run, tmp_path):
    drone = load_module("drone_landing")
    rng = np.random.default_rng(3)
    frames = np.stack([drone.render(rng, bool(i % 2)) for i in range(10)])
    np.save(tmp_path / "frames.npy", frames)
    out = run_example("examples/drone_landing.py", "fly", "--model",
                      str(drone_run / "artifacts" / "resnet8.fp32.onnx"), "--source", str(tmp_path / "frames.npy"),
                      "--seconds", "1")
    assert "ticks at 30 Hz" in out and "synthetic truth" not in out  # a file knows no truth


def test_imu_example_trains_cnn1d_and_detects_faults_on_a_stream(tmp_path):
    out_dir = tmp_path / "imu"
    # The README's command on a smaller budget (half the windows and epochs, a 12 s stream);
    # benchmarks/imu_memory.py runs it as written.
    run_example("examples/imu_anomaly.py", "train", "--out", str(out_dir), "--windows", "2000", "--epochs", "5")
    model = out_dir / "artifacts" / "cnn1d.fp32.onnx"
    assert model.is_file()
    out = run_example("examples/imu_anomaly.py", "stream", "--model", str(out_dir), "--seconds", "12")  # as the README
    chosen = re.search(r"^model: ([^\s:]+)", out, re.M).group(1)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert next(a for a in manifest["artifacts"] if a["name"] == chosen).get("recommended") is not False
    caught, total = map(int, re.search(r"faults detected: (\d+)/(\d+)", out).groups())
    false_alarms, checks = map(int, re.search(r"false alarms: (\d+) of (\d+) checks", out).groups())
    assert total >= 3 and caught >= total - 1 and false_alarms <= 0.1 * checks, out
    assert re.search(r"ticks at 200 Hz: latency p50 [\d.]+ ms.*deadline misses \d+", out), out


def test_ros2_image_conversion_handles_encodings_and_row_padding():
    ros = load_module("ros2_node")
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.zeros((2, 12), np.uint8)  # step 12 > 9 bytes per row
    padded[:, :9] = rgb.reshape(2, 9)
    np.testing.assert_array_equal(ros.image_to_array(2, 3, "rgb8", 12, padded.tobytes()), rgb)
    bgr = rgb[:, :, ::-1].copy()
    np.testing.assert_array_equal(ros.image_to_array(2, 3, "bgr8", 9, bgr.tobytes()), rgb)
    mono = np.array([[0, 255]], np.uint8)
    assert ros.image_to_array(1, 2, "mono8", 2, mono.tobytes()).shape == (1, 2, 1)
    wide = np.array([[0, 65535]], ">u2")
    np.testing.assert_allclose(ros.image_to_array(1, 2, "mono16", 4, wide.tobytes(), 1)[..., 0], [[0, 255]])
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        ros.image_to_array(1, 1, "yuv422", 2, b"\0\0")
    with pytest.raises(ValueError, match="too short"):
        ros.image_to_array(2, 3, "rgb8", 9, b"\0" * 10)


def test_ros2_classifier_core_runs_without_rclpy(drone_run):
    ros = load_module("ros2_node")
    drone = load_module("drone_landing")
    assert ros.rclpy is None  # not installable here; the module still imports
    core = ros.ImageClassifier(str(drone_run))  # a run folder, as the README's -p model:=runs/drone
    assert core.model.path.suffix == ".tflite" and core.why
    rng = np.random.default_rng(5)
    truth = [i % 2 for i in range(20)]
    labels = [core.classify(drone.render(rng, bool(t)))[0] for t in truth]
    core.close()
    assert np.mean([label == drone.LABELS[t] for label, t in zip(labels, truth)]) >= 0.8
    assert core.report().startswith("20 frames: latency p50")
    proc = subprocess.run([sys.executable, "examples/ros2_node.py"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "needs ROS 2" in proc.stderr
