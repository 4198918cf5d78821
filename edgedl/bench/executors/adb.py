"""An Android phone over adb (``--on adb://SERIAL``): pushes the .tflite and LiteRT's own
``benchmark_model`` binary (the user points to it with ``--benchmark-model PATH`` or
``EDGEDL_BENCHMARK_MODEL``: the Android build from LiteRT's releases), runs it there and parses its
output: init, first inference, warm-up, steady state (with median and percentiles where the binary
prints them) and memory.

edgedl itself does not run on the phone, so the figures are benchmark_model's: its steady-state
statistics replace edgedl's bootstrap intervals, and the result says so.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from edgedl.bench.executors import Executor
from edgedl.bench.request import BenchRequest
from edgedl.errors import DeviceError, UsageError

REMOTE_DIR = "/data/local/tmp/edgedl"
COMPUTE = ("xnnpack", "cpu-no-xnnpack", "gpu", "nnapi")  # what benchmark_model's flags select
ENV = "EDGEDL_BENCHMARK_MODEL"

_NUMBER = r"([0-9.]+(?:e[+-]?[0-9]+)?)"
_RUN = re.compile(r"count=(\d+)(?P<rest>.*)")
_FIELD = re.compile(r"(\w+)=" + _NUMBER)
_SUMMARY = re.compile(r"Inference timings in us: Init: " + _NUMBER + r", First inference: " + _NUMBER
                      + r", Warmup \(avg\): " + _NUMBER + r", Inference \(avg\): " + _NUMBER)
_MEMORY = re.compile(r"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): init="
                     + _NUMBER + r" overall=" + _NUMBER)
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUMBER)
_INIT = re.compile(r"Initialized session in " + _NUMBER + r"\s*ms")
_DELEGATE = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate")


def parse_benchmark_model(text: str) -> dict:
    """The figures of one ``benchmark_model`` run's output (times in ms, memory in MB).

    Raises:
        DeviceError: the output has no steady-state line (the binary failed; its last line is quoted).
    """
    lines = [re.sub(r"^(?:INFO|I tflite\s*):\s*", "", line.strip()) for line in text.replace("\r", "").splitlines()]
    runs = []
    for line in lines:
        match = _RUN.match(line)
        if match:
            fields = {k: float(v) for k, v in _FIELD.findall(line)}
            runs.append(fields)
    summary = next((m for m in map(_SUMMARY.search, lines) if m), None)
    if not runs or summary is None:
        said = next((line for line in reversed(lines) if line), "no output")
        raise DeviceError(f"benchmark_model printed no timings: {said[:200]}")
    steady = runs[-1]  # the last count= line is the timed run; the ones before it are the warm-up
    init_us, first_us, warmup_us, avg_us = (float(g) for g in summary.groups())
    memory = next((m for m in map(_MEMORY.search, lines) if m), None)
    peak = next((m for m in map(_PEAK.search, lines) if m), None)
    delegated = next((m for m in map(_DELEGATE.search, lines) if m), None)
    ms = 1e-3
    return {
        "runs": int(steady["count"]),
        "init_ms": init_us * ms,
        "first_inference_ms": first_us * ms,
        "warmup_avg_ms": warmup_us * ms,
        "avg_ms": avg_us * ms,
        "min_ms": steady.get("min", 0) * ms if "min" in steady else None,
        "max_ms": steady.get("max", 0) * ms if "max" in steady else None,
        "std_ms": steady["std"] * ms if "std" in steady else None,
        "p5_ms": steady["p5"] * ms if "p5" in steady else None,
        "median_ms": steady["median"] * ms if "median" in steady else None,
        "p95_ms": steady["p95"] * ms if "p95" in steady else None,
        "memory_init_mb": float(memory.group(1)) if memory else None,
        "memory_overall_mb": float(memory.group(2)) if memory else None,
        "peak_memory_mb": float(peak.group(1)) if peak else None,
        "delegated_nodes": f"{delegated.group(1)}/{delegated.group(2)}" if delegated else None,
    }


def benchmark_args(request: BenchRequest, graph: str) -> list[str]:
    """``benchmark_model``'s flags for a request (what it can express; the rest is refused first)."""
    args = [f"--graph={graph}", f"--num_runs={request.runs}", f"--warmup_runs={max(request.warmup, 1)}",
            f"--min_secs={request.min_seconds:g}", "--report_peak_memory_footprint=true"]
    if request.threads:
        args.append(f"--num_threads={request.threads}")
    flag = {"xnnpack": "--use_xnnpack=true", "cpu-no-xnnpack": "--use_xnnpack=false", "gpu": "--use_gpu=true",
            "nnapi": "--use_nnapi=true"}
    return [*args, flag[request.compute or "xnnpack"]]


class AdbExecutor(Executor):
    scheme = "adb"

    def __init__(self, address: str, benchmark_model: str | None = None, **options):
        super().__init__(address, **options)
        self.serial = address.split("://", 1)[1].strip("/")
        if not self.serial or any(c.isspace() for c in self.serial) or self.serial.startswith("-"):
            raise UsageError(f"--on {address}: give adb://SERIAL (adb devices lists the serials)")
        self.binary = benchmark_model or os.environ.get(ENV)

    def adb(self, *args: str) -> list[str]:
        return ["adb", "-s", self.serial, *args]

    def commands(self, request: BenchRequest) -> list[list[str]]:
        """The adb command lines one bench runs, in order (push the binary and the model, run, clean up)."""
        artifact = Path(request.artifact)
        graph = f"{REMOTE_DIR}/{artifact.name}"
        run = " ".join(shlex.quote(a) for a in [f"{REMOTE_DIR}/benchmark_model", *benchmark_args(request, graph)])
        return [self.adb("shell", f"mkdir -p {REMOTE_DIR}"),
                self.adb("push", str(self.binary), f"{REMOTE_DIR}/benchmark_model"),
                self.adb("shell", f"chmod 755 {REMOTE_DIR}/benchmark_model"),
                self.adb("push", str(artifact), graph),
                self.adb("shell", run),
                self.adb("shell", f"rm -f {shlex.quote(graph)}")]

    def validate(self, request: BenchRequest) -> None:
        self._refuse(request)

    def _refuse(self, request: BenchRequest | None) -> None:
        if not self.binary:
            raise UsageError(f"--on {self.address}: point to LiteRT's Android benchmark_model binary with "
                             f"--benchmark-model PATH (or {ENV}); edgedl pushes it to the phone")
        if not Path(self.binary).is_file():
            raise UsageError(f"--benchmark-model {self.binary}: no such file")
        if request is None:
            return
        if Path(request.artifact).suffix != ".tflite":
            raise UsageError(f"--on {self.address}: a phone runs .tflite files through benchmark_model; "
                             f"{Path(request.artifact).name} is not one")
        if request.compute not in (None, *COMPUTE):
            raise UsageError(f"--compute {request.compute} on adb devices: give one of {', '.join(COMPUTE)}")
        for name, value in (("--data", request.data), ("--input-shape", request.input_shapes),
                            ("--energy", request.energy not in ("auto", "none")), ("--sustained", request.sustained),
                            ("--cpus", request.cpus), ("--until-stable", request.until_stable),
                            ("--batch", request.batch != 1), ("--profile", request.profile_ops),
                            ("--backend", request.backend not in (None, "litert")), ("--rails", request.rails),
                            ("--sysfs-root", request.sysfs_root not in ("/", ""))):
            if value:
                raise UsageError(f"{name} is not available on adb devices: benchmark_model feeds random inputs at the "
                                 "model's shapes and measures what it measures")

    def _call(self, argv: list[str]) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        except FileNotFoundError:
            raise DeviceError("adb is not installed here: install Android's platform-tools (Debian: adb)") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.label}: {' '.join(argv[3:5])} took over 15 minutes; stopped") from None
        if proc.returncode != 0:
            said = ((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1]
            raise DeviceError(f"{self.label}: adb {' '.join(argv[3:4])} failed: {said[:200]}")
        return proc.stdout

    def check(self, request: BenchRequest | None = None) -> dict:
        self._refuse(request)
        state = self._call(self.adb("get-state")).strip()
        if state != "device":
            raise DeviceError(f"{self.label}: adb says the phone is '{state}' (authorize this computer on it)")
        model = self._call(self.adb("shell", "getprop ro.product.model")).strip()
        abi = self._call(self.adb("shell", "getprop ro.product.cpu.abi")).strip()
        return {"edgedl": None, "profile": None, "model": model, "abi": abi, "runner": "benchmark_model"}

    def bench(self, request: BenchRequest, scratch: Path) -> dict:
        facts = self.check(request)
        if request.cooldown:
            import time

            time.sleep(request.cooldown)  # the phone idles: the last run's heat goes
        output = ""
        for argv in self.commands(request):
            said = self._call(argv)
            if "benchmark_model --graph" in argv[-1] or argv[-1].startswith(f"{REMOTE_DIR}/benchmark_model"):
                output = said
        return result_of(parse_benchmark_model(output), request, self.address, facts)


def result_of(figures: dict, request: BenchRequest, address: str, facts: dict) -> dict:
    """benchmark_model's figures in the shape of ``edgedl bench --json``."""
    middle = figures["median_ms"] if figures["median_ms"] is not None else figures["avg_ms"]
    notes = {"accuracy": "bench measures speed and memory",
             "params": "counted on ONNX files", "macs": "counted on ONNX files",
             "energy_j_per_inference": "adb devices: benchmark_model measures no energy"}
    return {
        "artifact": request.artifact, "backend": "litert (benchmark_model)", "format": "tflite", "precision": None,
        "metrics": {"accuracy": None, "params": None, "macs": None,
                    "latency_ms": {"p50": middle, "p90": None, "p99": None, "mean": figures["avg_ms"],
                                   "std": figures["std_ms"], "min": figures["min_ms"], "max": figures["max_ms"],
                                   "p5": figures["p5_ms"], "p95": figures["p95_ms"]},
                    "throughput_ips": 1000.0 / figures["avg_ms"] if figures["avg_ms"] else None,  # batch 1
                    "peak_rss_mb": figures["peak_memory_mb"] or figures["memory_overall_mb"],
                    "energy_j_per_inference": None},
        "notes": notes,
        "cold_start": {"load_ms": figures["init_ms"], "first_inference_ms": figures["first_inference_ms"]},
        "statistics": {"method": "benchmark_model's own statistics (p50 is its median, or its average where it "
                                 "prints no median)", "warmup_avg_ms": figures["warmup_avg_ms"]},
        "memory": {"init_mb": figures["memory_init_mb"], "overall_mb": figures["memory_overall_mb"],
                   "peak_mb": figures["peak_memory_mb"]},
        "flags": [], "energy": {"j_per_inference": None, "reason": notes["energy_j_per_inference"]},
        "conditions": {"batch": request.batch, "threads": request.threads, "compute": request.compute or "xnnpack",
                       "runs": figures["runs"], "warmup": request.warmup, "feeds": "random (benchmark_model)",
                       "delegated_nodes": figures["delegated_nodes"],
                       "host": {"hostname": address.split("://", 1)[1], "cpu": facts.get("abi"),
                                "model": facts.get("model")}},
        "device": {"on": address, "label": address, "profile": None, "hostname": address.split("://", 1)[1],
                   "facts": facts},
    }
