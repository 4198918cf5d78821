"""The device-side footprint: `pip install edgedl[onnx]` or `edgedl[litert]` in a fresh virtual
environment (offline, from the wheels `make setup` downloaded) gives a working edgedl.runtime and
`edgedl bench`, with numpy and that one backend and no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"

SCRIPT = """
import json, sys, importlib.util
import numpy as np
import edgedl.runtime as rt
path = sys.argv[1]
with rt.load(path) as m:
    x = np.zeros(m.inputs[0].concrete_shape(), np.float32)
    out = m(x)
    raw = (np.arange(64, dtype=np.uint8).reshape(8, 8) % 17)
    p = m.predict(raw)
print(json.dumps({"backend": m.backend, "shape": list(out.shape), "label": p.label,
                  "torch": importlib.util.find_spec("torch") is not None,
                  "other": [n for n in ("onnxruntime", "ai_edge_litert") if importlib.util.find_spec(n)]}))
"""


@pytest.fixture(scope="module")
def edgedl_wheel(tmp_path_factory) -> Path:
    if not (WHEELHOUSE / ".done").exists():
        pytest.skip("no wheelhouse: `make setup` downloads the runtime wheels into .venv/wheelhouse")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(out), str(ROOT)], check=True, capture_output=True, text=True)
    (wheel,) = out.glob("edgedl-*.whl")
    return wheel


@pytest.mark.parametrize("extra, artifact, backend", [
    ("onnx", "resnet8.distilled.int8.onnx", "onnxruntime"),
    ("litert", "resnet8.distilled.int8fio.tflite", "litert"),
])
def test_runtime_and_bench_work_with_numpy_and_one_backend(extra, artifact, backend, edgedl_wheel, quick_run,
                                                           manifest, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
                              str(WHEELHOUSE), "--find-links", str(edgedl_wheel.parent), f"edgedl[{extra}]"],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    (record,) = [a for a in manifest["artifacts"] if a["name"] == artifact]
    path = quick_run / record["path"]
    run = subprocess.run([str(py), "-c", SCRIPT, str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend and result["shape"] == [1, 10] and result["label"] in list("0123456789")
    assert result["torch"] is False and result["other"] == [{"onnxruntime": "onnxruntime", "litert": "ai_edge_litert"}[backend]]
    bench = subprocess.run([str(venv / "bin" / "edgedl"), "bench", str(path), "--runs", "20", "--min-seconds", "0",
                            "--quiet", "--json", str(tmp_path / "b.json")], capture_output=True, text=True)
    assert bench.returncode == 0, bench.stderr
    metrics = json.loads((tmp_path / "b.json").read_text())["metrics"]
    assert metrics["latency_ms"]["p50"] > 0
    # the device profiles ship inside the wheel: `devices detect` runs on the device from this install
    listed = subprocess.run([str(venv / "bin" / "edgedl"), "devices", "list"], capture_output=True, text=True,
                            cwd=tmp_path)
    assert listed.returncode == 0 and "jetson-orin-nano" in listed.stdout and "pixel-8" in listed.stdout, listed.stderr
    detected = subprocess.run([str(venv / "bin" / "edgedl"), "devices", "detect", "--json"], capture_output=True,
                              text=True, cwd=tmp_path)
    assert detected.returncode == 0 and json.loads(detected.stdout)["profile"], detected.stderr
    # the other backend is absent, and asking for it says which extra to install
    other = "litert" if backend == "onnxruntime" else "onnxruntime"
    missing = subprocess.run([str(py), "-c", f"import edgedl.runtime as rt; rt.load({str(path)!r}, backend={other!r})"],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "pip install" in missing.stderr and "edgedl[" in missing.stderr
