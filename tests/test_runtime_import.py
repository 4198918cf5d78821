"""The runtime ships inside robot and drone apps: importing it must need numpy alone."""

import json

from conftest import run_python

HEAVY = ["torch", "onnx", "onnxruntime", "pydantic", "click", "rich", "yaml", "sklearn", "scipy", "tensorflow",
         "ai_edge_litert", "tflite_runtime", "litert_torch"]


def test_import_runtime_pulls_in_no_framework():
    out = run_python(
        "import sys, json, edgedl.runtime; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    assert json.loads(out) == []


def test_import_edgedl_is_light():
    out = run_python(
        "import sys, json, edgedl; "
        f"print(json.dumps([m for m in {HEAVY!r} + ['numpy'] if m in sys.modules]))"
    )
    assert json.loads(out) == []


def test_loading_an_onnx_artifact_loads_onnxruntime_only(onnx_artifact):
    out = run_python(
        "import sys, json, edgedl.runtime as rt; "
        f"m = rt.load({str(onnx_artifact)!r}); "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    assert json.loads(out) == ["onnxruntime"]
