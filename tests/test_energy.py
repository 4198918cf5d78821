"""Energy sources against ground truth.

No power sensor can exist on this machine, so the sysfs sources read directory trees these tests
write (the files a Jetson's INA3221, a Thor's INA238, JetPack 4's IIO driver and RAPL expose),
driven by an injected clock: the truth is known exactly and nothing depends on this machine's
timing. The NVML source runs for real: without a GPU it must say why, as a null.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from edgedl.bench import session
from edgedl.bench.energy import EnergyUnavailable, SensorLost, integrate, open_source, parse_spec
from edgedl.bench.energy.csv_file import CsvSource
from edgedl.bench.energy.rapl import RaplSource
from edgedl.cli import main
from edgedl.devices import get_profile
from edgedl.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
ORIN_NANO_TREE = ROOT / "tests" / "data" / "sysfs" / "jetson-orin-nano"
HWMON = "sys/bus/i2c/drivers/ina3221/{addr}/hwmon/hwmon{n}"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def write_ina3221(root: Path, addr: str, n: int, channels: list[tuple[str, int, int]]) -> Path:
    """An INA3221 hwmon folder: (label, millivolts, milliamps) per channel, plus the shunt-voltage
    and sum channels a real one has (which must never be read as rails)."""
    d = root / HWMON.format(addr=addr, n=n)
    d.mkdir(parents=True, exist_ok=True)
    (d / "name").write_text("ina3221\n")
    for i, (label, mv, ma) in enumerate(channels, start=1):
        (d / f"in{i}_label").write_text(label + "\n")
        (d / f"in{i}_input").write_text(f"{mv}\n")
        (d / f"curr{i}_input").write_text(f"{ma}\n")
        (d / f"in{i + 3}_input").write_text("1234\n")  # shunt voltage, uV
    (d / "in7_label").write_text("sum of shunt voltages\n")
    (d / "in7_input").write_text("99999\n")
    (d / "curr4_input").write_text("99999\n")
    return d


def set_power(hwmon: Path, channel: int, watts: float, millivolts: int = 5000) -> None:
    (hwmon / f"in{channel}_input").write_text(f"{millivolts}\n")
    (hwmon / f"curr{channel}_input").write_text(f"{round(watts * 1e6 / millivolts)}\n")


def drive(source, clock: Clock, hwmon: Path, truth, t0: float, t1: float, dt: float) -> object:
    """Replay ``truth(t)`` watts into channel 1 every ``dt`` from t0 to t1, polling the source."""
    clock.t = t0
    set_power(hwmon, 1, truth(t0))
    source.start(threaded=False)
    steps = round((t1 - t0) / dt)
    for k in range(1, steps):
        clock.t = t0 + k * dt
        set_power(hwmon, 1, truth(clock.t))
        source.poll()
    clock.t = t1
    set_power(hwmon, 1, truth(t1))
    return source.stop()


@pytest.fixture
def nano_tree(tmp_path) -> tuple[Path, Path]:
    hwmon = write_ina3221(tmp_path, "1-0040", 1, [("VDD_IN", 5000, 1000), ("VDD_CPU_GPU_CV", 5000, 300),
                                                  ("VDD_SOC", 5000, 400)])
    return tmp_path, hwmon


@pytest.mark.parametrize("truth, expected", [
    (lambda t: 5.0 if t < 101.0 else 9.0, 14.0),  # a power step half-way through a 2 s window
    (lambda t: 3.0 + 2.0 * (t - 100.0), 10.0),  # a ramp from 3 to 7 W
])
def test_ina3221_energy_matches_the_truth_of_a_replayed_power_trace(nano_tree, truth, expected):
    root, hwmon = nano_tree
    clock = Clock()
    source, _ = open_source("ina3221", root, get_profile("jetson-orin-nano"), clock=clock)
    window = drive(source, clock, hwmon, truth, 100.0, 102.0, 0.01)
    assert window.samples == 201 and window.seconds == pytest.approx(2.0)
    assert window.energy_j == pytest.approx(expected, rel=0.02)
    assert abs(window.energy_j - expected) <= window.uncertainty_j + 1e-9  # the stated uncertainty covers the error
    assert window.peak_w == pytest.approx(max(truth(100.0), truth(102.0)), rel=1e-3)
    # the sub-rails were read and reported, never added to VDD_IN
    assert window.rails_w["VDD_SOC"] == pytest.approx(2.0) and window.avg_w == pytest.approx(expected / 2, rel=0.02)


def test_agx_orin_sums_its_module_rails_and_skips_nc_and_the_sum_channel(tmp_path):
    write_ina3221(tmp_path, "1-0040", 1, [("VDD_GPU_SOC", 5000, 1200), ("VDD_CPU_CV", 5000, 800),
                                          ("VIN_SYS_5V0", 5000, 600)])
    write_ina3221(tmp_path, "1-0041", 2, [("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 5000, 200), ("NC", 0, 0)])
    clock = Clock()
    source, _ = open_source("ina3221", tmp_path, get_profile("jetson-agx-orin-64gb"), clock=clock)
    source.start(threaded=False)
    clock.t += 1.0
    window = source.stop()
    assert set(window.rails_w) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
    assert window.avg_w == pytest.approx(6.0 + 4.0 + 3.0 + 1.0) and window.energy_j == pytest.approx(14.0)
    assert "VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 + VDDQ_VDD2_1V8AO" in source.describe()


def test_a_sub_rail_is_never_added_to_its_parent_and_a_missing_rail_is_named(nano_tree, tmp_path):
    root, _ = nano_tree
    profile = get_profile("jetson-orin-nano")
    with pytest.raises(EnergyUnavailable, match="VDD_SOC is part of VDD_IN: adding both counts it twice"):
        open_source("ina3221", root, profile, rails=["VDD_IN", "VDD_SOC"])
    other = tmp_path / "other"
    write_ina3221(other, "1-0040", 1, [("VDD_GPU_SOC", 5000, 100)])
    with pytest.raises(EnergyUnavailable, match="rail.s. VDD_IN not found; the power monitor has VDD_GPU_SOC"):
        open_source("ina3221", other, profile)
    # no profile and no VDD_IN: edgedl does not guess which rails make the total
    with pytest.raises(EnergyUnavailable, match="pass --device PROFILE or --rails"):
        open_source("ina3221", other, None)


def test_thor_ina238_reports_microwatts(tmp_path):
    d = tmp_path / "sys/bus/i2c/drivers/ina238/2-0044/hwmon/hwmon3"
    d.mkdir(parents=True)
    (d / "label").write_text("VIN\n")
    (d / "power1_input").write_text("42500000\n")  # 42.5 W in microwatts
    clock = Clock()
    source, _ = open_source("ina3221", tmp_path, get_profile("jetson-agx-thor"), clock=clock)
    source.start(threaded=False)
    clock.t += 0.5
    window = source.stop()
    assert window.avg_w == pytest.approx(42.5) and "INA238" in source.describe()


def test_jetpack4_iio_layout_reads_milliwatts_and_skips_nc(tmp_path):
    d = tmp_path / "sys/bus/i2c/drivers/ina3221x/7-0040/iio:device0"
    d.mkdir(parents=True)
    for i, (label, mw) in enumerate([("VDD_IN", 4100), ("VDD_CPU_GPU_CV", 900), ("NC", 777)]):
        (d / f"rail_name_{i}").write_text(label + "\n")
        (d / f"in_power{i}_input").write_text(f"{mw}\n")
    clock = Clock()
    source, _ = open_source("ina3221", tmp_path, get_profile("jetson-xavier-nx"), clock=clock)
    source.start(threaded=False)
    clock.t += 1.0
    window = source.stop()
    assert window.avg_w == pytest.approx(4.1) and set(window.rails_w) == {"VDD_IN", "VDD_CPU_GPU_CV"}


def write_rapl(root: Path, energy_uj: int, max_uj: int) -> Path:
    zone = root / "sys/class/powercap/intel-rapl:0"
    (zone / "intel-rapl:0:0").mkdir(parents=True, exist_ok=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "intel-rapl:0:0" / "name").write_text("core\n")
    (zone / "intel-rapl:0:0" / "energy_uj").write_text("5\n")
    (root / "sys/class/powercap/intel-rapl:0:0").mkdir(parents=True, exist_ok=True)  # sub-zone link, as sysfs lists it
    return zone


def test_rapl_counts_across_the_counter_wraparound(tmp_path):
    max_uj = 262_143_328_850
    zone = write_rapl(tmp_path, max_uj - 30_000_000, max_uj)
    clock = Clock()
    source, _ = open_source("rapl", tmp_path, None, clock=clock)
    source.start(threaded=False)
    for k, value in enumerate([max_uj - 10_000_000, 10_000_000], start=1):  # 20 W; the second step wraps
        clock.t = 100.0 + k
        (zone / "energy_uj").write_text(f"{value}\n")
        if k == 1:
            source.poll()
    window = source.stop()
    assert window.energy_j == pytest.approx(40.0) and window.avg_w == pytest.approx(20.0)
    assert "package-0" in source.describe()  # the core sub-zone is part of the package: not added


def test_rapl_readable_only_by_root_names_the_fix(tmp_path, monkeypatch):
    """CI runs as root, so file modes cannot show this: the reader raises what a non-root read raises."""
    write_rapl(tmp_path, 1000, 2000)

    def as_user(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text().strip()

    monkeypatch.setattr(RaplSource, "reader", staticmethod(as_user))
    with pytest.raises(EnergyUnavailable, match="readable only by root since CVE-2020-8694.*chmod o\\+r"):
        open_source("rapl", tmp_path, None)
    source, why = open_source("auto", tmp_path, None)  # auto: a null with the same reason, not an error
    assert source is None and "CVE-2020-8694" in why


def test_nvml_without_a_gpu_is_a_null_with_its_reason():
    pytest.importorskip("pynvml", reason="nvidia-ml-py is part of the dev install")
    from edgedl.devices import nvml_names

    if nvml_names():
        pytest.skip("an NVIDIA GPU is present: the counter test below runs instead")
    with pytest.raises(EnergyUnavailable, match="NVML cannot start here"):
        open_source("nvml")


def test_nvml_counter_on_a_real_gpu():
    pytest.importorskip("pynvml", reason="nvidia-ml-py is part of the dev install")
    from edgedl.devices import nvml_names

    if not nvml_names():
        pytest.skip("no NVIDIA GPU (NVML finds no driver) on this machine")
    import time

    source, _ = open_source("nvml")
    source.start()
    time.sleep(source.min_window_s)
    window = source.stop()
    assert window.energy_j > 0 and window.avg_w > 1.0


def test_csv_meter_is_aligned_to_the_window_by_timestamps(tmp_path):
    path = tmp_path / "meter.csv"
    rows = ["# Joulescope-style export", "timestamp,watts"]
    rows += [f"{999.0 + k * 0.01:.2f},{10.0 if 999.0 + k * 0.01 < 1001.0 else 20.0}" for k in range(401)]
    path.write_text("\n".join(rows) + "\n")
    clock = Clock(1000.0)
    source, _ = open_source(f"csv:{path}", clock=clock)
    source.start()
    clock.t = 1002.0
    window = source.stop()
    assert window.energy_j == pytest.approx(30.0, rel=0.01)  # 10 W for 1 s, then 20 W for 1 s
    assert window.samples == 201 and window.peak_w == 20.0
    # current and voltage columns, ISO timestamps in UTC
    iso = tmp_path / "iv.csv"
    iso.write_text("time,current_a,voltage_v\n2026-11-22T00:00:00Z,0.5,12\n2026-11-22T00:00:10Z,0.5,12\n")
    clock = Clock(1_795_305_602.0)  # 2026-11-22T00:00:02Z
    source = CsvSource(clock=clock, arg=str(iso))
    source.check()
    source.start()
    clock.t += 4.0
    assert source.stop().avg_w == pytest.approx(6.0)
    # a recording that does not cover the run says so
    source = CsvSource(clock=Clock(5000.0), arg=str(path))
    source.check()
    source.start()
    with pytest.raises(SensorLost, match="covers 999.000..1003.000 .* but the window was 5000.000"):
        source.stop()


def test_a_command_meter_and_its_errors():
    clock = Clock()
    cmd = f"{sys.executable} -c \"print('power: 3.25 W')\""
    source, _ = open_source(f"cmd:{cmd}", clock=clock)
    source.start(threaded=False)
    clock.t += 2.0
    window = source.stop()
    assert window.avg_w == pytest.approx(3.25) and window.energy_j == pytest.approx(6.5)
    with pytest.raises(EnergyUnavailable, match="energy command not found: no-such-meter"):
        open_source("cmd:no-such-meter --watts")


def test_energy_specs_and_auto_without_a_sensor(tmp_path):
    with pytest.raises(UsageError, match="unknown energy source 'joulemeter'; choose one of auto, ina3221"):
        parse_spec("joulemeter")
    with pytest.raises(UsageError, match="cmd:COMMAND"):
        parse_spec("cmd")
    source, why = open_source("auto", tmp_path, get_profile("raspberry-pi-4"))
    assert source is None
    for name in ("ina3221", "nvml", "rapl"):
        assert f"{name}:" in why
    assert "external USB-C meter" in why  # the profile's own advice
    assert open_source("none") == (None, "not measured (--energy none)")


def test_integration_interpolates_the_window_edges():
    times, watts = [0.0, 1.0, 2.0, 3.0], [0.0, 10.0, 10.0, 0.0]
    assert integrate(times, watts, 0.0, 3.0) == pytest.approx(20.0)
    assert integrate(times, watts, 0.5, 2.5) == pytest.approx(2.5 * 7.5 / 5 * 2 + 10.0)
    with pytest.raises(ValueError, match="do not cover"):
        integrate(times, watts, -1.0, 3.0)


def test_a_sensor_that_disappears_keeps_the_latency_and_says_why(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(ORIN_NANO_TREE, tree)
    source, _ = open_source("ina3221", tree, get_profile("jetson-orin-nano"), period_s=0.001)

    calls = []

    def call(i: int) -> None:
        calls.append(i)
        if len(calls) == 600:  # the board's I2C driver goes away during the energy window (after call 400)
            shutil.rmtree(tree / "sys")

    timed = session.timed_window(call, runs=400, min_seconds=0, batch=1, source=source, idle_seconds=0.01)
    assert len(timed.result.samples_ms) == 400 and timed.idle is not None and timed.window is None
    energy = session.energy_result(source, timed, None, True)
    assert energy["reason"].startswith("energy lost: VDD_IN on INA3221 (hwmon), module power stopped answering")


def test_latency_is_timed_with_no_sampler_running_and_energy_in_its_own_window(tmp_path):
    """The sampling thread's wake-ups would show in the latency figures, so it runs only in the
    energy window: during the latency window the source has taken no reading."""
    source, _ = open_source("ina3221", ORIN_NANO_TREE, get_profile("jetson-orin-nano"))
    readings = []

    def call(i: int) -> None:
        readings.append(len(source._times))

    timed = session.timed_window(call, runs=300, min_seconds=0.05, batch=1, source=source, idle_seconds=0.05)
    latency_calls = len(timed.result.samples_ms)
    assert set(readings[:latency_calls]) == {0}  # no sampling while latency was timed
    assert timed.energy_inferences >= latency_calls and timed.window.samples >= 2
    assert timed.window.seconds >= timed.result.wall_s * 0.9


def test_bench_on_a_replayed_orin_nano_tree(tiny_conv_onnx, tmp_path, capsys):
    """The issue's Done-when, as the README runs it: board power within 2%, J/inference consistent with
    it, and the result says the sensor was replayed and the model ran on this host."""
    out = tmp_path / "b.json"
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(tiny_conv_onnx), "--energy", "ina3221", "--sysfs-root", str(ORIN_NANO_TREE),
              "--device", "jetson-orin-nano", "--runs", "50", "--min-seconds", "0.3", "--idle-seconds", "0.2",
              "--sustained", "0.4", "--json", str(out)])
    assert exc.value.code == 0
    result = json.loads(out.read_text())
    e = result["energy"]
    board_w = 5080 * 1416 / 1e6  # VDD_IN in the tree: 5080 mV x 1416 mA
    assert e["source"] == "ina3221" and e["sensor"].startswith("VDD_IN") and e["scope"] == "module"
    assert e["avg_w"] == pytest.approx(board_w, rel=0.02) and e["idle_w"] == pytest.approx(board_w, rel=0.02)
    assert e["j_per_inference"] == pytest.approx(e["avg_w"] * e["window_s"] / e["inferences"], rel=1e-6)
    # energy has its own window of at least as many calls, so the sampler never runs beside the latency
    assert e["inferences"] >= result["conditions"]["runs"] and e["replayed"] is True
    assert result["metrics"]["energy_j_per_inference"] == e["j_per_inference"]
    assert e["inferences_per_j"] == pytest.approx(1 / e["j_per_inference"])
    assert e["rails_w"]["VDD_SOC"] == pytest.approx(5076 * 584 / 1e6)
    where = " ".join(result["where"])
    assert "replayed sensor tree" in where and "not from live hardware" in where and "this host" in where
    assert result["conditions"]["device"]["name"] == "jetson-orin-nano"
    assert result["conditions"]["device"]["on_device"] is False
    heat = result["sustained"]  # power sampled per window of the sustained run too
    assert len(heat["windows"]) == 10 and all(w["avg_w"] == pytest.approx(board_w) for w in heat["windows"])
    assert heat["drift"]["power"] == pytest.approx(0.0, abs=1e-9)
    err = capsys.readouterr().err
    assert "mJ/inference" in err and "replayed sensor tree" in err
