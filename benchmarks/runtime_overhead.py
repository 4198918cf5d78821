"""edgedl.runtime's cost over a bare backend call, and the time of `import edgedl.runtime`.

Side by side in one run: each round times N calls of the bare `session.run` and N calls through
edgedl.runtime on the same model and input (and, for ONNX Runtime, through edgedl.runtime with
`preallocate=True`, i.e. IO binding), alternating the order; the figures are medians over rounds.
Goals (issues 2 and 5): under 2 microseconds extra per call; import under 150 ms; (issue 9) `import
edgedl.runtime` at most 20 ms after `import numpy`, median over 7 fresh interpreters.

On mobilenetv2_100 at 224x224 one call takes ~2 ms, and the machine's noise between rounds is tens
of microseconds, so a difference of two such timings cannot resolve 2 us. For every model the
script therefore also measures edgedl's own per-call work directly ("wrapper only"): the same
runner, the same input, with its backend call replaced by a function that returns the outputs the
backend computed for that input, so what is timed is exactly what edgedl adds around the call.

    .venv/bin/python benchmarks/runtime_overhead.py [--rounds 15] [--calls 20000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_models(folder: Path, only: tuple[str, ...] | None = None,
                 tflite: bool = True) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """The benchmark models as ONNX files (and .tflite ones), by name: ``only`` picks some of them."""
    import torch
    from torch import nn

    from edgedl.models import create_model
    from edgedl.formats.onnx.export import export_onnx

    from edgedl.formats.tflite import convert as litert_convert

    torch.manual_seed(0)
    tiny = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    models = {"tiny_mlp_16": (tiny, (1, 16)), "resnet8_1x8x8": (create_model("resnet8", 10, 1), (1, 1, 8, 8)),
              "mobilenetv2_100_3x224x224": (create_model("mobilenetv2_100", 10, 3), (1, 3, 224, 224))}
    out = {}
    for name, (module, shape) in models.items():
        if only is not None and name not in only:
            continue
        path = folder / f"{name}.onnx"
        export_onnx(module.eval(), np.zeros(shape, np.float32), path, 18, True, "out")
        out[name] = (path, shape)
        if tflite and name != "resnet8_1x8x8":
            tflite = folder / f"{name}.tflite"
            litert_convert.convert(module.eval(), np.zeros(shape, np.float32), tflite)
            out[f"{name}.tflite"] = (tflite, shape)
    return out


def per_call_us(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def bare_call(path: Path, shape):
    """What a user writes by hand with the backend alone (1 intra-op thread)."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return x, lambda: session.run(None, {name: x})[0]
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

    def run():
        interp.set_tensor(inp, x)
        interp.invoke()
        return interp.get_tensor(out)

    return x, run


def overhead(path: Path, shape, rounds: int, calls: int) -> dict:
    import edgedl.runtime as rt

    x, bare = bare_call(path, shape)
    model = rt.load(path, threads=1)
    sides = {"bare": bare, "edgedl": lambda: model(x)}
    if path.suffix == ".onnx":
        bound = rt.load(path, threads=1, preallocate=True)
        sides["edgedl_preallocated"] = lambda: bound(x)
    for fn in sides.values():
        np.testing.assert_allclose(bare(), fn(), rtol=1e-5, atol=1e-6)
        per_call_us(fn, max(1, calls // 10))  # warm-up
    times: dict = {k: [] for k in sides}
    keys = list(sides)
    for r in range(rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:
            times[key].append(per_call_us(sides[key], calls))
    result = {f"{k}_us_median": statistics.median(v) for k, v in times.items()}
    result["overhead_us_median"] = statistics.median([o - b for o, b in zip(times["edgedl"], times["bare"])])
    result["ratio"] = result["edgedl_us_median"] / result["bare_us_median"]
    # Wrapper only: the runner's backend call answers with the outputs it computed for x.
    cached = model._run_impl(model._feeds(x))
    model._run_impl = lambda feeds: cached
    wrapper = [per_call_us(lambda: model(x), 20000) for _ in range(rounds)]
    result["wrapper_only_us_median"] = statistics.median(wrapper)
    model.close()
    return result


def import_ms(statement: str, repeats: int, setup: str = "") -> float:
    """Median over ``repeats`` fresh interpreters of the time ``statement`` takes after ``setup``."""
    code = f"{setup}\nimport time; t = time.perf_counter(); {statement}; print((time.perf_counter() - t) * 1000)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
             for _ in range(repeats)]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20000, help="calls per round on the small models")
    parser.add_argument("--large-calls", type=int, default=300, help="calls per round on mobilenetv2_100")
    parser.add_argument("--import-repeats", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from edgedl.bench import conditions

    results: dict = {"conditions": {"versions": conditions.versions(), "host": conditions.host(),
                                    "python": platform.python_version(), "rounds": args.rounds,
                                    "calls_per_round": args.calls, "threads": 1}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, shape) in build_models(Path(tmp)).items():
            calls = args.large_calls if name.startswith("mobilenet") else args.calls
            results[name] = overhead(path, shape, args.rounds, calls)
    results["import_ms"] = {
        "numpy": import_ms("import numpy", args.import_repeats),
        "edgedl.runtime": import_ms("import edgedl.runtime", args.import_repeats),
        "onnxruntime": import_ms("import onnxruntime", args.import_repeats),
        # issue 9's measure: what edgedl.runtime adds once numpy is loaded (goal: at most 20 ms)
        "edgedl.runtime after numpy (7 interpreters)": import_ms("import edgedl.runtime", 7, setup="import numpy"),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
