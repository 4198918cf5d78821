"""Device profiles (every file in devices/ validates), detection on recorded trees, and --device
everywhere the CLI takes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgedl import devices
from edgedl.cli import main
from edgedl.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
PROFILE_FILES = sorted((ROOT / "devices").glob("*.yaml"))
ORIN_NANO_TREE = ROOT / "tests" / "data" / "sysfs" / "jetson-orin-nano"


def cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_the_issue_s_devices_all_have_profiles():
    names = {p.stem for p in PROFILE_FILES}
    assert {"jetson-orin-nano", "jetson-orin-nx-16gb", "jetson-agx-orin-64gb", "jetson-xavier-nx", "jetson-agx-thor",
            "raspberry-pi-4", "raspberry-pi-5", "pixel-8", "generic-x86-64", "generic-arm64", "nvidia-h100"} <= names
    assert {p.name for p in devices.list_profiles()} == names  # what the package lists is what devices/ holds


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_every_profile_validates_and_names_its_sources(path):
    profile = devices.load_profile_file(path)
    assert profile.name == path.stem
    for section in (profile.cpu, profile.gpu, profile.memory, profile.peak, profile.software):
        if section is None:
            continue
        figures = [k for k, v in section if isinstance(v, (int, float)) and not isinstance(v, bool)]
        assert not figures or section.source, (path.name, type(section).__name__)
    for sensor in profile.power.sensors:
        rails = {r.label: r for r in sensor.rails}
        assert all(rails[t].role in ("total", "module") for t in sensor.total)
    if profile.kind == "jetson":
        sensor = profile.sensor("ina3221")
        assert sensor is not None and sensor.total and profile.gpu.compute_capability
        assert profile.memory.unified


def test_jetpack_versions_fix_tensorrt():
    nano = devices.get_profile("jetson-orin-nano").software.jetpack
    assert nano["6.1"].tensorrt == nano["6.2"].tensorrt == "10.3" and nano["6.0"].tensorrt == "8.6.2"
    assert devices.get_profile("jetson-xavier-nx").software.jetpack["5.1"].tensorrt == "8.5.2"
    assert devices.get_profile("jetson-orin-nano").software.release()[0] == "6.2"  # the default, not the newest (7.2)


@pytest.mark.parametrize("patch, message", [
    ({"memory": {"size_gb": "lots"}}, "memory.size_gb: Input should be a valid number"),
    ({"memory": {"size_gb": 8, "bandwidth_gbs": 68}}, "memory: figures ['size_gb', 'bandwidth_gbs'] need a 'source'"),
    ({"cpu": {"model": "x", "cores": 4, "source": "s", "turbo": True}}, "cpu.turbo: Extra inputs are not permitted"),
    ({"power": {"sensors": [{"energy": "ina3221", "source": "s", "total": ["VDD_IN", "VDD_SOC"],
                             "rails": [{"label": "VDD_IN", "role": "total"},
                                       {"label": "VDD_SOC", "role": "sub_rail", "parent": "VDD_IN"}]}]}},
     "total adds 'VDD_SOC', a sub_rail"),
])
def test_a_wrong_profile_field_is_named_by_its_path(patch, message, tmp_path):
    raw = yaml.safe_load((ROOT / "devices" / "jetson-orin-nano.yaml").read_text())
    raw.update(patch)
    path = tmp_path / "jetson-orin-nano.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UsageError) as exc:
        devices.load_profile_file(path)
    assert message in str(exc.value) and str(exc.value).startswith("device profile jetson-orin-nano.yaml: ")


def test_unknown_device_lists_the_known_ones(capsys, tmp_path):
    with pytest.raises(UsageError, match="unknown device 'orin'; known devices: generic-arm64, generic-x86-64, jetson"):
        devices.get_profile("orin")
    for args in (["devices", "show", "orin"], ["bench", ORIN_NANO_TREE / "README.md", "--device", "orin"],
                 ["compress", "--model", "mlp", "--data", "random:1x8x8", "--device", "orin", "--print-recipe"]):
        code, _, err = cli(args, capsys)
        assert code in (1, 2) and "unknown device 'orin'; known devices:" in err and "Traceback" not in err, args


def write_tree(root: Path, model: str | None = None, cpuinfo: str | None = None, l4t: str | None = None) -> Path:
    if model:
        (root / "proc/device-tree").mkdir(parents=True, exist_ok=True)
        (root / "proc/device-tree/model").write_text(model + "\0")
    if cpuinfo:
        (root / "proc").mkdir(parents=True, exist_ok=True)
        (root / "proc/cpuinfo").write_text(cpuinfo)
    if l4t:
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc/nv_tegra_release").write_text(l4t)
    return root


@pytest.mark.parametrize("model, expected", [
    ("NVIDIA Jetson AGX Orin Developer Kit", "jetson-agx-orin-64gb"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "jetson-orin-nx-16gb"),
    ("NVIDIA Jetson Xavier NX Developer Kit", "jetson-xavier-nx"),
    ("NVIDIA Jetson AGX Thor Developer Kit", "jetson-agx-thor"),
    ("Raspberry Pi 5 Model B Rev 1.0", "raspberry-pi-5"),
    ("Raspberry Pi 4 Model B Rev 1.4", "raspberry-pi-4"),
])
def test_detection_reads_the_device_tree_model(model, expected, tmp_path):
    found = devices.detect(write_tree(tmp_path, model=model))
    assert found["profile"] == expected and found["generic"] is False and model in found["why"]


def test_detection_of_a_recorded_orin_nano_and_of_unknown_machines(tmp_path, capsys):
    found = devices.detect(ORIN_NANO_TREE)
    assert found["profile"] == "jetson-orin-nano" and found["seen"]["l4t"] == "36.4.3"
    assert found["seen"]["jetpack"] == "6.2"
    arm = devices.detect(write_tree(tmp_path / "arm", model="Some Vendor Board", cpuinfo="CPU implementer\t: 0x41\n"))
    assert arm["profile"] == "generic-arm64" and arm["generic"] and "no profile matches" in arm["why"]
    x86 = devices.detect(write_tree(tmp_path / "x86", cpuinfo="vendor_id\t: GenuineIntel\nflags\t: avx2\n"))
    assert x86["profile"] == "generic-x86-64" and x86["generic"]
    code, out, _ = cli(["devices", "detect", "--sysfs-root", ORIN_NANO_TREE, "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["profile"] == "jetson-orin-nano" and result["energy"]["source"] == "ina3221"
    code, out, _ = cli(["devices", "detect", "--sysfs-root", tmp_path / "x86"], capsys)
    assert code == 0 and out.startswith("generic-x86-64: no profile matches this machine")
    assert "energy: none (not measured: no power sensor here" in out


def test_devices_list_and_show(capsys):
    code, out, _ = cli(["devices", "list"], capsys)
    assert code == 0 and len(out.splitlines()) == len(PROFILE_FILES)
    assert any(line.startswith("jetson-orin-nano") and "energy: ina3221" in line for line in out.splitlines())
    code, out, _ = cli(["devices", "show", "jetson-agx-orin-64gb"], capsys)
    shown = yaml.safe_load(out)
    assert code == 0 and shown["memory"]["bandwidth_gbs"] == 204.8 and "DS-10662" in shown["memory"]["source"]
    assert "VDDQ_VDD2_1V8AO" in shown["power"]["sensors"][0]["total"]


def test_cpu_features_that_decide_int8_speed():
    from edgedl.bench.conditions import cpu_features

    assert cpu_features("flags\t: fpu sse avx2 avx512f avx512_vnni amx_tile amx_int8\n") == [
        "avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8"]
    assert cpu_features("Features\t: fp asimd evtstrm aes asimddp i8mm sve\n") == ["asimd", "asimddp", "i8mm", "sve"]


def test_a_speed_verdict_for_another_device_waits_for_that_device():
    from edgedl.quantization.speed import verdict

    jetson = devices.resolve_device("jetson-orin-nano")
    assert jetson["on_device"] is False and "not from the device" in jetson["note"]
    rounds = [(1.0, [1.0, 1.0])], [(1.25, [1.25, 1.25])]  # the float file at 1 ms, the candidate at 1.25 ms
    gate = verdict(*rounds, "int8", "m.fp32.onnx", 1.1, jetson)
    assert gate["passed"] is None and "waits for a bench on the device" in gate["verdict"]
    assert "0.80x" in gate["verdict"] and "not faster" not in gate["verdict"]
    here = verdict(*rounds, "int8", "m.fp32.onnx", 1.1, devices.resolve_device(None))
    assert here["passed"] is False and "keep m.fp32.onnx" in here["verdict"]


def test_inspect_says_whether_a_device_runs_the_file(tiny_conv_onnx, capsys):
    code, out, _ = cli(["inspect", tiny_conv_onnx, "--device", "pixel-8", "--json"], capsys)
    fit = json.loads(out)["device"]
    assert code == 0 and fit["runtimes"] == [] and "has no runtime for onnx files (it runs litert)" in fit["problems"][0]
    code, out, _ = cli(["inspect", tiny_conv_onnx, "--device", "jetson-orin-nano", "--json"], capsys)
    assert json.loads(out)["device"]["runtimes"] == ["onnxruntime", "tensorrt"]
