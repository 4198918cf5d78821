"""What happens on the Jetson, decided here: per TensorRT version and device profile, which flags, parser
flags, typing, cuda-python range and guard verdict; and, through a test double of TensorRT's module
(tests/trt_double.py: not TensorRT), what edgedl sets on TensorRT's runtime before it deserializes.

Each case was written against NVIDIA's sources (TensorRT's headers, Python bindings and trtexec on the
release/8.2, 8.5, 8.6, 10.3 and 11.1 branches; onnx-tensorrt's parsers; the version-compatibility, DLA
and support-matrix pages): the docstrings name the source.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgedl.runtime as rt
import trt_double
from edgedl.devices import get_profile, list_profiles
from edgedl.errors import EdgedlError, UsageError
from edgedl.formats.tensorrt import plan as tp
from edgedl.formats.tensorrt.lint import lint
from edgedl.formats.tensorrt.versions import edgedl_on_device, resolve
from edgedl.runtime import engine_guard as guard
from edgedl.runtime.cuda_mem import cuda_python_spec
from test_tensorrt import rules, run_cli

JETSONS = [p.name for p in list_profiles() if p.kind == "jetson"]
VERSIONS = ("8.2", "8.5", "8.6", "10.3", "10.7", "11.4.1")

# The flags each trtexec takes, read from samples/common/sampleOptions.cpp on NVIDIA/TensorRT's release
# branches (the flags edgedl writes; getAndDelOption and getAndDelNegOption names).
TRTEXEC_FLAGS = {
    "8.2": {"onnx", "saveEngine", "fp16", "int8", "minShapes", "optShapes", "maxShapes", "useDLACore",
            "allowGPUFallback", "sparsity", "workspace", "timingCacheFile", "noTF32"},
    "8.5": {"onnx", "saveEngine", "fp16", "int8", "minShapes", "optShapes", "maxShapes", "useDLACore",
            "allowGPUFallback", "sparsity", "memPoolSize", "timingCacheFile", "noTF32"},
}
TRTEXEC_FLAGS["8.6"] = TRTEXEC_FLAGS["8.5"] | {"versionCompatible", "hardwareCompatibilityLevel"}
TRTEXEC_FLAGS["10"] = TRTEXEC_FLAGS["8.6"] | {"stronglyTyped"}
TRTEXEC_FLAGS["11"] = TRTEXEC_FLAGS["10"] - {"fp16", "int8"}


def accepted(line: list[str], version: str) -> set[str]:
    """The flags of a trtexec line its version does not take (empty: all taken)."""
    key = {"8": version[:3]}.get(version[0], version.split(".")[0])
    flags = {arg[2:].split("=")[0] for arg in line[1:]}
    return flags - TRTEXEC_FLAGS[key]


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    """A small convolutional network at opset 13, which every TensorRT from 8.2 parses."""
    rng = np.random.default_rng(0)
    w = lambda *s: onnx.numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.1)  # noqa: E731
    inits = [w(8, 1, 3, 3), w(8), w(8, 10), w(10)]
    for init, name in zip(inits, ("cw", "cb", "fw", "fb")):
        init.name = name
    nodes = [helper.make_node("Conv", ["input", "cw", "cb"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], name="fc")]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("small") / "small.fp32.onnx"
    onnx.save(model, str(path))
    return path


# ---- each Jetson profile: its default TensorRT, CUDA, cuda-python, and a dry run it accepts -------

EXPECTED = {  # profile: (JetPack, TensorRT, CUDA, cuda-python, whether edgedl runs there)
    "jetson-nano": ("4.6", "8.2.1", "10.2", None, False),
    "jetson-xavier-nx": ("5.1", "8.5.2", "11.4", None, False),
    "jetson-orin-nano": ("6.2", "10.3", "12.6", "cuda-python>=12.0,<13", True),
    "jetson-orin-nx-16gb": ("6.2", "10.3", "12.6", "cuda-python>=12.0,<13", True),
    "jetson-agx-orin-64gb": ("6.2", "10.3", "12.6", "cuda-python>=12.0,<13", True),
    "jetson-agx-thor": ("7.1", "10.13.3", "13.0", "cuda-python>=13.0,<14", True),
}


def test_every_jetson_profile_says_which_tensorrt_cuda_and_cuda_python_it_takes():
    assert sorted(EXPECTED) == sorted(JETSONS)
    for name, (jetpack, trt, cuda, spec, runs) in EXPECTED.items():
        profile = get_profile(name)
        default, release = profile.software.release()
        assert (default, release.tensorrt, release.cuda) == (jetpack, trt, cuda), name
        assert cuda_python_spec(release.cuda) == spec, name
        assert (edgedl_on_device(release, resolve(None, profile)) is None) == runs, name
        assert resolve(None, profile).version == trt
    # cuda-python 13 dropped cuda.cudart and needs CUDA 13: never offered for JetPack 6 (CUDA 12.2 or 12.6)
    assert cuda_python_spec("12.2") == "cuda-python>=12.0,<13" and cuda_python_spec("13.2") == "cuda-python>=13.0,<14"
    agx = get_profile("jetson-agx-orin-64gb").software.jetpack
    assert agx["7.2.2"].tensorrt == "11.4.1" and agx["7.2"].tensorrt == "10.16"


@pytest.mark.parametrize("device", JETSONS)
def test_a_dry_run_for_each_jetson_prints_a_trtexec_line_its_tensorrt_accepts(device, small_onnx):
    precision = "fp16"  # every Jetson runs FP16 (the Nano's Maxwell has no INT8)
    code, out = run_cli(["build-engine", str(small_onnx), "--dry-run", "--device", device, "--precision", precision,
                         "--workspace", "256"])
    assert code == 0, out
    version = resolve(None, get_profile(device)).version
    line = next(x for x in out.splitlines() if x.startswith("trtexec: ")).split()[1:]
    assert line[0] == "trtexec" and not accepted(line, version), (device, accepted(line, version))
    assert f"--saveEngine={small_onnx.parent / 'small.fp16.engine'}" in line  # beside the ONNX, named by precision
    edgedl_line = next(x for x in out.splitlines() if x.startswith("edgedl: "))
    if EXPECTED[device][4]:
        assert edgedl_line.startswith("edgedl: edgedl build-engine") and f"pip install '{EXPECTED[device][3]}'" in out
    else:
        assert "cannot run there" in edgedl_line and "trtexec line" in edgedl_line
    if version.startswith("8.2"):
        assert "--workspace=256" in line  # --memPoolSize came in 8.4


def test_a_tensorrt_version_asked_for_picks_the_jetpack_that_ships_it(small_onnx):
    from edgedl.formats.tensorrt.engine import target

    agx = "jetson-agx-orin-64gb"
    assert target(agx, None)[2][0] == "6.2" and target(agx, "10.3")[2][0] == "6.2"  # the default, not 6.1
    assert target(agx, "8.6")[2][0] == "6.0" and target(agx, "11.4.1")[2][0] == "7.2.2"
    assert target("jetson-xavier-nx", "10.3")[2] is None  # no Xavier JetPack ships 10.3
    # a major version alone stands for its newest table, and has that version's abilities
    assert resolve("10").version == "10.15" and resolve("10").dla_missing() and resolve("8").has_compatibility_modes
    code, out = run_cli(["build-engine", str(small_onnx), "--dry-run", "--device", "jetson-xavier-nx", "--tensorrt",
                         "10.3", "--precision", "fp16"])
    assert code == 0 and "no JetPack in edgedl's jetson-xavier-nx profile ships TensorRT 10.3" in out
    code, out = run_cli(["build-engine", str(small_onnx), "--dry-run", "--device", "nvidia-h100", "--precision", "fp16"])
    assert code == 0 and "device: x86_64\n" in out and "JetPack" not in out


@pytest.mark.parametrize("version", VERSIONS)
def test_every_option_gives_a_trtexec_line_its_version_takes(version):
    """INT8 and FP16, with and without a DLA, TF32 off, a workspace, a timing cache, sparsity and (from
    8.6) version compatibility: no flag the version's trtexec lacks."""
    trt = resolve(version)
    p = tp.Profile({"input": ([1, 1, 8, 8], [2, 1, 8, 8], [4, 1, 8, 8])}, ["input"])
    for precision in ("int8", "fp16", "fp32"):
        for dla in (None, 0):
            options = tp.BuildOptions(dla_core=dla, tf32=False, workspace_mb=64, timing_cache="t.cache", sparsity=True,
                                      version_compatible=trt.has_compatibility_modes)
            line = tp.trtexec_command("m.onnx", "m.engine", options, precision, trt, p)
            assert not accepted(line, version), (version, precision, dla, accepted(line, version))
            assert "--noTF32" in line


def test_a_dry_run_whose_lint_rejects_the_file_exits_1(jetson_run):
    """The run's ONNX is opset 18: Xavier NX's TensorRT 8.5 parses 7-17."""
    code, out = run_cli(["build-engine", str(jetson_run / "artifacts" / "resnet8.distilled.fp32.onnx"), "--dry-run",
                         "--device", "jetson-xavier-nx"])
    assert code == 1 and "would be REJECTED" in out and "opset 18 is outside TensorRT 8.5.2's range 7-17" in out


# ---- what each version builds (decisions as plain functions) -------------------------------------

def test_compatibility_flags_are_refused_where_the_version_or_the_device_has_none(small_onnx, tmp_path):
    """8.5 has no VERSION_COMPATIBLE, HardwareCompatibilityLevel or trtexec flags for them (release/8.5);
    hardware compatibility is for Ampere-or-newer discrete GPUs, not JetPack."""
    vc, hc = tp.BuildOptions(version_compatible=True), tp.BuildOptions(hardware_compatible=True)
    for version in ("8.2", "8.5"):
        for options in (vc, hc):
            with pytest.raises(UsageError, match=f"TensorRT {version} has no version- or hardware-compatible"):
                tp.check_options(options, resolve(version))
    tp.check_options(vc, resolve("8.6"), get_profile("jetson-orin-nano"))  # version compatibility: fine on a Jetson
    for device in JETSONS:
        with pytest.raises(UsageError, match="not on JetPack"):
            tp.check_options(hc, resolve("10.3"), get_profile(device))
    with pytest.raises(UsageError, match="not on JetPack"):
        tp.check_options(hc, resolve("10.3"), None, on_jetson=True)
    tp.check_options(hc, resolve("10.3"), get_profile("nvidia-h100"))
    code, out = run_cli(["build-engine", str(small_onnx), "--dry-run", "--device", "jetson-xavier-nx",
                         "--version-compatible", "--out", str(tmp_path / "x.engine")])
    lines = [x for x in out.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and "TensorRT 8.5.2 has no version- or hardware-compatible" in lines[0]
    assert not list(tmp_path.iterdir())


def test_8_6_sets_the_native_instancenorm_parser_flag_for_compatible_builds():
    """Off by default in 8.6's parser and "required when building version-compatible or hardware-compatible
    engines" (NvOnnxParser.h, 8.6-GA); on by default from 10.0. Polygraphy replaces the parser's flags
    with the list it is given, so edgedl passes one only where it adds to the defaults."""
    from edgedl.formats.tensorrt import build as tb

    p = tp.Profile({"input": ([1, 1, 8, 8],) * 3})
    vc = tp.BuildOptions(version_compatible=True)
    assert tb.loader_args("m.onnx", vc, "fp16", resolve("8.6"), p)["network"]["parser_flags"] == ["NATIVE_INSTANCENORM"]
    assert tb.loader_args("m.onnx", tp.BuildOptions(hardware_compatible=True), "fp16", resolve("8.6"), p)[
        "network"]["parser_flags"] == ["NATIVE_INSTANCENORM"]
    for version in ("10.3", "10.7", "11.4.1"):
        assert tb.loader_args("m.onnx", vc, "fp16", resolve(version), p)["network"]["parser_flags"] == []
    assert tb.loader_args("m.onnx", tp.BuildOptions(), "fp16", resolve("8.6"), p)["network"]["parser_flags"] == []


def test_the_parser_flag_reaches_polygraphys_network_loader(monkeypatch):
    pytest.importorskip("polygraphy", reason="polygraphy is installed with edgedl[tensorrt-plan]")
    from edgedl.formats.tensorrt import build as tb

    double = trt_double.make("8.6.2")
    monkeypatch.setitem(sys.modules, "tensorrt", double)
    args = tb.loader_args("m.onnx", tp.BuildOptions(version_compatible=True), "fp16", resolve("8.6"),
                          tp.Profile({"input": ([1, 1, 8, 8],) * 3}))
    network = tb.loaders(args)._network
    assert network.flags == [double.OnnxParserFlag.NATIVE_INSTANCENORM]


def test_tf32_is_the_same_on_both_command_lines_and_in_the_cache_key():
    """Polygraphy's CreateConfig clears TF32 unless tf32=True; trtexec keeps it unless --noTF32. edgedl
    decides once (default: off for an fp32 engine, on for fp16 and int8 builds) and says it on both."""
    pytest.importorskip("polygraphy", reason="polygraphy is installed with edgedl[tensorrt-plan]")
    from edgedl.formats.tensorrt import build as tb

    p = tp.Profile({"input": ([1, 1, 8, 8],) * 3})
    for version in VERSIONS:
        trt = resolve(version)
        for options, precision, tf32 in ((tp.BuildOptions(), "fp32", False), (tp.BuildOptions(), "fp16", True),
                                         (tp.BuildOptions(tf32=True), "fp32", True),
                                         (tp.BuildOptions(tf32=False), "int8", False)):
            line = tp.trtexec_command("m.onnx", "m.engine", options, precision, trt, p)
            assert ("--noTF32" not in line) == tf32, (version, options, precision)
            assert bool(tb.loaders(tb.loader_args("m.onnx", options, precision, trt, p))._config.tf32) == tf32
    assert tp.build_engine_command("m.onnx", "m.engine", tp.BuildOptions(tf32=False))[-1] == "--no-tf32"
    assert "--tf32" not in tp.build_engine_command("m.onnx", "m.engine", tp.BuildOptions())  # the default says itself
    key = lambda o, precision="fp16": tp.cache_key("a" * 64, "10.3", "8.7", precision, o, p)  # noqa: E731
    assert key(tp.BuildOptions()) != key(tp.BuildOptions(tf32=False))
    assert key(tp.BuildOptions(), "fp32") == tp.cache_key("a" * 64, "10.3", "8.7", "fp32", tp.BuildOptions(tf32=False), p)


def test_int8_for_a_dla_is_built_so_that_layers_outside_qdq_stay_on_the_dla():
    """A DLA runs FP16 and INT8 only: before 11, the INT8 and FP16 flags, weakly typed (NVIDIA's DLA
    samples); 11 is strongly typed only (its "Strongly Typed Networks for DLA")."""
    p = tp.Profile({"input": ([1, 1, 8, 8],) * 3})
    dla = tp.BuildOptions(dla_core=0)
    for version in ("8.5", "8.6", "10.3", "10.7"):
        line = tp.trtexec_command("m.onnx", "m.engine", dla, "int8", resolve(version), p)
        assert {"--int8", "--fp16", "--useDLACore=0", "--allowGPUFallback"} <= set(line) and "--stronglyTyped" not in line
    assert "--stronglyTyped" in tp.trtexec_command("m.onnx", "m.engine", tp.BuildOptions(), "int8", resolve("10.3"), p)
    line = tp.trtexec_command("m.onnx", "m.engine", dla, "int8", resolve("11.4.1"), p)
    assert not {"--int8", "--fp16"} & set(line) and "--useDLACore=0" in line


def test_dla_exists_only_in_the_versions_and_devices_that_have_one():
    """TensorRT 10.7 was the last 10.x with DLA; 11.0-11.3 had none; 11.4.1 has it on AGX Orin under
    JetPack 7.2.2 (NVIDIA's "Working with DLA", 11.4.1)."""
    assert [resolve(v).dla_missing() is None for v in ("8.5", "8.6", "10.3", "10.7", "10.8", "10.16", "11.0", "11.3",
                                                         "11.4.1")] == [True] * 4 + [False] * 4 + [True]
    agx, nano = get_profile("jetson-agx-orin-64gb"), get_profile("jetson-orin-nano")
    tp.check_options(tp.BuildOptions(dla_core=1), resolve("10.3"), agx)
    with pytest.raises(UsageError, match="has 2 DLA core"):
        tp.check_options(tp.BuildOptions(dla_core=2), resolve("10.3"), agx)
    with pytest.raises(UsageError, match="Orin Nano 8GB has no DLA"):
        tp.check_options(tp.BuildOptions(dla_core=0), resolve("10.3"), nano)
    with pytest.raises(UsageError, match="10.16 has no DLA support"):
        tp.check_options(tp.BuildOptions(dla_core=0), resolve("10.16"), agx)
    tp.check_options(tp.BuildOptions(dla_core=0), resolve("11.4.1"), agx)


def test_the_dla_lint_says_where_layers_outside_qdq_pairs_run(tmp_path, jetson_run):
    """x -> Q/DQ -> Conv (INT8 weights) -> Sigmoid -> Conv (float weights): the last two are outside any
    Q/DQ pair, so FP32 as written."""
    zero = lambda name, n=1: onnx.numpy_helper.from_array(np.zeros(n, np.int8) if n > 1 else np.int8(0), name)  # noqa
    inits = [onnx.numpy_helper.from_array(np.float32(0.05), "s"), zero("zp"),
             onnx.numpy_helper.from_array(np.full(4, 0.01, np.float32), "ws"), zero("wzp", 4),
             onnx.numpy_helper.from_array(np.ones((4, 4, 3, 3), np.int8), "wq"),
             onnx.numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), "w2")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["w"], axis=0),
             helper.make_node("Conv", ["xd", "w"], ["c"], pads=[1, 1, 1, 1], name="conv_int8"),
             helper.make_node("Sigmoid", ["c"], ["g"], name="gate"),
             helper.make_node("Conv", ["g", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv_float")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    int8 = tmp_path / "mixed.int8.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(int8))
    agx = get_profile("jetson-agx-orin-64gb")
    on_10 = lint(int8, "10.3", profile=agx, dla=True)
    (info,) = rules(on_10, "info")["dla_fp16_outside_qdq"]
    assert info["message"].startswith("2 layer(s) outside Q/DQ pairs (gate, conv_float)") and "FP16" in info["fix"]
    assert on_10["passed"] and "gpu_fallback" not in {f["severity"] for f in on_10["findings"]}
    on_11 = lint(int8, "11.4.1", profile=agx, dla=True)
    assert sorted(f["node"] for f in rules(on_11, "gpu_fallback")["dla_fp32_outside_qdq"]) == ["conv_float", "gate"]
    assert "dla_unavailable" in rules(lint(int8, "10.16", profile=agx, dla=True))
    assert "dla_qdq_8x" in rules(lint(int8, "8.6", profile=agx, dla=True), "warning")
    # the run's INT8 ResNet: every layer the DLA runs is in a Q/DQ pair or fused into one
    run = lint(jetson_run / "artifacts" / "resnet8.distilled.int8.onnx", "10.3", profile=agx, dla=True,
               input_shapes={"input": [1, 1, 8, 8]})
    assert "dla_fp16_outside_qdq" not in rules(run, "info") and run["passed"]


# ---- the lint's Q/DQ rules (onnx-tensorrt's QuantDequantLinearHelper, NvInfer.h) -----------------

def qdq_model(tmp_path, *, scale, axis=None, weight=True, scale_dtype=np.float32, constant_scale=True,
              name="q.onnx") -> Path:
    """x -> Conv(DequantizeLinear(int8 weights)) -> y, or a per-axis Q/DQ of the activation x."""
    scale = np.asarray(scale, scale_dtype)
    zero = np.zeros(scale.shape, np.int8)
    attrs = {} if axis is None else {"axis": axis}
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    inits = [onnx.numpy_helper.from_array(zero, "zp")]
    inputs = [x]
    if constant_scale:
        inits.append(onnx.numpy_helper.from_array(scale, "s"))
    else:
        inputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, list(scale.shape)))
    if weight:
        inits.append(onnx.numpy_helper.from_array(np.ones((4, 4, 3, 3), np.int8), "wq"))
        nodes = [helper.make_node("DequantizeLinear", ["wq", "s", "zp"], ["w"], name="dq_w", **attrs),
                 helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    else:
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q_x", **attrs),
                 helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq_x", **attrs),
                 helper.make_node("Conv", ["xd", "cw"], ["y"], name="conv")]
        inits.append(onnx.numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), "cw"))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_the_lint_checks_qdq_scales_and_per_axis_quantization_as_the_parser_does(tmp_path):
    good = qdq_model(tmp_path, scale=[0.1, 0.2, 0.3, 0.4], axis=0)
    assert lint(good, "10.3")["passed"] and lint(good, "8.5")["passed"]
    activation = qdq_model(tmp_path, scale=[0.1, 0.2, 0.3, 0.4], axis=1, weight=False, name="act.onnx")
    assert {f["node"] for f in rules(lint(activation, "10.3"))["qdq_per_axis_activation"]} == {"q_x", "dq_x"}
    wrong_axis = qdq_model(tmp_path, scale=[0.1, 0.2, 0.3, 0.4], axis=1, name="axis1.onnx")
    (finding,) = rules(lint(wrong_axis, "10.3"))["qdq_per_axis_axis"]
    assert finding["node"] == "dq_w" and "axis 0 here" in finding["message"]
    implicit = qdq_model(tmp_path, scale=[0.1, 0.2, 0.3, 0.4], name="implicit.onnx")  # ONNX's default axis is 1
    assert "qdq_axis_implicit" in rules(lint(implicit, "8.6"), "warning") and "qdq_per_axis_axis" in rules(lint(implicit,
                                                                                                                 "8.6"))
    zero = qdq_model(tmp_path, scale=[0.1, 0.0, 0.3, 0.4], axis=0, name="zero.onnx")
    assert rules(lint(zero, "10.3"))["qdq_scale_positive"][0]["node"] == "dq_w"
    half = qdq_model(tmp_path, scale=[0.1, 0.2, 0.3, 0.4], axis=0, scale_dtype=np.float16, name="half.onnx")
    assert "qdq_scale_type" in rules(lint(half, "8.6")) and lint(half, "10.3")["passed"]  # 8.x reads float32 bytes
    runtime = qdq_model(tmp_path, scale=0.1, weight=False, constant_scale=False, name="runtime.onnx")
    assert "qdq_scale_constant" in rules(lint(runtime, "10.3")) and "qdq_scale_constant" not in rules(lint(runtime,
                                                                                                             "10.15"))


# ---- the guard: platform, compute capability, DLA, full version -----------------------------------

def test_the_guard_never_passes_an_unknown_compute_capability():
    assert "could not be read" in guard.hardware_fits("8.7", None, None)
    assert "does not say which compute capability" in guard.hardware_fits(None, "8.7", None)
    assert guard.hardware_fits("8.7", "8.7", None) is None


def test_the_guard_refuses_across_platforms_and_full_versions():
    jetson, sbsa = {"platform": "aarch64-jetson"}, {"platform": "aarch64-sbsa"}
    assert "aarch64-sbsa" in guard.platform_fits(jetson, sbsa) and guard.platform_fits(jetson, jetson) is None
    assert guard.platform_fits({"platform": "x86_64"}, jetson) == ("it was built on the x86_64 build of TensorRT and "
                                                                   "this device runs aarch64-jetson")
    assert guard.hardware_fits("8.7", "8.7", "ampere+", jetson=True) == "hardware-compatible engines do not run on JetPack"
    assert guard.hardware_fits("8.6", "8.9", "ampere+") is None
    assert "this device runs 10.3.0.30" in guard.version_fits("10.3.0.26", "10.3.0.30", False)  # the build number too
    assert guard.version_fits("10.3.0.30", "10.3.0.30", False) is None
    assert "8.0 or later" in guard.hardware_fits("7.5", "8.6", "ampere+")  # built on Turing: no ampere+ engine


def test_a_dla_engine_is_refused_on_a_device_without_that_dla():
    """AGX Orin to Orin Nano: same compute capability, same TensorRT, no DLA."""
    assert guard.dla_fits(0, None, 0) == "this device has no DLA (the engine is for DLA core 0)"
    assert "DLA core 1 does not exist" in guard.dla_fits(0, 1, 1)
    assert guard.dla_fits(0, 1, 2) is None and guard.dla_fits(None, None, 0) is None


# ---- through the TensorRT double: what is set on TensorRT's runtime ---------------------------------

def built_engine(tmp_path, **facts) -> Path:
    from edgedl.artifacts import write_sidecar

    engine = tmp_path / "m.int8.engine"
    engine.write_bytes(b"plan bytes (the double does not read them)")
    sidecar = {"tensorrt": {"version": "10.3.0.30", "version_compatible": False}, "dla_core": None,
               "gpu": {"name": "Orin", "compute_capability": "8.7"}, "platform": {"platform": "aarch64-jetson"},
               "source_onnx": {"name": "m.int8.onnx"}, "io": []}
    for key, value in facts.items():
        sidecar[key] = {**sidecar[key], **value} if isinstance(value, dict) else value
    write_sidecar(engine, "tensorrt", "int8", sidecar)
    return engine


@pytest.fixture
def on_a_jetson(monkeypatch):
    """This process as an Orin: TensorRT is the double, the GPU facts and the CUDA stream are stand-ins."""
    from edgedl.runtime import cuda_mem, platform

    def install(version="10.3.0.30", dla_cores=0, version_compatible_plans=False):
        double = trt_double.make(version, dla_cores, version_compatible_plans)
        monkeypatch.setitem(sys.modules, "tensorrt", double)
        monkeypatch.setattr(cuda_mem, "gpu_facts", lambda index=0: {"gpu": "Orin", "compute_capability": "8.7"})
        monkeypatch.setattr(cuda_mem, "Stream", lambda: type("S", (), {"free": lambda self: None})())
        monkeypatch.setattr(platform, "this_platform",
                            lambda root="/": {"platform": "aarch64-jetson", "jetson": True, "l4t": "36.4.3"})
        return double
    return install


def test_a_version_compatible_engine_is_deserialized_with_host_code_allowed(tmp_path, on_a_jetson):
    double = on_a_jetson("10.7.0.23", version_compatible_plans=True)
    engine = built_engine(tmp_path, tensorrt={"version": "10.3.0.30", "version_compatible": True})
    digest = json.loads((tmp_path / "m.int8.engine.json").read_text())["sha256"]
    with rt.load(engine, trusted_engines=[digest]) as m:
        assert [i.name for i in m.inputs] == ["input"]
    runtime = double.runtimes[-1]
    assert runtime.calls[0] == ("engine_host_code_allowed", True) and runtime.calls[1][0] == "deserialize_cuda_engine"
    plain = trt_double.make("10.3.0.30")
    from edgedl.runtime.tensorrt import deserialize

    runtime, loaded = deserialize(plain, b"x", version_compatible=False, dla_core=None)
    assert loaded is not None and [c[0] for c in runtime.calls] == ["deserialize_cuda_engine"]  # never without need


def test_the_build_reads_its_version_compatible_engine_back_before_writing_it(tmp_path, on_a_jetson, monkeypatch,
                                                                               small_onnx):
    """build-engine --version-compatible deserializes what it built (its I/O, and proof that it loads) with
    host code allowed; an engine that does not deserialize leaves no file and no cache entry. TensorRT's
    build itself (Polygraphy's loaders) is replaced by the plan's bytes: it needs a GPU."""
    from edgedl.formats.tensorrt import build as tb
    from edgedl.formats.tensorrt.engine import build_engine

    double = on_a_jetson("10.3.0.30", version_compatible_plans=True)
    monkeypatch.setattr(tb, "build", lambda args: b"a version-compatible plan")
    out, cache = tmp_path / "m.engine", tmp_path / "cache"
    sidecar = build_engine(small_onnx, out, tp.BuildOptions(version_compatible=True, precision="fp16"), cache=cache)
    assert double.runtimes[-1].calls[0] == ("engine_host_code_allowed", True)
    assert out.read_bytes() == b"a version-compatible plan" and sidecar["tensorrt"]["version_compatible"]
    assert sidecar["tensorrt"]["tf32"] is True and sidecar["tensorrt"]["parser_flags"] == []  # 10.3: on by default
    assert sidecar["platform"] == {"platform": "aarch64-jetson", "jetson": True, "l4t": "36.4.3"}
    assert [t["name"] for t in sidecar["io"]] == ["input", "logits"] and len(list(cache.glob("*.engine"))) == 1
    # the same plan bytes without the version-compatible flag: TensorRT refuses them, nothing is written
    with pytest.raises(EdgedlError, match="cannot deserialize"):
        build_engine(small_onnx, tmp_path / "n.engine", tp.BuildOptions(precision="fp16"), cache=tmp_path / "c2")
    assert not (tmp_path / "n.engine").exists() and not (tmp_path / "c2").exists()


def test_the_runner_sets_the_dla_core_on_the_runtime_and_refuses_a_missing_dla(tmp_path, on_a_jetson):
    double = on_a_jetson(dla_cores=2)
    engine = built_engine(tmp_path, dla_core=0)
    digest = json.loads((tmp_path / "m.int8.engine.json").read_text())["sha256"]
    with rt.load(engine, trusted_engines=[digest]):
        pass
    assert double.runtimes[-1].calls[0] == ("DLA_core", 0)
    with rt.load(engine, trusted_engines=[digest], compute="dla:1"):  # the second DLA, for a second model
        pass
    assert double.runtimes[-1].calls[0] == ("DLA_core", 1)
    with pytest.raises(EdgedlError, match="DLA core 2 does not exist"):
        rt.load(engine, trusted_engines=[digest], compute="dla:2")
    on_a_jetson(dla_cores=0)  # an Orin Nano: same GPU, same TensorRT, no DLA
    with pytest.raises(EdgedlError, match=r"this device has no DLA \(the engine is for DLA core 0\)"):
        rt.load(engine, trusted_engines=[digest])
    gpu_engine = built_engine(tmp_path)
    with pytest.raises(EdgedlError, match="built for the GPU, not a DLA"):
        rt.load(gpu_engine, trusted_engines=[json.loads(Path(str(gpu_engine) + ".json").read_text())["sha256"]],
                compute="dla:0")


def test_a_cuda_python_for_another_cuda_fails_in_one_line_naming_the_range(monkeypatch):
    """cuda-python 13 on JetPack 6 (CUDA 12.6): every runtime call fails; the sidecar must not record None."""
    from importlib import metadata

    from edgedl.runtime import cuda_mem

    class Cudart:  # a double of cuda.bindings.runtime whose calls fail as a CUDA 13 binding on a 12.6 driver does
        @staticmethod
        def cudaGetDeviceProperties(index):
            return 35, None  # cudaErrorInsufficientDriver

        @staticmethod
        def cudaGetErrorName(err):
            return 0, b"cudaErrorInsufficientDriver"

        @staticmethod
        def cudaDriverGetVersion():
            return 0, 12060

    monkeypatch.setattr(cuda_mem, "cudart", lambda: Cudart)
    monkeypatch.setattr(metadata, "version", lambda dist: "13.4.4")
    with pytest.raises(EdgedlError) as err:
        cuda_mem.gpu_facts()
    assert str(err.value) == ("CUDA cannot read GPU 0 (cudaErrorInsufficientDriver): cuda-python 13.4.4 is built for "
                              "CUDA 13 and this driver runs CUDA 12.6: pip install 'cuda-python>=12.0,<13'")


# ---- what a new user met ---------------------------------------------------------------------------

def test_a_device_without_tensorrt_is_refused_in_one_line_everywhere(tmp_path, small_onnx):
    commands = [["compress", "--model", "mlp", "--data", "digits", "--targets", "tensorrt", "--device", "raspberry-pi-5",
                 "--out", str(tmp_path / "run")],
                ["inspect", str(small_onnx), "--target", "tensorrt", "--device", "raspberry-pi-5"],
                ["build-engine", str(small_onnx), "--dry-run", "--device", "raspberry-pi-5"]]
    for args in commands:
        code, out = run_cli(args)
        lines = [x for x in out.splitlines() if x.strip()]
        assert code == 2 and len(lines) == 1, (args, out)
        assert "Raspberry Pi 5 has no TensorRT" in lines[0] and "jetson-orin-nano" in lines[0]
    assert not (tmp_path / "run").exists()


def test_the_int8_hint_names_the_checkpoint_the_onnx_came_from(jetson_run):
    fp32 = jetson_run / "artifacts" / "resnet8.distilled.fp32.onnx"
    code, out = run_cli(["build-engine", str(fp32), "--precision", "int8", "--device", "jetson-orin-nano"])
    assert code == 2
    assert f"edgedl compress --model {jetson_run / 'artifacts' / 'resnet8.distilled.pt'} --data digits --quantize int8 " \
           "--targets tensorrt --device jetson-orin-nano" in " ".join(out.split())


def test_an_engine_is_named_by_its_precision_beside_its_onnx():
    from edgedl.formats.tensorrt.engine import engine_path

    onnx_file = Path("runs/a/artifacts/x.fp32.onnx")
    assert engine_path(onnx_file, "fp16") == Path("runs/a/artifacts/x.fp16.engine")
    assert engine_path(onnx_file, "fp32") == Path("runs/a/artifacts/x.fp32.engine")
    assert engine_path(Path("m.int8.onnx"), "int8") == Path("m.int8.engine")
    assert engine_path(Path("model.onnx"), "fp16") == Path("model.fp16.engine")


def test_trust_add_pins_only_engines_and_trust_list_says_what_each_is(tmp_path, monkeypatch, small_onnx):
    trust = tmp_path / "trusted.txt"
    monkeypatch.setenv("EDGEDL_TRUSTED_ENGINES", str(trust))
    code, out = run_cli(["trust", "list"])
    assert code == 0 and f"no engines pinned in {trust}" in out
    empty = tmp_path / "empty.engine"
    empty.write_bytes(b"")
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"bytes with no sidecar")
    from edgedl.artifacts import write_sidecar

    onnx_copy = tmp_path / "model.engine"
    onnx_copy.write_bytes(small_onnx.read_bytes())
    write_sidecar(onnx_copy, "onnx", "fp32", {})
    for path, why in ((empty, "empty file"), (bare, "has no sidecar"), (onnx_copy, "says it is onnx")):
        code, out = run_cli(["trust", "add", str(path)])
        assert code == 2 and why in out and len(out.strip().splitlines()) == 1, out
    assert not trust.exists()
    engine = built_engine(tmp_path, dla_core=1, tensorrt={"version": "10.3.0.30", "version_compatible": True})
    code, out = run_cli(["trust", "add", str(engine)])
    assert code == 0 and "pinned m.int8.engine" in out
    code, out = run_cli(["trust", "list"])
    (line, summary) = [x for x in out.splitlines() if x.strip()]
    assert line.startswith("m.int8.engine  ") and "TensorRT 10.3.0.30 (version-compatible)" in line
    assert "Orin (compute capability 8.7)" in line and "aarch64-jetson" in line and "DLA core 1" in line
    assert summary == f"1 engine(s) pinned in {trust}"


def test_the_platform_is_read_from_a_recorded_tree(tmp_path):
    """A tree written by the test stands for a Jetson (no Jetson here): its release file, device tree
    and cpuinfo decide the platform; a container that sees the device tree but no release file is a
    Jetson whose platform is unknown (JetPack 6 and 7 both run Orin, on different TensorRT builds)."""
    from edgedl.runtime.platform import this_platform

    (tmp_path / "etc").mkdir()
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "cpuinfo").write_text("processor : 0\nCPU implementer : 0x41\n")
    (tmp_path / "proc" / "device-tree" / "compatible").write_bytes(b"nvidia,p3768-0000+p3767-0005\x00nvidia,tegra234\x00")
    assert this_platform(tmp_path) == {"platform": None, "jetson": True, "l4t": None}
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic\n")
    assert this_platform(tmp_path) == {"platform": "aarch64-jetson", "jetson": True, "l4t": "36.4.3"}
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic\n")
    assert this_platform(tmp_path)["platform"] == "aarch64-sbsa"
