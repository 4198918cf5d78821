"""TensorRT without TensorRT: the lint (onnx-tensorrt's operator tables per version, Q/DQ and DLA rules)
on real exported and third-party ONNX files, build plans and trtexec lines, the cache key, the mapping
onto Polygraphy's real loaders, the symmetric scheme for TensorRT targets, and the portability guard.

TensorRT cannot be installed on this machine (its wheels come from NVIDIA's host), so the cases that
build or run an engine skip with that reason here and run where ``tensorrt`` imports (a Jetson).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgedl.runtime as rt
from edgedl.cli import main
from edgedl.errors import EdgedlError, TrustError, UsageError
from edgedl.formats.tensorrt import plan as tp
from edgedl.formats.tensorrt.lint import lint
from edgedl.formats.tensorrt.versions import resolve, tables
from edgedl.devices import get_profile

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
NEEDS_TRT = pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed: it comes with JetPack on a Jetson, "
                                                   "from NVIDIA's index elsewhere, and cannot be installed here")
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def rules(report: dict, severity: str = "error") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in report["findings"]:
        if f["severity"] == severity:
            out.setdefault(f["rule"], []).append(f)
    return out


def one_node(tmp_path, node, inputs, outputs, initializers=(), opset=17, name="m.onnx") -> Path:
    """A real one-node ONNX file, checked by onnx.checker."""
    graph = helper.make_graph([node], "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def x_info(name="x", shape=(1, 3, 8, 8)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


# ---- versions and tables ----------------------------------------------------------------------

def test_the_op_tables_cover_every_version_and_a_device_picks_its_jetpacks_tensorrt():
    assert sorted(tables(), key=lambda v: tuple(map(int, v.split(".")))) == ["8.2", "8.5", "8.6", "10.3", "10.15", "11"]
    assert tables()["8.5"]["opset"] == [7, 17] and tables()["10.15"]["opset"] == [9, 24]
    assert tables()["8.2"]["opset"] == [7, 13] and "Hardmax" not in tables()["8.2"]["supported"]  # Jetson Nano
    assert "Hardmax" in tables()["8.6"]["unsupported"] and "Hardmax" in tables()["10.3"]["supported"]
    assert "Attention" in tables()["10.15"]["supported"] and "Attention" not in tables()["10.3"]["supported"]
    assert resolve(None, get_profile("jetson-orin-nano")).table == "10.3"  # JetPack 6.2
    assert resolve(None, get_profile("jetson-xavier-nx")).table == "8.5"  # JetPack 5.1
    assert resolve(None, get_profile("jetson-nano")).version == "8.2.1"  # JetPack 4.6
    assert resolve(None).table == "10.15" and resolve("10").table == "10.15" and resolve("11.4.1").table == "11"
    seven = resolve("10.7")
    assert seven.table == "10.3" and "nearest older" in seven.why
    with pytest.raises(UsageError, match="TensorRT older than 8.2"):
        resolve("7.1")
    with pytest.raises(UsageError, match="not a version"):
        resolve("ten")


# ---- the lint ---------------------------------------------------------------------------------

def test_ops_tensorrt_lacks_are_named_per_node_and_per_version(tmp_path):
    unique = one_node(tmp_path, helper.make_node("Unique", ["x"], ["y"], name="dedupe"),
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])], name="unique.onnx")
    for version in ("8.5", "10.3", "11"):
        (finding,) = rules(lint(unique, version))["unsupported_op"]
        assert finding["node"] == "dedupe" and finding["op"] == "Unique" and "marked unsupported" in finding["message"]
    hardmax = one_node(tmp_path, helper.make_node("Hardmax", ["x"], ["y"], name="hm"), [x_info()], [x_info("y")],
                       name="hardmax.onnx")
    assert not lint(hardmax, "8.6")["passed"] and lint(hardmax, "10.3")["passed"]  # added in 9.2
    custom = helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft")
    graph = helper.make_graph([custom], "g", [x_info()], [x_info("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, str(tmp_path / "custom.onnx"))
    (finding,) = rules(lint(tmp_path / "custom.onnx", "10.3"))["custom_op"]
    assert "plugin" in finding["fix"] and finding["node"] == "fused"


def test_restrictions_apply_where_that_versions_table_states_them(tmp_path):
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    sl = one_node(tmp_path, helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="cut"),
                  [x_info(), axes], [x_info("y", (1, 3, 8, None))],
                  [helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
                   helper.make_tensor("ends", TensorProto.INT64, [1], [4])], name="slice.onnx")
    assert rules(lint(sl, "8.6"))["constant_input"][0]["node"] == "cut"  # "`axes` must be an initializer"
    assert "constant_input" not in rules(lint(sl, "10.3"))  # 10.3 takes tensor axes (changelog)
    topk = one_node(tmp_path, helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top"),
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5000])],
                    [helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 4000]),
                     helper.make_tensor_value_info("i", TensorProto.INT64, [1, 4000])],
                    [helper.make_tensor("k", TensorProto.INT64, [1], [4000])], name="topk.onnx")
    assert "topk_k" in rules(lint(topk, "10.3")) and "topk_k" not in rules(lint(topk, "8.6"))
    pool = one_node(tmp_path, helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2],
                                               name="pool"), [x_info()], [x_info("y", (1, 3, 6, 6))], name="pool.onnx")
    assert "pool_dilations" in rules(lint(pool, "10.3")) and "pool_dilations" not in rules(lint(pool, "8.5"))
    resize = one_node(tmp_path, helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", name="up"),
                      [x_info()], [x_info("y", (1, 3, 16, 16))],
                      [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])], name="resize.onnx")
    assert rules(lint(resize, "10.15"))["resize_mode"][0]["node"] == "up"
    relu = one_node(tmp_path, helper.make_node("Relu", ["x"], ["y"]), [x_info()], [x_info("y")], opset=19,
                    name="opset19.onnx")
    (finding,) = rules(lint(relu, "8.6"))["opset"]
    assert "outside TensorRT 8.6's range 7-17" in finding["message"] and "opset=17" in finding["fix"]
    assert lint(relu, "10.3")["passed"]


def test_the_export_reaches_the_opset_the_target_parses(tmp_path):
    """torch's exporter keeps its own opset 18 when its converter cannot go down (a global pool's
    ReduceMean). For 17 (TensorRT 8.5) ONNX's version converter takes the file down; for 13 (TensorRT
    8.2) it has no path (Reshape 14 -> 13), and torch's TorchScript exporter writes it. Either way the
    file is labelled with the opset it holds, valid for that opset, and computes what torch does."""
    import onnxruntime as ort
    import torch
    from torch import nn

    from edgedl.formats.onnx.export import export_onnx

    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    x = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    routes = {}
    for opset in (17, 13):
        path = tmp_path / f"m{opset}.onnx"
        routes[opset] = export_onnx(model, x, path, opset, True, "logits")
        written = onnx.load(str(path))
        onnx.checker.check_model(written, full_check=True)
        assert [o.version for o in written.opset_import if o.domain in ("", "ai.onnx")] == [opset]
        got = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert "ONNX's version converter took it to 17" in routes[17]
    assert "TorchScript-based exporter" in routes[13] and "Reshape" in routes[13]


def test_third_party_model_zoo_files_pass_every_version():
    for path in sorted(LIGHT.glob("light_*.onnx")):
        for version in ("8.5", "10.3", "11"):
            report = lint(path, version)
            assert report["passed"], (path.name, version, report["findings"][:2])
    # on an AGX Orin's DLA, SqueezeNet's weights (made by ConstantOfShape in this copy) fold away; its
    # 13x13 global pool (DLA pools up to 8x8) and its 2-D softmax fall back to the GPU, nothing else
    report = lint(LIGHT / "light_squeezenet.onnx", None, profile=get_profile("jetson-agx-orin-64gb"), dla=True)
    falls = sorted((f["op"], f["node"]) for f in rules(report, "gpu_fallback")["dla_layer"])
    assert [op for op, _ in falls] == ["GlobalAveragePool", "Softmax"] and report["passed"]


def test_a_cpu_scheme_int8_is_rejected_and_the_tensorrt_scheme_passes(tiny_conv_onnx, tmp_path):
    """Real ONNX Runtime quantization of the same file in both schemes."""
    from edgedl.formats.onnx import quantize as qo

    prepared = tmp_path / "prepared.onnx"
    qo.prepare(tiny_conv_onnx, prepared)
    rng = np.random.default_rng(0)
    calib = [{"input": rng.random((1, 1, 8, 8), dtype=np.float32)} for _ in range(8)]
    cpu, trt = tmp_path / "cpu.onnx", tmp_path / "trt.onnx"
    qo.quantize_static(prepared, cpu, calib, qo.SCHEMES["cpu_u8s8_per_tensor"])
    qo.quantize_static(prepared, trt, calib, qo.SCHEMES["tensorrt"])
    found = rules(lint(cpu, "10.3"))
    assert {"qdq_zero_point", "qdq_uint8", "qdq_type"} <= set(found)  # asymmetric uint8, and an INT32 bias
    assert all(f["op"] in ("QuantizeLinear", "DequantizeLinear") and f["node"] for f in found["qdq_zero_point"])
    assert lint(trt, "10.3")["passed"] and lint(trt, "11")["passed"]
    model = onnx.load(str(trt))
    zero_points = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    code, out = run_cli(["inspect", str(cpu), "--target", "tensorrt:10.3"])
    assert code == 1 and "would be REJECTED" in out and "qdq_zero_point" in out


def test_dla_lint_lists_what_falls_back_to_the_gpu(jetson_run):
    onnx_file = jetson_run / "artifacts" / "resnet8.distilled.fp32.onnx"
    orin = get_profile("jetson-agx-orin-64gb")
    report = lint(onnx_file, None, profile=orin, dla=True, input_shapes={"input": [1, 1, 8, 8]})
    assert report["tensorrt"]["table"] == "10.3" and report["passed"]
    falls = {f["op"] for f in rules(report, "gpu_fallback")["dla_layer"]}
    assert "ReduceMean" in falls and "Conv" not in falls and "Relu" not in falls
    dynamic = lint(onnx_file, None, profile=orin, dla=True)
    assert "dla_dynamic_shape" in rules(dynamic)  # DLA needs min = opt = max
    (no_dla,) = rules(lint(onnx_file, None, profile=get_profile("jetson-orin-nano"), dla=True))["no_dla"]
    assert "has no DLA" in no_dla["message"]


# ---- compress for a Jetson ---------------------------------------------------------------------

def test_compress_for_a_jetson_writes_symmetric_int8_a_plan_and_the_trtexec_line(jetson_run):
    manifest = json.loads((jetson_run / "manifest.json").read_text())
    int8 = next(a for a in manifest["artifacts"] if a["name"] == "resnet8.distilled.int8.onnx")
    assert int8["quantization"]["scheme"] == "tensorrt"  # scheme auto, target tensorrt
    # judged by its Q/DQ's arithmetic, as TensorRT computes it, not by this CPU's integer kernels
    assert int8["quantization"]["judged_by"].startswith("Q/DQ semantics") and "weight_bits" not in int8["quantization"]
    from edgedl.artifacts import accuracy  # the evaluate stage runs it the same way
    from edgedl.data import load_dataset

    test = load_dataset("digits", seed=0).test
    assert int8["metrics"]["accuracy"] == accuracy(jetson_run / int8["path"], test, compute="cpu-qdq")
    assert int8["quantization"]["speed_gate"]["passed"] is None
    (entry,) = manifest["tensorrt"]
    assert entry["onnx"] == "resnet8.distilled.int8.onnx" and entry["precision"] == "int8"
    assert entry["tensorrt"]["version"] == "10.3" and entry["built_here"]["built"] is False
    plan = json.loads((jetson_run / entry["plan"]).read_text())
    assert plan["lint"]["passed"] and plan["cache_key"] and plan["onnx_sha256"] == int8["sha256"]
    assert plan["commands"]["trtexec"] == ("trtexec --onnx=resnet8.distilled.int8.onnx --saveEngine=resnet8.distilled.int8.engine "
                                           "--stronglyTyped --minShapes=input:1x1x8x8 --optShapes=input:1x1x8x8 "
                                           "--maxShapes=input:1x1x8x8")
    script = (jetson_run / "tensorrt" / "build_on_device.sh").read_text()
    assert plan["commands"]["edgedl"] in script and plan["commands"]["trtexec"] in script
    code, out = run_cli(["inspect", str(jetson_run / int8["path"]), "--target", "tensorrt", "--device",
                         "jetson-orin-nano", "--input-shape", "input=1x1x8x8"])
    assert code == 0 and "tensorrt: passes: 0 error(s), 0 warning(s)" in out and "TensorRT 10.3" in out


def test_a_lint_error_stops_the_run_before_the_plan(tmp_path):
    """A user's ONNX with an op TensorRT 8.5 (Xavier NX's JetPack 5.1) lacks: the run fails in build_engine,
    keeps the imported file, and writes no plan."""
    nodes = [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("Gemm", ["flat", "w", "b"], ["z"]),
             helper.make_node("Hardmax", ["z"], ["logits"], name="pick")]
    rng = np.random.default_rng(0)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])],
                              [onnx.numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "w"),
                               onnx.numpy_helper.from_array(np.zeros(10, np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(tmp_path / "hard.onnx"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({
        "model": str(tmp_path / "hard.onnx"), "data": "digits", "device": "jetson-xavier-nx", "targets": ["tensorrt"],
        "stages": [{"stage": "export_onnx"}, {"stage": "build_engine"}]}))
    code, _ = run_cli(["compress", str(recipe), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 1
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    failed = manifest["stages"][-1]
    assert failed["stage"] == "build_engine" and "pick (Hardmax)" in failed["error"] and "8.5" in failed["error"]
    assert not (tmp_path / "run" / "tensorrt").exists() and (tmp_path / "run" / "artifacts" / "hard.fp32.onnx").exists()


def test_an_opset_the_devices_tensorrt_rejects_is_refused_before_any_work(tmp_path):
    """Xavier NX's TensorRT 8.5 parses opsets 7-17: a recipe that fixes 18 is refused at once (no run
    directory, exit 2); one that fixes none gets 17 (the export stage's default 18, capped)."""
    stages = [{"stage": "train", "epochs": 1}, {"stage": "export_onnx", "opset": 18}, {"stage": "build_engine"}]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"model": "mlp", "data": "digits", "device": "jetson-xavier-nx",
                                  "targets": ["tensorrt"], "stages": stages}))
    code, out = run_cli(["compress", str(recipe), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2 and not (tmp_path / "run").exists()
    assert "stages.export_onnx.opset=18: TensorRT 8.5.2" in out and "opsets 7 to 17" in out and "takes 17" in out
    del stages[1]["opset"]
    recipe.write_text(json.dumps({"model": "mlp", "data": "digits", "device": "jetson-xavier-nx",
                                  "targets": ["tensorrt"], "stages": stages}))
    code, out = run_cli(["compress", str(recipe), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0, out
    model = onnx.load(str(tmp_path / "run" / "artifacts" / "mlp.fp32.onnx"))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    plan = json.loads(next((tmp_path / "run" / "tensorrt").glob("*.plan.json")).read_text())
    assert plan["lint"]["passed"] and plan["tensorrt"]["version"] == "8.5.2"
    assert plan["commands"]["edgedl"] is None and "Python 3.8" in plan["edgedl_cannot_run"]  # JetPack 5's Python
    script = (tmp_path / "run" / "tensorrt" / "build_on_device.sh").read_text()
    assert "\ntrtexec --onnx=mlp.fp32.onnx --saveEngine=mlp.fp32.engine" in script and "edgedl build-engine" not in script


# ---- plans, commands, cache key ---------------------------------------------------------------

def test_trtexec_lines_follow_each_versions_typing():
    p = tp.Profile({"input": ([1, 3, 8, 8], [4, 3, 8, 8], [8, 3, 8, 8])}, ["input"])
    opts = tp.BuildOptions(batch=(1, 4, 8))
    line = lambda precision, v, o=opts: tp.trtexec_command("m.onnx", "m.engine", o, precision, resolve(v), p)  # noqa
    assert "--int8" in line("int8", "8.6") and "--stronglyTyped" not in line("int8", "8.6")
    assert "--stronglyTyped" in line("int8", "10.3") and "--int8" not in line("int8", "10.3")
    assert not {"--int8", "--stronglyTyped", "--fp16"} & set(line("int8", "11"))  # strong typing is always on in 11
    assert "--fp16" in line("fp16", "10.3") and line("fp16", "11")[1] == "--onnx=m.fp16.onnx"
    assert line("int8", "10.3")[-3:] == ["--minShapes=input:1x3x8x8", "--optShapes=input:4x3x8x8",
                                         "--maxShapes=input:8x3x8x8"]
    full = tp.BuildOptions(dla_core=1, sparsity=True, workspace_mb=512, timing_cache="t.cache", version_compatible=True)
    flags = line("fp16", "10.3", full)
    assert {"--useDLACore=1", "--allowGPUFallback", "--sparsity=enable", "--memPoolSize=workspace:512",
            "--timingCacheFile=t.cache", "--versionCompatible"} <= set(flags)
    assert tp.build_engine_command("m.onnx", "m.engine", full) == [
        "edgedl", "build-engine", "m.onnx", "--out", "m.engine", "--precision", "auto", "--dla", "1", "--sparsity",
        "--workspace", "512", "--timing-cache", "t.cache", "--version-compatible"]


def test_the_cache_key_changes_with_every_input_that_changes_the_engine():
    p = tp.Profile({"input": ([1, 3, 8, 8],) * 3})
    base = dict(onnx_sha256="a" * 64, tensorrt_version="10.3", compute_capability="8.7", precision="int8")
    key = lambda o=tp.BuildOptions(), prof=p, **kw: tp.cache_key(**{**base, **kw}, options=o, profile=prof)  # noqa
    same = key()
    assert same == key() and same == key(o=tp.BuildOptions(timing_cache="other.cache"))  # the cache only saves time
    changed = [key(onnx_sha256="b" * 64), key(tensorrt_version="10.3.1"), key(compute_capability="8.6"),
               key(precision="fp16"), key(o=tp.BuildOptions(dla_core=0)), key(o=tp.BuildOptions(sparsity=True)),
               key(o=tp.BuildOptions(version_compatible=True)), key(o=tp.BuildOptions(hardware_compatible=True)),
               key(o=tp.BuildOptions(workspace_mb=64)), key(prof=tp.Profile({"input": ([1, 3, 8, 8], [2, 3, 8, 8],
                                                                                         [4, 3, 8, 8])}))]
    assert len({same, *changed}) == len(changed) + 1


def test_bad_build_options_are_refused_before_any_work(tmp_path, jetson_run):
    fp32 = jetson_run / "artifacts" / "resnet8.distilled.fp32.onnx"
    with pytest.raises(UsageError, match="--batch 4,2,8: needs 1 <= MIN <= OPT <= MAX"):
        tp.BuildOptions(batch=(4, 2, 8))
    with pytest.raises(UsageError, match="must be MIN,OPT,MAX"):
        tp.parse_batch("1,2")
    code, out = run_cli(["build-engine", str(fp32), "--precision", "int8"])
    assert code == 2 and "needs a Q/DQ ONNX" in out and "--targets tensorrt" in out
    code, out = run_cli(["build-engine", str(fp32), "--precision", "fp32", "--dla", "0"])
    assert code == 2 and "DLA runs FP16 and INT8 only" in out


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown where TensorRT is missing")
def test_build_engine_without_tensorrt_fails_with_one_line(jetson_run):
    code, out = run_cli(["build-engine", str(jetson_run / "artifacts" / "resnet8.distilled.int8.onnx")])
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("error: TensorRT is not installed here: on a Jetson it comes with JetPack")
    code, out = run_cli(["build-engine", str(jetson_run / "artifacts" / "resnet8.distilled.int8.onnx"), "--dry-run",
                         "--device", "jetson-orin-nano"])
    assert code == 0 and "trtexec: trtexec --onnx=" in out and "--stronglyTyped" in out


def test_build_options_map_onto_polygraphys_real_loaders():
    pytest.importorskip("polygraphy", reason="polygraphy is installed with edgedl[tensorrt-plan]")
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, PostprocessConfig

    from edgedl.formats.tensorrt import build as tb

    p = tp.Profile({"input": ([1, 3, 8, 8], [4, 3, 8, 8], [8, 3, 8, 8])}, ["input"])
    opts = tp.BuildOptions(dla_core=1, sparsity=True, workspace_mb=256, timing_cache="t.cache", version_compatible=True)
    args = tb.loader_args("m.onnx", opts, "int8", resolve("10.3"), p)
    # INT8 for a DLA: weakly typed with the INT8 and FP16 flags (layers outside Q/DQ run FP16 on the DLA)
    assert args["network"] == {"path": "m.onnx", "strongly_typed": None, "parser_flags": []}
    assert args["config"] == {"tf32": True, "fp16": True, "int8": True, "sparse_weights": True,
                              "load_timing_cache": "t.cache", "version_compatible": True, "use_dla": True,
                              "allow_gpu_fallback": True}
    assert args["postprocess"] == {"dla_core": 1, "workspace_bytes": 256 * 2**20, "hardware_compatibility": None}
    engine = tb.loaders(args)  # real Polygraphy objects; TensorRT is imported only when they run
    assert isinstance(engine, EngineBytesFromNetwork)
    network, config = engine._network, engine._config
    assert isinstance(network, NetworkFromOnnxPath) and not network.strongly_typed and not network.flags
    assert isinstance(config, PostprocessConfig)
    created = config._config
    assert isinstance(created, CreateConfig) and created.sparse_weights and created.use_dla and created.allow_gpu_fallback
    assert created.tf32 and created.int8 and created.fp16  # TF32 on, as trtexec's default: the plan's two lines agree
    gpu = tb.loader_args("m.onnx", tp.BuildOptions(), "int8", resolve("10.3"), p)
    assert gpu["network"]["strongly_typed"] is True and "int8" not in gpu["config"]
    (profile,) = created.profiles
    assert tuple(profile["input"].min) == (1, 3, 8, 8) and tuple(profile["input"].max) == (8, 3, 8, 8)
    old = tb.loader_args("m.onnx", tp.BuildOptions(), "int8", resolve("8.6"), p)
    assert old["config"] == {"tf32": True, "int8": True} and old["network"]["strongly_typed"] is None  # 8.x: INT8 flag


# ---- the portability guard --------------------------------------------------------------------

def engine_with_sidecar(tmp_path, **sidecar) -> Path:
    from edgedl.artifacts import write_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not a real plan, only bytes to hash")
    write_sidecar(engine, "tensorrt", "int8", {"tensorrt": {"version": "10.3.0", "version_compatible": False},
                                               "gpu": {"name": "Orin", "compute_capability": "8.7"},
                                               "source_onnx": {"name": "m.int8.onnx"}, **sidecar})
    return engine


def test_the_guard_refuses_engines_from_another_gpu_or_tensorrt_and_says_how_to_rebuild(tmp_path):
    from edgedl.runtime import engine_guard as g
    from edgedl.runtime.sidecar import read_sidecar

    engine = engine_with_sidecar(tmp_path)
    side, digest = read_sidecar(engine), read_sidecar(engine)["sha256"]
    orin = {"tensorrt": "10.3.0", "compute_capability": "8.7", "gpu": "Orin"}
    g.check(engine, side, digest, orin, [digest])  # same device: loads
    with pytest.raises(EdgedlError, match=r"built with TensorRT 10.3.0 and this device runs 10.7.0.*edgedl build-engine "
                                          r"m.int8.onnx"):
        g.check(engine, side, digest, {**orin, "tensorrt": "10.7.0"}, [digest])
    with pytest.raises(EdgedlError, match="built for compute capability 8.7 and this GPU is 8.6"):
        g.check(engine, side, digest, {**orin, "compute_capability": "8.6"}, [digest])
    # version-compatible builds run on newer runtimes of the same major, and 10 -> 11, never older ones
    assert g.version_fits("10.3.0", "10.7.0", True) is None and g.version_fits("10.3", "11.4.1", True) is None
    assert "newer than" in g.version_fits("10.7", "10.3", True) and "does not run" in g.version_fits("8.6", "11.0", True)
    assert "8.6 or later" in g.version_fits("8.5.2", "8.6.1", True)
    assert g.hardware_fits("8.6", "9.0", "ampere+") is None and "8.0 or later" in g.hardware_fits("8.6", "7.5", "ampere+")


def test_an_engine_loads_only_when_its_hash_is_pinned(tmp_path, monkeypatch):
    engine = engine_with_sidecar(tmp_path)
    trust = tmp_path / "trusted.txt"
    monkeypatch.setenv("EDGEDL_TRUSTED_ENGINES", str(trust))
    with pytest.raises(TrustError, match=r"m.engine is a TensorRT engine \(native code\) whose sha256 .* is not pinned"):
        rt.load(engine)
    code, out = run_cli(["trust", "add", str(engine)])
    assert code == 0 and "pinned m.engine" in out and str(trust) in out
    assert run_cli(["trust", "add", str(engine)])[0] == 0 and trust.read_text().count("m.engine") == 1
    if not HAS_TRT:  # pinned and matching its sidecar: the next step needs TensorRT itself
        with pytest.raises(EdgedlError, match="TensorRT is not installed here: on a Jetson it comes with JetPack"):
            rt.load(engine)
    engine.write_bytes(b"swapped after the build")
    with pytest.raises(EdgedlError, match="does not match its sidecar"):
        rt.load(engine, verify=False, trusted_engines=[__import__("hashlib").sha256(b"swapped after the build").hexdigest()])
    with pytest.raises(TrustError):  # an app's own pin list replaces the trust file
        rt.load(engine, verify=False, trusted_engines=[])


def test_inspect_of_an_engine_reads_its_sidecar_without_opening_it(tmp_path):
    engine = engine_with_sidecar(tmp_path, io=[{"name": "input", "mode": "input", "shape": [1, 1, 8, 8], "dtype": "int8"}])
    code, out = run_cli(["inspect", str(engine), "--json"])
    info = json.loads(out)
    assert code == 0 and info["format"] == "tensorrt" and info["inputs"][0]["shape"] == [1, 1, 8, 8]
    assert info["engine"]["gpu"]["compute_capability"] == "8.7"


# ---- on a device with TensorRT ----------------------------------------------------------------

@NEEDS_TRT
def test_build_engine_builds_caches_and_runs_on_this_gpu(jetson_run, tmp_path, monkeypatch):
    from edgedl import api

    monkeypatch.setenv("EDGEDL_TRUSTED_ENGINES", str(tmp_path / "trusted.txt"))
    onnx_file = jetson_run / "artifacts" / "resnet8.distilled.int8.onnx"
    out = tmp_path / "m.engine"
    first = api.build_engine(onnx_file, out, tp.BuildOptions(batch=(1, 1, 1)), cache=tmp_path / "cache")
    again = api.build_engine(onnx_file, tmp_path / "again.engine", tp.BuildOptions(batch=(1, 1, 1)),
                             cache=tmp_path / "cache")
    assert not first["cached"] and again["cached"] and first["cache_key"] == again["cache_key"]
    assert first["source_onnx"]["sha256"] and first["gpu"]["compute_capability"]
    with rt.load(out) as m, rt.load(onnx_file) as ref:
        x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
        assert m.backend == "tensorrt" and m.gpu_ms is not None
        assert (m(x).argmax(1) == ref(x).argmax(1)).all()


def run_cli(args: list[str]) -> tuple[int, str]:
    """Run the CLI in this process; return its exit code and what it printed (stdout and stderr)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            main(args)
        except SystemExit as exc:
            return int(exc.code or 0), buf.getvalue()
    return 0, buf.getvalue()
