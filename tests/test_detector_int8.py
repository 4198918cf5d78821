"""Issue 20's first defect: a detector whose INT8 passed the gate while it detected nothing. A
YOLO-style head the test makes (tests/yolo_head.py: one output [batch, 4 + classes, anchors],
boxes in pixels beside 0..1 scores, joined by a Concat) on crops of real photographs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import yolo_head

HEAD = Path(yolo_head.__file__)


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory):
    from edgedl.cli import main

    folder = tmp_path_factory.mktemp("detector")
    images = yolo_head.write_images(folder / "images")
    out = folder / "run"
    with pytest.raises(SystemExit) as exc:
        main(["compress", "--model", f"{HEAD}:build", "--data", f"images:{images}:3x64x64", "--quantize", "int8",
              "--trust-model-code", "--out", str(out), "--quiet", "--no-db", "--set", "stages.benchmark.runs=10",
              "--set", "stages.benchmark.rounds=1", "--set", "stages.benchmark.min_seconds=0"])
    assert exc.value.code == 0
    return out, images


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _photos(images: Path) -> np.ndarray:
    from edgedl.data.images import find, read

    files, _, _ = find(images)
    return read(files, 3, (64, 64)).astype(np.float32)


def test_int8_keeps_the_class_scores_and_says_why_the_concat_is_float(detector_run):
    out, images = detector_run
    manifest = json.loads((out / "manifest.json").read_text())
    records = {a["name"]: a for a in manifest["artifacts"]}
    int8, fp32 = records["yolo_head.int8.onnx"], records["yolo_head.fp32.onnx"]
    q = int8["quantization"]
    assert q["accuracy_gate"] is True
    (concat,) = [n for n in q["float_layers"] if "cat" in n.lower()]
    assert "one INT8 range would flatten the small values" in q["why_float"][concat]
    assert "kept in float" in int8["summary"] and "x apart" in int8["summary"]

    x = _photos(images)
    ref, got = _outputs(out / fp32["path"], x), _outputs(out / int8["path"], x)
    scores_ref, scores = ref[:, 4:], got[:, 4:]
    assert len(np.unique(scores.round(4))) > 20  # not flattened to one level
    assert np.abs(scores - scores_ref).max() < 0.05
    assert np.abs(got[:, :4] - ref[:, :4]).max() < 0.05 * 320
    # the evaluate stage judges it by its worse slice too (here the boxes, in pixels)
    agreement = int8["metrics"]["agreement"]
    assert agreement["measure"] == "cosine, worst slice" and "channels 0-3 on axis 1" in agreement["worst_slice"]
    assert agreement["value"] > 0.99


def test_the_gate_refuses_a_detector_that_detects_nothing(detector_run, tmp_path):
    """The same file quantized as before the fix (one range for the whole output): its scores collapse,
    whole-output cosine still says 0.999+, and the gate's worst-slice measure refuses it."""
    from types import SimpleNamespace

    from edgedl.artifacts import compare
    from edgedl.formats.onnx import quantize as qo
    from edgedl.quantization.quality import Quality
    from edgedl.quantization.rules import mixed_scale_nodes

    out, images = detector_run
    fp32 = out / "artifacts" / "yolo_head.fp32.onnx"
    x = _photos(images)
    prepared, flat = tmp_path / "prepared.onnx", tmp_path / "one-range.onnx"
    qo.prepare(fp32, prepared)
    qo.quantize_static(prepared, flat, [{"input": x[i:i + 1]} for i in range(len(x))], qo.SCHEMES["cpu_u8s8_per_tensor"])
    ref, got = _outputs(fp32, x), _outputs(flat, x)
    assert len(np.unique(got[:, 4:].round(4))) <= 3  # every class score on one or two INT8 levels
    assert compare(ref, got)["cosine"] > 0.999  # what the old gate looked at
    quality = Quality(SimpleNamespace(x=x, y=None), fp32, classifier=False)
    value = quality(flat)
    assert quality.drop_points(value) > 1.0  # the gate's default allows 1 point: refused
    assert "channels 4-23 on axis 1" in quality.worst[str(flat)]
    # and the rule that keeps it out of one range finds the Concat
    found = mixed_scale_nodes(qo.OnnxBackend(prepared, [{"input": x[i:i + 1]} for i in range(8)]))
    assert any("cat" in n.lower() for n in found)


def test_nested_concats_yolov5_style_stay_out_of_one_range(tmp_path, detector_run):
    """Per level Concat(xy, wh, conf) -> Reshape -> one Concat across levels: every tensor on the way
    mixes scales, so every node that makes or reads one stays in float; the scores keep their range."""
    import onnx

    from edgedl.formats.onnx import quantize as qo
    from edgedl.formats.onnx.export import export_onnx
    from edgedl.quantization.rules import mixed_scale_nodes

    _, images = detector_run
    x = _photos(images)
    fp32, prepared, q8 = tmp_path / "v5.onnx", tmp_path / "prepared.onnx", tmp_path / "v5.int8.onnx"
    export_onnx(yolo_head.build_v5(), x[:2], fp32, 18, True, "output")
    qo.prepare(fp32, prepared)
    feeds = [{"input": x[i:i + 1]} for i in range(len(x))]
    found = mixed_scale_nodes(qo.OnnxBackend(prepared, feeds))
    ops = {n.name: n.op_type for n in onnx.load(str(prepared)).graph.node}
    assert [ops[n] for n in found].count("Concat") == 3  # two per-level and the one across levels
    assert "Reshape" in {ops[n] for n in found}
    assert all("one INT8 range would flatten the small values" in why for why in found.values())
    qo.quantize_static(prepared, q8, feeds, qo.SCHEMES["cpu_u8s8_per_tensor"], exclude=list(found))
    ref, got = _outputs(fp32, x), _outputs(q8, x)
    assert np.abs(got[..., 4:] - ref[..., 4:]).max() < 0.05 and len(np.unique(got[..., 4:].round(4))) > 20


def test_ordinary_outputs_are_not_split_and_unnamed_nodes_get_names(tmp_path):
    """No false refusals: an embedding with a nearly dead unit, a probability near 0 quantized to 0,
    softmax scores, images with dark columns are judged as before; an unnamed node gets a name, so
    one can be kept in float without keeping every unnamed one."""
    import onnx
    from onnx import TensorProto, helper

    from edgedl.artifacts import compare, scale_groups
    from edgedl.formats.onnx import quantize as qo

    rng = np.random.default_rng(0)
    embedding = np.maximum(rng.normal(size=(100, 64)), 0)
    embedding[:, -1] *= 1e-3
    probability = rng.random((50, 1))
    probability[:20] *= 2e-3
    softmax = np.exp(rng.normal(size=(50, 10)) * 4)
    softmax /= softmax.sum(1, keepdims=True)
    image = rng.random((5, 3, 32, 32))
    image[..., :2] *= 1e-3
    for output in (embedding, probability, softmax, image):
        assert scale_groups(output) == []
    assert compare(probability, np.where(probability < 2e-3, 0, probability))["cosine"] == 1.0

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Sigmoid", ["h"], ["y"])],
                              "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "unnamed.onnx"))
    qo.prepare(tmp_path / "unnamed.onnx", tmp_path / "named.onnx")
    names = [n.name for n in onnx.load(str(tmp_path / "named.onnx")).graph.node]
    assert all(names) and len(set(names)) == len(names)


def test_cosine_of_an_output_quantized_to_zero_is_zero():
    from edgedl.artifacts import compare, scale_groups, slice_agreement

    ref = np.array([[1.0, 2.0, 3.0]])
    assert compare(ref, np.zeros_like(ref))["cosine"] == 0.0
    assert compare(np.zeros_like(ref), np.zeros_like(ref))["cosine"] == 1.0
    uniform = np.random.default_rng(0).random((4, 10, 7))
    assert scale_groups(uniform) == [] and slice_agreement(uniform, uniform) == (1.0, None)
    mixed = np.concatenate([uniform[:, :4] * 300, uniform[:, 4:]], axis=1)
    assert [g for _, g in scale_groups(mixed)] == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]]


def test_the_gate_takes_the_recipes_own_measure(detector_run, tmp_path):
    """A recipe names its task's measure (here: how many anchors keep the same best class with a score
    above 0.5, as a detector is used); the accuracy gate judges by it, and a failing measure is one line."""
    from edgedl.cli import main

    _, images = detector_run
    metrics = tmp_path / "detmetrics.py"
    metrics.write_text(
        "import numpy as np\n"
        "def same_detections(outputs, labels, reference):\n"
        "    keep = lambda o: np.where(o[:, 4:].max(1) > 0.5, o[:, 4:].argmax(1), -1)\n"
        "    return float((keep(outputs) == keep(reference)).mean())\n"
        "def broken(outputs, labels, reference):\n"
        "    raise ValueError('no boxes')\n")
    common = ["compress", "--model", f"{HEAD}:build", "--data", f"images:{images}:3x64x64", "--quantize", "int8",
              "--trust-model-code", "--quiet", "--no-db", "--set", "stages.benchmark.runs=5",
              "--set", "stages.benchmark.rounds=1", "--set", "stages.benchmark.min_seconds=0",
              "--set", "stages.quantize.calibration=minmax"]  # the other calibrations: test_compression
    with pytest.raises(SystemExit) as exc:
        main([*common, "--out", str(tmp_path / "run"), "--set", f"stages.quantize.metric={metrics}:same_detections"])
    assert exc.value.code == 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    q = next(a for a in manifest["artifacts"] if a["name"] == "yolo_head.int8.onnx")["quantization"]
    assert q["quality_metric"] == "metric same_detections" and q["reference_quality"] == 1.0
    assert 0.95 <= q["quality"] <= 1.0 and q["accuracy_gate"]
    # the task's standard measure is kept beside the user's, in the record and on the report's line
    standard = q["standard_quality"]
    assert standard["measure"] in ("accuracy", "cosine") and 0 < standard["value"] <= 1.0001
    assert standard["drop_points"] == pytest.approx(100 * (standard["reference"] - standard["value"]), abs=1e-3)
    summary = next(a for a in manifest["artifacts"] if a["name"] == "yolo_head.int8.onnx")["summary"]
    assert "metric same_detections" in summary and f"; {standard['measure']} {standard['value']:.4f} against" in summary
    with pytest.raises(SystemExit) as exc:
        main([*common, "--out", str(tmp_path / "broken"), "--set", f"stages.quantize.metric={metrics}:broken"])
    assert exc.value.code == 1


def test_a_measure_of_detections_gets_every_output_of_a_split_head(detector_run, tmp_path):
    """A detector with boxes and scores as separate outputs (SSD, PicoDet, TFLite detectors): the
    recipe's measure gets every output by name, in the file's order, for the float and the quantized
    file alike, in the quantize stage's gate and in the evaluate stage. Before, it got the first output
    alone (the boxes), and a measure of detections could not be written; and before that, a torch
    model returning a tuple failed at its first stage with an internal error."""
    from edgedl.cli import main

    _, images = detector_run
    metrics = tmp_path / "splitmetrics.py"
    metrics.write_text(
        "import numpy as np\n"
        "SEEN = []\n"
        "def same_detections(outputs, labels, reference):\n"
        "    assert isinstance(outputs, dict) and isinstance(reference, dict), type(outputs)\n"
        "    (b, s), (rb, rs) = outputs.values(), reference.values()\n"
        "    assert b.shape[1] == rb.shape[1] == 4 and s.shape[1] == rs.shape[1] == 20\n"
        "    keep = lambda o: np.where(o.max(1) > 0.5, o.argmax(1), -1)\n"
        "    near = np.abs(b - rb).max(1) < 8  # within 8 of 320 pixels\n"
        "    return float(((keep(s) == keep(rs)) & near).mean())\n")
    main_args = ["compress", "--model", f"{HEAD}:build_split", "--data", f"images:{images}:3x64x64",
                 "--quantize", "int8", "--trust-model-code", "--quiet", "--no-db", "--no-bench",
                 "--set", "stages.quantize.calibration=minmax", "--out", str(tmp_path / "run"),
                 "--set", f"stages.quantize.metric={metrics}:same_detections",
                 "--set", f"stages.evaluate.metric={metrics}:same_detections"]
    with pytest.raises(SystemExit) as exc:
        main(main_args)
    assert exc.value.code == 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    by_name = {a["name"]: a for a in manifest["artifacts"]}
    q = by_name["yolo_head.int8.onnx"]["quantization"]
    assert q["quality_metric"] == "metric same_detections" and q["reference_quality"] == 1.0
    assert 0.9 <= q["quality"] <= 1.0 and q["accuracy_gate"]  # the measure's own asserts passed: it got both outputs
    evaluated = {n: a["metrics"]["metric"]["value"] for n, a in by_name.items() if "metric" in a.get("metrics", {})}
    assert set(evaluated) >= {"yolo_head.fp32.onnx", "yolo_head.int8.onnx"}
    assert evaluated["yolo_head.fp32.onnx"] == 1.0 and 0.9 <= evaluated["yolo_head.int8.onnx"] <= 1.0
    # without a metric, evaluate judges every output too (it judged the first alone): the worst one is named
    agreement = by_name["yolo_head.int8.onnx"]["metrics"]["agreement"]
    assert agreement["measure"] == "cosine, worst output or slice" and 0.9 < agreement["value"] <= 1.0
    assert by_name["yolo_head.fp32.onnx"]["metrics"]["agreement"]["value"] == pytest.approx(1.0)
    assert agreement["value"] == 1.0 or agreement["worst_slice"].startswith("output 'output_")
    # the model's two outputs, named as edgedl names a tuple's, and checked against torch one by one
    fp32 = by_name["yolo_head.fp32.onnx"]
    assert [o["name"] for o in json.loads((tmp_path / "run" / (fp32["path"] + ".json")).read_text())["outputs"]] == \
        ["output_0", "output_1"]
    assert fp32["parity"]["output"] in ("output_0", "output_1") and fp32["parity"]["max_abs_diff"] < 1e-3


def test_a_tflite_export_of_several_outputs_is_refused_with_the_route_to_take(detector_run, tmp_path, capsys):
    """edgedl's TFLite export checks and gates one output (a .tflite reorders and renames them): a model
    returning two is refused in one line naming the ONNX route, after its ONNX export is kept; QAT too
    (both failed with an internal error on a tuple)."""
    from edgedl.cli import main

    _, images = detector_run
    with pytest.raises(SystemExit) as exc:
        main(["compress", "--model", f"{HEAD}:build_split", "--data", f"images:{images}:3x64x64", "--targets",
              "onnx,tflite", "--trust-model-code", "--quiet", "--no-db", "--no-bench", "--out", str(tmp_path / "run")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "this model returns 2" in err and "take the ONNX route" in err and "Traceback" not in err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [a["format"] for a in manifest["artifacts"]] == ["torch", "onnx"]
    # quantization-aware training, which fine-tunes against one output, likewise
    with pytest.raises(SystemExit) as exc:
        main(["compress", "--model", f"{HEAD}:build_split", "--data", f"images:{images}:3x64x64", "--qat",
              "--trust-model-code", "--quiet", "--no-db", "--no-bench", "--out", str(tmp_path / "qat")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "qat fine-tunes against one output, and this model returns several" in err and "Traceback" not in err
