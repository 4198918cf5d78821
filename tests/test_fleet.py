"""Your own devices from one workstation (issue 19): edgedl bench --on over real SSH, the results
database (SQLite, and a real PostgreSQL), results compare, a device that drops, refused host keys
and credentials, edgedl missing on a device, compress --on, and adb's output parser.

The SSH "devices" are real OpenSSH servers on 127.0.0.1 whose sessions find this checkout's .venv
on their PATH: a fake only for the hardware (see tests/fleet_servers.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fleet_servers import Relay, start_postgres, start_sshd

ROOT = Path(__file__).resolve().parents[1]
EDGEDL = [sys.executable, "-m", "edgedl"]
FAST = ["--runs", "20", "--warmup", "2", "--min-seconds", "0.2", "--energy", "none"]


def edgedl(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEDL, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Two SSH devices with edgedl (aliases dev-a, dev-b), one without it (bare)."""
    folder = tmp_path_factory.mktemp("fleet")
    devices = {"a": start_sshd(folder / "a", "dev-a"), "b": start_sshd(folder / "b", "dev-b"),
               "bare": start_sshd(folder / "bare", "bare", path_env="/usr/bin:/bin")}
    yield devices
    for device in devices.values():
        device.stop()


@pytest.fixture(scope="module")
def model(tiny_conv_onnx, tmp_path_factory) -> Path:
    """A small ONNX file in a folder of its own (with a space in its name: paths are quoted)."""
    folder = tmp_path_factory.mktemp("models") / "my models"
    folder.mkdir()
    path = folder / "tiny.onnx"
    shutil.copy(tiny_conv_onnx, path)
    return path


def test_two_devices_over_ssh_into_the_database_and_compared(fleet, model, tmp_path):
    config = fleet["a"].client_config
    db = f"sqlite:///{tmp_path / 'results.db'}"
    proc = edgedl("bench", model, "--on", "dev-a", "--on", fleet["b"].url, "--ssh-config", config, "--db", db,
                  "--json", tmp_path / "out.json", *FAST)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert [o["device"] for o in out] == ["dev-a", fleet["b"].url]
    for o in out:
        assert o["error"] is None
        result = o["result"]
        assert result["metrics"]["latency_ms"]["p50"] > 0
        assert result["conditions"]["runs"] >= 20
        assert result["device"]["profile"]  # the device's own detected profile came back
        assert result["device"]["facts"]["backends"]["onnxruntime"]
        assert result["artifact"] == str(model)  # the workstation's path, not the device's copy
    # progress lines name each device's steps
    assert re.search(r"^dev-a +checking the device$", proc.stderr, re.M)
    assert re.search(r"^dev-a +done: p50 [\d.]+ ms$", proc.stderr, re.M)
    # the result came from the remote session: the device's copy lived in its own temporary folder
    assert out[0]["result"]["device"]["sent"] == ["artifact/tiny.onnx"]

    listed = json.loads(edgedl("results", "list", "--db", db, "--json").stdout)
    assert {r["device"] for r in listed} == {"dev-a", fleet["b"].url}
    assert all(r["artifact"] == "tiny.onnx" and len(r["artifact_sha256"]) == 64 for r in listed)
    compared = edgedl("results", "compare", "--artifact", "tiny.onnx", "--db", db, "--json")
    rows = json.loads(compared.stdout)
    assert {r["device"] for r in rows} == {"dev-a", fleet["b"].url}
    assert min(r["vs_fastest"] for r in rows) == 1.0
    table = edgedl("results", "compare", "--artifact", "tiny.onnx", "--db", db)
    assert table.returncode == 0 and "dev-a" in table.stderr and "x fastest" in table.stderr
    shown = edgedl("results", "show", str(listed[0]["id"]), "--db", db)
    assert shown.returncode == 0 and "p50 ms" in shown.stderr


def test_postgresql_is_the_same_database(fleet, model, tmp_path):
    url, port, stop = start_postgres(tmp_path / "pg")
    try:
        config = fleet["a"].client_config
        proc = edgedl("bench", model, "--on", "dev-a", "--on", "dev-b", "--ssh-config", config, "--db", url, *FAST)
        assert proc.returncode == 0, proc.stderr
        rows = json.loads(edgedl("results", "compare", "--artifact", "tiny.onnx", "--db", url, "--json").stdout)
        assert sorted(r["device"] for r in rows) == ["dev-a", "dev-b"]
        # two workstations open a new database at once: the schema is made once, every row lands
        from sqlalchemy import create_engine, text

        with create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text("CREATE DATABASE fresh"))
        fresh = url.rsplit("/", 1)[0] + "/fresh"
        writers = [subprocess.Popen([*EDGEDL, "bench", str(model), "--db", fresh, "--runs", "5", "--min-seconds", "0",
                                     "--energy", "none", "--quiet"], stderr=subprocess.PIPE, text=True)
                   for _ in range(3)]
        assert all(w.wait(timeout=120) == 0 for w in writers), [w.stderr.read() for w in writers]
        listed = json.loads(edgedl("results", "list", "--db", fresh, "--json").stdout)
        assert len(listed) == 3
        with create_engine(fresh).connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["0001"]
    finally:
        stop()
    refused = edgedl("results", "list", "--db", url)  # the server is gone: one line, no traceback
    assert refused.returncode == 1 and len(error_lines(refused)) == 1 and "Traceback" not in refused.stderr
    assert f"127.0.0.1:{port}" in refused.stderr


def test_sqlite_from_two_processes_at_once_and_a_newer_schema(model, tmp_path):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    code = ("import sys; from edgedl.results import ResultsDB, bench_row; import json;"
            "r = json.load(open(sys.argv[1])); d = ResultsDB(sys.argv[2]);"
            "[d.add([bench_row(r, artifact_name=f'w{sys.argv[3]}')]) for _ in range(25)]")
    result = edgedl("bench", model, "--json", tmp_path / "r.json", "--no-db", "--runs", "5", "--min-seconds", "0",
                    "--energy", "none", "--quiet")
    assert result.returncode == 0, result.stderr
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "r.json"), db, str(i)],
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
    assert all(w.wait(timeout=120) == 0 for w in writers), [w.stderr.read() for w in writers]
    from edgedl.results import ResultsDB

    rows = ResultsDB(db).rows()
    assert len(rows) == 50 and {r["artifact"] for r in rows} == {"w0", "w1"}

    import sqlite3

    with sqlite3.connect(tmp_path / "shared.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    newer = edgedl("results", "list", "--db", db)
    assert newer.returncode == 2 and "written by a newer edgedl (schema 0099)" in newer.stderr
    bench = edgedl("bench", model, "--db", db, "--runs", "5")  # refused before any work
    assert bench.returncode == 2 and "newer edgedl" in bench.stderr and "p50" not in bench.stderr


def test_a_device_that_drops_mid_run_is_reported_and_the_other_is_kept(fleet, model, tmp_path):
    relay = Relay(fleet["b"].port)
    try:
        config = fleet["a"].client_config
        config_text = config.read_text().split("Host *")
        dropping = tmp_path / "ssh_config"
        dropping.write_text(config_text[0] + f"Host flaky\n  HostName 127.0.0.1\n  Port {relay.port}\n"
                                             f"  HostKeyAlias [127.0.0.1]:{fleet['b'].port}\n"
                            + "Host *" + config_text[1])

        def cut_when_benchmarking():
            deadline = time.monotonic() + 60
            while relay.connections < 2 and time.monotonic() < deadline:  # 1: the check; 2: the bench
                time.sleep(0.05)
            time.sleep(1.0)
            relay.cut()

        threading.Thread(target=cut_when_benchmarking, daemon=True).start()
        db = f"sqlite:///{tmp_path / 'results.db'}"
        proc = edgedl("bench", model, "--on", "dev-a", "--on", "flaky", "--ssh-config", dropping, "--db", db,
                      "--runs", "20", "--min-seconds", "6", "--energy", "none", "--json", tmp_path / "out.json")
    finally:
        relay.close()
    assert proc.returncode == 1
    out = {o["device"]: o for o in json.loads((tmp_path / "out.json").read_text())}
    assert out["dev-a"]["result"]["metrics"]["latency_ms"]["p50"] > 0
    assert out["flaky"]["result"] is None and "dropped" in out["flaky"]["error"]
    (line,) = error_lines(proc)
    assert "1 of 2 devices failed" in line and "flaky" in line
    stored = json.loads(edgedl("results", "list", "--db", db, "--json").stdout)
    assert [r["device"] for r in stored] == ["dev-a"]  # the other device's result is kept


def test_host_keys_are_checked(fleet, model, tmp_path):
    config = fleet["a"].client_config
    base = config.read_text()
    # a known_hosts that has another key for the host: refused, even with --accept-new-host
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = tmp_path / "known_wrong"
    wrong.write_text(f"[127.0.0.1]:{fleet['a'].port} {Path(f'{other}.pub').read_text()}")
    cfg = tmp_path / "wrong_config"
    cfg.write_text(base.replace(str(fleet["a"].known_hosts), str(wrong)))
    for extra in ([], ["--accept-new-host"]):
        proc = edgedl("bench", model, "--on", "dev-a", "--ssh-config", cfg, "--no-db", *FAST, *extra)
        assert proc.returncode == 1
        assert "the host key of dev-a has CHANGED" in proc.stderr, proc.stderr
    # an unknown host: refused unless accepted, then recorded
    empty = tmp_path / "known_empty"
    empty.write_text("")
    cfg.write_text(base.replace(str(fleet["a"].known_hosts), str(empty)))
    proc = edgedl("bench", model, "--on", "dev-a", "--ssh-config", cfg, "--no-db", *FAST)
    assert proc.returncode == 1 and "is not in known_hosts: refused" in proc.stderr and "--accept-new-host" in proc.stderr
    proc = edgedl("bench", model, "--on", "dev-a", "--ssh-config", cfg, "--no-db", "--accept-new-host", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert f"[127.0.0.1]:{fleet['a'].port}" in empty.read_text()


def test_refused_credentials_unreachable_and_missing_edgedl(fleet, model, tmp_path):
    config = fleet["a"].client_config
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    cfg = tmp_path / "config"
    cfg.write_text(config.read_text().replace(str(fleet["a"].folder.parent / "id_ed25519"), str(stranger)))
    proc = edgedl("bench", model, "--on", "dev-a", "--ssh-config", cfg, "--no-db", *FAST)
    assert proc.returncode == 1 and "refused the credentials" in proc.stderr and "Traceback" not in proc.stderr

    from fleet_servers import free_port

    proc = edgedl("bench", model, "--on", f"ssh://127.0.0.1:{free_port()}", "--ssh-config", config, "--no-db", *FAST)
    assert proc.returncode == 1 and "cannot reach 127.0.0.1" in proc.stderr and "connection refused" in proc.stderr

    proc = edgedl("bench", model, "--on", "bare", "--on", "dev-a", "--ssh-config", config, "--no-db", *FAST)
    assert proc.returncode == 1  # the device without edgedl fails; dev-a still ran
    assert "bare: edgedl is not installed on bare (looked on the PATH" in proc.stderr
    assert "pip install 'edgedl[onnx]'" in proc.stderr and re.search(r"^dev-a +done: p50", proc.stderr, re.M)

    bad = edgedl("bench", model, "--on", "ftp://x", "--no-db")
    assert bad.returncode == 2 and "unknown scheme 'ftp://'" in bad.stderr


def test_a_missing_backend_on_the_device_is_named(fleet, tmp_path, tiny_conv_onnx):
    """A .pt checkpoint needs torch on the device; a device whose edgedl lacks the backend says which.
    Simulated by asking for a backend name the device's facts report as missing."""
    from edgedl.bench.executors.ssh import _needs_backend
    from edgedl.bench.request import BenchRequest
    from edgedl.errors import DeviceError

    facts = {"edgedl": "0.1.0", "backends": {"onnxruntime": None, "litert": "2.0"}}
    with pytest.raises(DeviceError, match=r"has edgedl 0.1.0 but not onnxruntime.*pip install 'edgedl\[onnx\]'"):
        _needs_backend("dev", "host", facts, BenchRequest(artifact=str(tiny_conv_onnx)))
    # and the real device's facts, asked over SSH, list what imports there
    from edgedl.bench.executors import executor_for

    facts = executor_for("dev-a", ssh_config=str(fleet["a"].client_config)).check()
    assert facts["backends"]["onnxruntime"] and facts["request_version"] == 1


def test_run_attach_and_compress_on_a_device(fleet, quick_run, tmp_path):
    """bench --run adds a column per device to the run's report; compress --on runs its benchmark
    stage on the device."""
    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    artifact = run / "artifacts" / "resnet8.fp32.onnx"
    proc = edgedl("bench", artifact, "--run", run, "--on", "dev-a", "--on", "dev-b", "--ssh-config",
                  fleet["a"].client_config, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert len(list((run / "fleet").glob("*.json"))) == 2
    assert edgedl("report", run).returncode == 0
    report = (run / "report.md").read_text()
    assert "## On devices" in report and "dev-a p50 ms" in report and "dev-b p50 ms" in report
    assert "dev-a" in (run / "report.html").read_text()

    out = tmp_path / "compressed"
    proc = edgedl("compress", "--model", artifact, "--data", "digits", "--on", "dev-a", "--ssh-config",
                  fleet["a"].client_config, "--set", "stages.benchmark.runs=10", "--set", "stages.benchmark.rounds=1",
                  "--set", "stages.benchmark.min_seconds=0", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"]["on"] == "dev-a"
    benched = [a for a in manifest["artifacts"] if a["metrics"].get("latency_ms")]
    assert benched and all(a["benchmark"]["on"] == "dev-a" for a in benched)
    assert all(a["benchmark"]["executor"]["label"] == "dev-a" for a in benched)
    # unreachable: refused before any work (no run folder)
    gone = edgedl("compress", "--model", artifact, "--data", "digits", "--on", "ssh://127.0.0.1:1", "--out",
                  tmp_path / "never", "--quiet")
    assert gone.returncode == 1 and "cannot reach" in gone.stderr and not (tmp_path / "never").exists()


# ---- adb: no phone here, so its output parser on recorded output and its command lines ---------

RECORDED = Path(__file__).parent / "data" / "benchmark_model_android.txt"


def test_adb_parser_on_recorded_output_and_its_commands(tmp_path):
    from edgedl.bench.executors import executor_for
    from edgedl.bench.executors.adb import parse_benchmark_model, result_of
    from edgedl.bench.request import BenchRequest
    from edgedl.errors import DeviceError, UsageError

    figures = parse_benchmark_model(RECORDED.read_text())
    assert figures["runs"] == 50
    assert figures["init_ms"] == pytest.approx(35.917)
    assert figures["first_inference_ms"] == pytest.approx(21.882)
    assert figures["warmup_avg_ms"] == pytest.approx(14.1952)
    assert figures["avg_ms"] == pytest.approx(12.8763)
    assert figures["median_ms"] == pytest.approx(12.725) and figures["p95_ms"] == pytest.approx(14.188)
    assert figures["memory_overall_mb"] == pytest.approx(24.1133)
    assert figures["peak_memory_mb"] == pytest.approx(31.2031)
    assert figures["delegated_nodes"] == "31/31"
    with pytest.raises(DeviceError, match="printed no timings: ERROR: Could not open 'x.tflite'"):
        parse_benchmark_model("STARTING!\nERROR: Could not open 'x.tflite'.\n")

    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    executor = executor_for("adb://R58M123ABC", benchmark_model=str(binary))
    request = BenchRequest(artifact=str(model), runs=50, warmup=5, threads=4, min_seconds=2)
    commands = executor.commands(request)
    assert commands[0][:3] == ["adb", "-s", "R58M123ABC"]
    assert commands[1] == ["adb", "-s", "R58M123ABC", "push", str(binary), "/data/local/tmp/edgedl/benchmark_model"]
    assert commands[4][-1] == ("/data/local/tmp/edgedl/benchmark_model --graph=/data/local/tmp/edgedl/m.tflite "
                               "--num_runs=50 --warmup_runs=5 --min_secs=2 --report_peak_memory_footprint=true "
                               "--num_threads=4 --use_xnnpack=true")
    result = result_of(figures, request, "adb://R58M123ABC", {"abi": "arm64-v8a", "model": "SM-G991B"})
    assert result["metrics"]["latency_ms"]["p50"] == pytest.approx(12.725)
    assert result["cold_start"]["load_ms"] == pytest.approx(35.917)
    from edgedl.results import bench_row

    row = bench_row(result)
    assert row["device"] == "adb://R58M123ABC" and row["p50_ms"] == pytest.approx(12.725)
    with pytest.raises(UsageError, match="is not one"):
        executor._refuse(BenchRequest(artifact=str(tmp_path / "m.onnx")))
    with pytest.raises(UsageError, match="--benchmark-model PATH"):
        executor_for("adb://R58M123ABC").check(request)


def test_what_cannot_run_as_asked_is_refused_before_any_device(fleet, model, tmp_path):
    """Exit 2, one line, before any device is contacted."""
    config = fleet["a"].client_config
    for args, said in (
            (["--on", "adb://R58", "--benchmark-model", str(model)], "a phone runs .tflite files"),
            (["--on", "dev-a", "--sysfs-root", str(tmp_path)], "--sysfs-root"),
            (["--on", "dev-a", "--data", f"images:{tmp_path}"], "names a folder or file on this machine"),
            (["--on", "dev-a", "--runs", "0"], "--runs must be at least 1, got 0")):
        proc = edgedl("bench", model, *args, "--ssh-config", config, "--no-db")
        assert proc.returncode == 2, (args, proc.stderr)
        assert said in proc.stderr and "checking the device" not in proc.stderr and "Traceback" not in proc.stderr
    missing = edgedl("bench", tmp_path / "nope.onnx", "--on", "dev-a", "--ssh-config", config, "--no-db")
    assert missing.returncode == 2 and "artifact not found" in missing.stderr


def test_json_to_stdout_stays_json_and_a_home_database_path(model, tmp_path, monkeypatch):
    proc = edgedl("bench", model, "--json", "-", "--runs", "3", "--min-seconds", "0", "--energy", "none",
                  "--db", f"sqlite:///{tmp_path / 'r.db'}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["metrics"]["latency_ms"]["p50"] > 0  # the "stored as" line went to stderr
    assert "stored as result 1" in proc.stderr
    from edgedl.results import ResultsDB

    monkeypatch.setenv("HOME", str(tmp_path))
    db = ResultsDB("sqlite:///~/nested/results.db")
    assert (tmp_path / "nested" / "results.db").is_file() and db.rows() == []


def test_remote_shell_lines_quote_paths_and_run_under_sh():
    from edgedl.bench.executors.ssh import posix_sh, remote_path

    assert remote_path("~/my venv/bin/edgedl") == "\"$HOME\"/'my venv/bin/edgedl'"
    assert remote_path("/opt/e dl/edgedl; rm -rf /") == "'/opt/e dl/edgedl; rm -rf /'"
    line = posix_sh('for c in edgedl; do echo "$c"; done')
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True)  # whatever shell reads it first
    assert out.stdout == "edgedl\n"


def test_accuracy_is_measured_on_the_device(fleet, quick_run, manifest):
    """With labelled --data, the device scores the artifact through its own edgedl.runtime."""
    (record,) = [a for a in manifest["artifacts"] if a["name"] == "resnet8.fp32.onnx"]
    proc = edgedl("bench", quick_run / record["path"], "--on", "dev-a", "--data", "digits", "--ssh-config",
                  fleet["a"].client_config, "--no-db", "--json", "-", "--quiet", *FAST[:2])
    assert proc.returncode == 0, proc.stderr
    (out,) = json.loads(proc.stdout)
    scored = out["result"]["accuracy"]
    assert scored["samples"] > 100 and scored["interval95"][0] <= scored["value"] <= scored["interval95"][1]
    assert scored["value"] == pytest.approx(record["metrics"]["accuracy"], abs=1e-9)  # the run's evaluate agrees


def test_build_engine_on_a_device(fleet, model, tmp_path):
    """The device here has no TensorRT (none installs on this machine), so the build is refused in one
    line before anything is sent; the transport it uses (files there, edgedl run, files and log back)
    runs for real with another command."""
    proc = edgedl("build-engine", model, "--on", "dev-a", "--precision", "fp16", "--ssh-config",
                  fleet["a"].client_config)
    assert proc.returncode == 1 and "has no TensorRT for edgedl to build with" in proc.stderr
    assert not list(model.parent.glob("*.engine"))
    local = edgedl("build-engine", model, "--on", "dev-a", "--timing-cache", tmp_path / "t.cache")
    assert local.returncode == 2 and "--timing-cache is a path on this machine" in local.stderr

    from edgedl.bench.executors import executor_for

    executor = executor_for("dev-a", ssh_config=str(fleet["a"].client_config))
    rc, log = executor.run_edgedl(["inspect", f"artifact/{model.name}", "--json"], [(model, f"artifact/{model.name}")],
                                  tmp_path / "back", what="inspecting")
    assert rc == 0 and json.loads(log.read_text())["inputs"][0]["name"] == "input"
    rc, log = executor.run_edgedl(["inspect", "artifact/missing.onnx"], [], tmp_path / "again", what="inspecting")
    assert rc == 2 and "missing.onnx" in log.read_text()
