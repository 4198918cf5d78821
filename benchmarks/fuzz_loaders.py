"""Fuzz every loader edgedl opens a user's file with: ONNX, TFLite, TorchScript, .pt2, checkpoint,
safetensors, Hugging Face config, recipe, device profile, sidecar.

Each valid seed file (made here) is mutated: truncated, bit-flipped, a range zeroed, a chunk
duplicated, or replaced by random bytes of its size. A worker process opens each mutant with the
loader's edgedl entry point and records one outcome:

- ``ok``: it opened (a mutation that changed nothing that matters);
- ``error``: an edgedl error (one line, exit 2 or 1 at the CLI), and whether it names the file;
- ``traceback``: any other exception (an internal error at the CLI): a defect;
- ``crash``: the worker died (a native parser's segfault or abort). The worker opens ONNX, TFLite
  and TorchScript files in-process on purpose, without edgedl's child-process probe, to count what
  the probe contains; every crashing file is then given to ``edgedl inspect`` or ``compress``, which
  must answer with one line, not die.

    .venv/bin/python benchmarks/fuzz_loaders.py [--cases 4000] [--seed 0] [--out benchmarks/.work/fuzz]

Prints the table for benchmarks/RESULTS.md. tests/test_fuzz.py runs a small sample of the same.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import traceback
from collections import Counter
from pathlib import Path

KINDS = ("onnx", "tflite", "torchscript", "pt2", "checkpoint", "safetensors", "hf_config", "recipe", "profile",
         "sidecar")
MUTATIONS = ("truncate", "bitflip", "zero", "duplicate", "random")


# ---- seeds -----------------------------------------------------------------------------------

def make_seeds(folder: Path) -> dict[str, Path]:
    """One valid file of each kind (the Hugging Face config inside a model folder)."""
    import torch

    from edgedl.models import save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, 10)).eval()
    example = (torch.zeros(1, 1, 8, 8),)
    seeds = {}
    seeds["onnx"] = folder / "seed.onnx"
    from edgedl.formats.onnx.export import export_onnx

    export_onnx(net, example[0].numpy(), seeds["onnx"], 17, True, "logits")
    seeds["tflite"] = folder / "seed.tflite"
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import litert_torch

        litert_torch.convert(net, example).export(str(seeds["tflite"]))
    seeds["torchscript"] = folder / "seed_ts.pt"
    torch.jit.save(torch.jit.trace(net, example), str(seeds["torchscript"]))
    seeds["pt2"] = folder / "seed.pt2"
    torch.export.save(torch.export.export(net, example), str(seeds["pt2"]))
    seeds["checkpoint"] = folder / "seed_ckpt.pt"
    save_checkpoint(seeds["checkpoint"], net, {"spec": "x.py:build", "kwargs": {}}, input_shape=[1, 8, 8])
    seeds["safetensors"] = folder / "seed.safetensors"
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(seeds["safetensors"]))
    hf = folder / "hf"
    hf.mkdir(exist_ok=True)
    (hf / "config.json").write_text(json.dumps({
        "model_type": "vit", "architectures": ["ViTForImageClassification"], "image_size": 32, "patch_size": 8,
        "num_channels": 3, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "id2label": {"0": "a", "1": "b"}}))
    (hf / "model.safetensors").write_bytes(seeds["safetensors"].read_bytes())
    seeds["hf_config"] = hf / "config.json"
    root = Path(__file__).resolve().parents[1]
    seeds["recipe"] = folder / "seed.yaml"
    seeds["recipe"].write_text((root / "recipes" / "quickstart.yaml").read_text())
    seeds["profile"] = folder / "jetson-orin-nano.yaml"  # a profile's name is its file's
    seeds["profile"].write_text((root / "devices" / "jetson-orin-nano.yaml").read_text())
    from edgedl.artifacts import write_sidecar

    write_sidecar(seeds["onnx"], "onnx", "fp32", {"inputs": [{"name": "input", "shape": [None, 1, 8, 8],
                                                              "dtype": "float32"}], "task": "classification"})
    seeds["sidecar"] = seeds["onnx"].with_name("seed.onnx.json")
    for kind, path in seeds.items():  # every seed opens: a mutant's error is the mutation's doing
        open_file(kind, path)
    return seeds


# ---- mutations --------------------------------------------------------------------------------

def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    n = len(data)
    if kind == "truncate":
        return data[: rng.randrange(0, n)]
    if kind == "bitflip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(n)
            out[i] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == "zero":
        start = rng.randrange(n)
        stop = min(n, start + rng.randint(1, 64))
        return data[:start] + bytes(stop - start) + data[stop:]
    if kind == "duplicate":
        start = rng.randrange(n)
        stop = min(n, start + rng.randint(1, 256))
        return data[:stop] + data[start:stop] + data[stop:]
    return bytes(rng.getrandbits(8) for _ in range(n))


def write_cases(seeds: dict[str, Path], folder: Path, cases: int, seed: int) -> list[tuple[str, str, str]]:
    """(kind, mutation, path) for ``cases`` mutants, spread evenly over the kinds."""
    import shutil

    rng = random.Random(seed)
    jobs = []
    for index in range(cases):
        kind = KINDS[index % len(KINDS)]
        how = MUTATIONS[(index // len(KINDS)) % len(MUTATIONS)]
        source = seeds[kind]
        data = mutate(source.read_bytes(), how, rng)
        if kind == "hf_config":
            case = folder / f"{index:05d}_hf"
            shutil.copytree(source.parent, case)
            (case / "config.json").write_bytes(data)
            path = case / "config.json"
        else:  # each in its own folder under the seed's name (a profile's name and a sidecar's artifact are)
            case = folder / f"{index:05d}"
            case.mkdir()
            path = case / source.name
            path.write_bytes(data)
            if kind == "sidecar":
                shutil.copy(seeds["onnx"], case / seeds["onnx"].name)
        jobs.append((kind, how, str(path)))
    return jobs


# ---- the loaders, as edgedl opens a user's file -------------------------------------------------

def open_file(kind: str, path: Path) -> None:
    """Open ``path`` the way edgedl does for that kind; probes disabled (see the module docstring)."""
    if kind == "onnx":
        from edgedl.formats.onnx import graph

        graph.summarize(path)
    elif kind == "tflite":
        from edgedl.formats.tflite import graph

        graph.summarize(path)
    elif kind == "torchscript":
        from edgedl.models.importers import importer_for

        importer_for(str(path)).load(str(path), trust=True)
    elif kind == "pt2":
        from edgedl.models.importers.pt2 import Pt2Importer

        Pt2Importer().load(str(path))
    elif kind == "checkpoint":
        from edgedl.formats.torch.checkpoint import summarize

        summarize(path)
    elif kind == "safetensors":
        from edgedl.models.importers.factory import read_weights

        read_weights(path)
    elif kind == "hf_config":
        from edgedl.models.importers.hf import HFImporter

        HFImporter().load(str(path.parent))
    elif kind == "recipe":
        from edgedl.recipe import load_recipe

        load_recipe(path)
    elif kind == "profile":
        from edgedl.devices import load_profile_file

        load_profile_file(path)
    elif kind == "sidecar":
        import edgedl.runtime as rt

        with rt.load(path.with_name(path.name[: -len(".json")])) as runner:
            runner.inputs  # noqa: B018
    else:
        raise ValueError(kind)


def worker(jobs_file: Path, results_file: Path, start: int) -> None:
    """Open jobs[start:] in order, appending one JSON line per job to ``results_file``."""
    import warnings

    warnings.simplefilter("ignore")
    from edgedl.errors import EdgedlError
    from edgedl.formats.onnx import graph as onnx_graph
    from edgedl.runtime import litert

    onnx_graph.probe = lambda *a, **k: None  # this worker is the child: count what the probe would contain
    litert.probe = lambda *a, **k: None
    import edgedl.formats.tflite.graph as tflite_graph

    tflite_graph.probe = lambda *a, **k: None
    jobs = json.loads(jobs_file.read_text())
    with results_file.open("a") as out:
        for index in range(start, len(jobs)):
            kind, how, path = jobs[index]
            out.write(json.dumps({"index": index, "state": "started"}) + "\n")
            out.flush()
            try:
                open_file(kind, Path(path))
                result = {"outcome": "ok"}
            except EdgedlError as exc:
                text = str(exc)
                result = {"outcome": "error", "names_file": Path(path).name in text or Path(path).parent.name in text,
                          "one_line": "\n" not in text.strip(), "message": text[:300]}
            except Exception as exc:  # noqa: BLE001 - this is what the fuzz counts
                result = {"outcome": "traceback", "type": type(exc).__name__, "message": str(exc)[:300],
                          "where": traceback.format_exc().strip().splitlines()[-3][:200]}
            out.write(json.dumps({"index": index, "kind": kind, "mutation": how, "path": path, **result}) + "\n")
            out.flush()


def run(jobs: list, folder: Path, timeout: float = 1800) -> list[dict]:
    """Run the worker over ``jobs``, restarting it after a crash; one result per job."""
    jobs_file, results_file = folder / "jobs.json", folder / "results.jsonl"
    jobs_file.write_text(json.dumps(jobs))
    results_file.write_text("")
    results: dict[int, dict] = {}
    start = 0
    while start < len(jobs):
        proc = subprocess.run([sys.executable, __file__, "--worker", str(jobs_file), str(results_file), str(start)],
                              capture_output=True, text=True, timeout=timeout)
        started = None
        for line in results_file.read_text().splitlines():
            record = json.loads(line)
            if record.get("state") == "started":
                started = record["index"]
            else:
                results[record["index"]] = record
        if len(results) == len(jobs):
            break
        crashed = started if started is not None and started not in results else start
        kind, how, path = jobs[crashed]
        results[crashed] = {"index": crashed, "kind": kind, "mutation": how, "path": path, "outcome": "crash",
                            "returncode": proc.returncode, "stderr": proc.stderr.strip()[-300:]}
        with results_file.open("a") as out:
            out.write(json.dumps(results[crashed]) + "\n")
        start = crashed + 1
    return [results[i] for i in range(len(jobs))]


def contained(record: dict) -> dict:
    """A crashing file given to the CLI, probes on: the answer must be one line, exit 2."""
    path = Path(record["path"])
    args = {"onnx": ["inspect", path], "tflite": ["inspect", path],
            "torchscript": ["compress", "--model", path, "--trust-model-code", "--data", "digits", "--out",
                            path.with_suffix(".run")]}.get(record["kind"])
    if args is None:
        return {"contained": False, "why": "no child-process probe for this kind"}
    proc = subprocess.run([sys.executable, "-m", "edgedl", *map(str, args)], capture_output=True, text=True)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return {"contained": proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"),
            "returncode": proc.returncode, "stderr": proc.stderr.strip()[-200:]}


def summarize(results: list[dict]) -> dict:
    table: dict[str, Counter] = {}
    for r in results:
        row = table.setdefault(r["kind"], Counter())
        row[r["outcome"]] += 1
        if r["outcome"] == "error" and not r.get("names_file"):
            row["error_without_file_name"] += 1
        if r["outcome"] == "error" and not r.get("one_line"):
            row["error_over_one_line"] += 1
    return {k: dict(v) for k, v in table.items()}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / ".work" / "fuzz")
    args = parser.parse_args()
    import shutil

    shutil.rmtree(args.out, ignore_errors=True)
    seeds = make_seeds(args.out / "seeds")
    cases = args.out / "cases"
    cases.mkdir(parents=True)
    jobs = write_cases(seeds, cases, args.cases, args.seed)
    results = run(jobs, args.out)
    crashes = [r for r in results if r["outcome"] == "crash"]
    for record in crashes:
        record.update(contained(record))
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    table = summarize(results)
    print(f"{len(results)} cases, seed {args.seed}")
    print("| file | cases | opened | edgedl error | error without the file's name | traceback | crash (contained) |")
    print("|---|---|---|---|---|---|---|")
    for kind in KINDS:
        row = table.get(kind, {})
        total = sum(row.get(k, 0) for k in ("ok", "error", "traceback", "crash"))
        held = sum(1 for r in crashes if r["kind"] == kind and r.get("contained"))
        print(f"| {kind} | {total} | {row.get('ok', 0)} | {row.get('error', 0)} | "
              f"{row.get('error_without_file_name', 0)} | {row.get('traceback', 0)} | "
              f"{row.get('crash', 0)} ({held}) |")
    bad = [r for r in results if r["outcome"] == "traceback"] + [r for r in crashes if not r.get("contained")]
    for r in bad[:20]:
        print("DEFECT", json.dumps({k: r.get(k) for k in ("kind", "mutation", "path", "type", "message", "where",
                                                          "stderr")}))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
