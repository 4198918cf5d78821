"""The compatibility matrix: every model family and import form x every stage and format, from real
runs on this machine, written into the README between its compat-matrix markers.

Each cell is one `compress` run (or `inspect --target tensorrt` for the lint) of that family
through that step, shortened (1-3 epochs, small data): it either completes (works), completes
with a note the run records (works, with a note), or is refused or fails with a one-line reason
(the reason is the footnote). Nothing here is typed by hand: rerun it at the commit that changes
a cell.

    .venv/bin/python benchmarks/compat_matrix.py [--write-readme] [--out benchmarks/.work/compat]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import re
import subprocess
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

COLUMNS = ["train", "prune", "distill", "onnx", "int8", "fp16", "int8_dynamic", "tflite", "tflite_int8", "tensorrt_lint",
           "evaluate", "bench"]
TITLES = {"train": "train", "prune": "prune", "distill": "distill", "onnx": "ONNX", "int8": "ONNX INT8",
          "fp16": "ONNX FP16", "int8_dynamic": "ONNX INT8 dyn.", "tflite": "TFLite", "tflite_int8": "TFLite INT8",
          "tensorrt_lint": "TensorRT lint", "evaluate": "evaluate", "bench": "bench"}
FAST_BENCH = {"stage": "benchmark", "runs": 10, "warmup": 1, "min_seconds": 0, "rounds": 1}


def make_inputs(work: Path) -> dict[str, dict]:
    """The families and forms: model spec, data spec, trust, and which steps need a Python module."""
    import numpy as np
    import torch
    from hf_models import bert_folder, sentence_file

    work.mkdir(parents=True, exist_ok=True)
    encoder = bert_folder(work / "text_encoder")
    sentences = sentence_file(work / "sentences.txt", 160)
    from edgedl.models import create_model

    torch.manual_seed(0)
    net = create_model("resnet8", num_classes=10, in_channels=1, input_size=(8, 8)).eval()
    example = (torch.zeros(1, 1, 8, 8),)
    torch.jit.save(torch.jit.trace(net, example), str(work / "resnet8_scripted.pt"))
    torch.export.save(torch.export.export(net, (torch.zeros(2, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), str(work / "resnet8.pt2"))
    from edgedl.formats.onnx.export import export_onnx

    export_onnx(net, np.zeros((2, 1, 8, 8), np.float32), work / "resnet8.onnx", 17, True, "logits")
    seq = "digits:seq"
    return {
        "resnet8 (CNN)": {"model": "resnet8", "data": "digits"},
        "cnn1d (1-D CNN)": {"model": "cnn1d", "data": seq},
        "gru (RNN)": {"model": "gru", "data": seq},
        "lstm (RNN)": {"model": "lstm", "data": seq},
        "vit_tiny (transformer)": {"model": "vit_tiny", "data": "digits:3x32x32"},
        "conv_autoencoder": {"model": "conv_autoencoder", "data": "digits"},
        "HF text encoder (folder)": {"model": str(encoder), "data": f"text:{sentences}", "no_train": True},
        "TorchScript file": {"model": str(work / "resnet8_scripted.pt"), "data": "digits", "trust": True,
                             "no_train": True},
        "torch.export .pt2": {"model": str(work / "resnet8.pt2"), "data": "digits", "no_train": True},
        "ONNX file": {"model": str(work / "resnet8.onnx"), "data": "digits", "no_train": True},
    }


def stages_for(column: str, family: dict) -> list[dict]:
    train = [] if family.get("no_train") else [{"stage": "train", "epochs": 2}]
    evaluate = [{"stage": "evaluate"}]
    return {
        "train": [{"stage": "train", "epochs": 2}],
        "prune": train + [{"stage": "prune", "ratio": 0.3, "finetune_epochs": 1}],
        "distill": train + [{"stage": "distill", "epochs": 1}],
        "onnx": train + [{"stage": "export_onnx"}],
        "int8": train + [{"stage": "export_onnx"}, {"stage": "quantize", "precision": "int8", "on_gate_miss": "warn",
                                                   "calibration_samples": 64}],
        "fp16": train + [{"stage": "export_onnx"}, {"stage": "quantize", "precision": "fp16", "on_gate_miss": "warn"}],
        "int8_dynamic": train + [{"stage": "export_onnx"}, {"stage": "quantize", "precision": "int8_dynamic",
                                                           "on_gate_miss": "warn"}],
        "tflite": train + [{"stage": "export_tflite", "precisions": ["fp32"]}],
        "tflite_int8": train + [{"stage": "export_tflite", "precisions": ["int8_float_io"], "calibration_samples": 64}],
        "evaluate": train + [{"stage": "export_onnx"}] + evaluate,
        "bench": train + [{"stage": "export_onnx"}, FAST_BENCH],
    }[column]


def key(family: dict) -> str:
    return re.sub(r"\W+", "_", family["model"][-30:])


def short(text: str) -> str:
    text = re.sub(r"^(error: )?(stage '\w+' failed: )?", "", text.strip().splitlines()[0] if text.strip() else "")
    text = re.sub(r"^stage\(s\) [\w, ]+ cannot take '[^']+': ", "", text)  # the same reason for every stage: one note
    if re.match(r"^stage\(s\) [\w, ]+ need a PyTorch model; '[^']+' is an ONNX file", text):
        text = ("an ONNX file has no PyTorch module: it is quantized, evaluated, benchmarked and linted for TensorRT; "
                "edgedl does not take the ONNX->TensorFlow->TFLite route")
    text = re.sub(r"/\S+/", "", text)  # paths say nothing in a README
    return text[:320] + ("..." if len(text) > 320 else "")


def cell(family: dict, column: str, out: Path) -> tuple[str, str]:
    """('works' | 'note' | 'refused', reason) for one step of one family, from a real run."""
    from edgedl import api
    from edgedl.errors import EdgedlError, UsageError
    from edgedl.recipe import validate_recipe

    if column == "tensorrt_lint":
        return lint_cell(family, out)
    recipe = validate_recipe({"model": family["model"], "data": family["data"], "targets": [],
                              "stages": stages_for(column, family)}, source="compat matrix")
    run = out / f"{key(family)}_{column}"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            result = api.compress(recipe, out=run, force=True, progress=False,
                                  trust_model_code=family.get("trust", False))
    except UsageError as exc:
        return "refused", short(str(exc))
    except EdgedlError as exc:
        return "refused", short(str(exc))
    except Exception as exc:  # noqa: BLE001 - a defect, shown as such
        return "refused", f"internal error: {type(exc).__name__}: {short(str(exc))} ({traceback.format_exc(limit=1)[-80:]})"
    return judge(result.manifest, column)


def judge(manifest: dict, column: str) -> tuple[str, str]:
    """A complete run whose step added its artifact works; a quantization its own gates advise
    against, or a step that changed nothing, works with that note."""
    artifacts = manifest["artifacts"]
    if column in ("int8", "fp16", "int8_dynamic"):
        produced = [a for a in artifacts if a["produced_by"] == "quantize"]
        if not produced:
            return "refused", "no file written"
        if produced[-1].get("recommended") is False:
            summary = produced[-1].get("summary") or ""
            if "accuracy gate MISSED" in summary:
                return "note", "written, but it missed the accuracy gate at this training length"
            return "note", ("written and accurate, but no faster than FP32 on this 2-core CPU at this tiny size: its "
                            "speed gate advises the FP32 file (benchmarks/RESULTS.md has the sizes where it pays)")
    if column == "prune":
        pruned = [a for a in artifacts if a["produced_by"] == "prune"]
        if pruned and pruned[-1]["metrics"].get("params") == artifacts[0]["metrics"].get("params"):
            return "note", "nothing was pruned"
    if column == "evaluate":
        record = next((a for a in artifacts if a["format"] == "onnx"), artifacts[-1])
        m = record["metrics"]
        if m.get("accuracy") is None:
            measure = ("reconstruction MSE" if m.get("reconstruction_mse") is not None else
                       (m.get("agreement") or {}).get("measure", "no measure"))
            return "note", f"judged by {measure.replace('_', ' ')}: no accuracy for this task or data"
    return "works", ""


def lint_cell(family: dict, out: Path) -> tuple[str, str]:
    onnx = next(iter(sorted(out.glob(f"{key(family)}_onnx/artifacts/*.fp32.onnx"))), None)
    if onnx is None:
        return "refused", "no ONNX export to lint (see the ONNX column)"
    proc = subprocess.run([sys.executable, "-m", "edgedl", "inspect", str(onnx), "--target", "tensorrt:10.3",
                           "--json"], capture_output=True, text=True)
    if proc.returncode == 2:
        return "refused", short(proc.stderr)
    lint = json.loads(proc.stdout)["tensorrt_lint"]
    if lint.get("passed") is False:
        problems = lint.get("errors") or lint.get("problems") or []
        first = problems[0] if problems else {}
        return "note", short(first.get("message", str(first)) if isinstance(first, dict) else str(first)) or "lint failed"
    return "works", ""


def table(results: dict[str, dict[str, tuple[str, str]]]) -> str:
    notes: list[str] = []

    def mark(state: str, reason: str) -> str:
        if state == "works":
            return "✓"
        if reason not in notes:
            notes.append(reason)
        number = notes.index(reason) + 1
        return f"✓ [{number}]" if state == "note" else f"✗ [{number}]"

    lines = ["| model | " + " | ".join(TITLES[c] for c in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for family, cells in results.items():
        lines.append(f"| {family} | " + " | ".join(mark(*cells[c]) for c in COLUMNS) + " |")
    lines.append("")
    lines += [f"[{i + 1}] {reason}" + "  " for i, reason in enumerate(notes)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / ".work" / "compat")
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--only", nargs="*", help="family names (default: all)")
    args = parser.parse_args()
    families = make_inputs(args.out / "inputs")
    results: dict[str, dict] = {}
    for name, family in families.items():
        if args.only and name not in args.only:
            continue
        results[name] = {}
        for column in COLUMNS:
            results[name][column] = cell(family, column, args.out)
            print(f"{name:28s} {column:14s} {results[name][column][0]:8s} {results[name][column][1][:90]}", flush=True)
    (args.out / "matrix.json").write_text(json.dumps(results, indent=1))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    body = (f"From `benchmarks/compat_matrix.py` at {commit} on {datetime.date.today()} (real runs, shortened: 1-2 epochs "
            f"on digits or its rows as sequences). ✓ works, ✓ [n] works with the note, ✗ [n] refused with the reason.\n\n"
            + table(results))
    print(body)
    if args.write_readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        start, end = "<!-- compat-matrix:start -->", "<!-- compat-matrix:end -->"
        if start not in text:
            raise SystemExit("README.md has no compat-matrix markers")
        head, rest = text.split(start, 1)
        readme.write_text(head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1])


if __name__ == "__main__":
    main()
