"""edgedl's INT8 against the tools a user would otherwise pick, on the same fp32 ONNX file.

Per model, side by side in one run: FP32; plain ONNX Runtime ``quantize_static`` with its defaults;
NNCF's post-training quantization (``nncf.quantize``, defaults); edgedl's PTQ (the quantize stage);
edgedl's QAT (the qat stage). Every file is calibrated on the same samples of the training split
and scored on the same held-out test split through edgedl.runtime; then all are timed in one
process, alternating order each round (ONNX Runtime, CPU, batch 1, 2 threads).

Models:
  hard      MobileNetV2-0.5 on digits at 1x32x32, trained here, with two residual-stream channels 100x
            the rest (tests/outlier_mobilenet.py: the float function unchanged, one INT8 range per
            tensor starved): depthwise-heavy, activation outliers
  resnet18  ResNet-18 at 3x224x224 on crops of scikit-learn's sample photographs, random weights
            (no weights can be downloaded here): scored by top-1 agreement with FP32

    .venv/bin/pip install -e '.[peers]' -c constraints.txt      # NNCF, for this script only
    .venv/bin/python benchmarks/int8_peers.py [--models hard,resnet18] [--rounds 5] [--out benchmarks/.work/peers]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # write_images: crops of scikit-learn's sample photographs


def recipes(model: str, out: Path) -> dict:
    qat = {"stage": "qat", "epochs": 3, "on_gate_miss": "warn", "formats": ["onnx"]}
    ptq = {"stage": "quantize", "precision": "int8", "calibration_samples": 128, "threads": 2, "on_gate_miss": "warn"}
    if model == "hard":
        return {"name": "peers-hard", "model": str(ROOT / "tests" / "outlier_mobilenet.py") + ":build",
                "data": "digits:1x32x32", "seed": 0, "targets": ["onnx"], "stages": [{"stage": "export_onnx"}, ptq, qat]}
    from yolo_head import write_images

    images = write_images(out / "photos", count=160, size=224)
    # no QAT here: its weights are random (none can be downloaded), and fine-tuning an untrained network
    # towards its own near-tied logits measures nothing
    return {"name": "peers-resnet18", "model": "resnet18", "data": f"images:{images}:3x224x224", "seed": 0,
            "targets": ["onnx"], "stages": [{"stage": "export_onnx"}, ptq]}


def peers(fp32: Path, feeds: list[dict], work: Path) -> dict[str, Path]:
    """Plain ORT quantize_static (defaults) and NNCF PTQ (defaults) of the same fp32 file."""
    import onnx
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    files = {}
    plain = work / "ort_quantize_static.onnx"
    q.quantize_static(str(fp32), str(plain), Reader())
    files["ORT quantize_static (defaults)"] = plain
    try:
        import nncf
    except ImportError:
        print("NNCF is not installed: pip install -e '.[peers]' -c constraints.txt", file=sys.stderr)
        return files
    quantized = nncf.quantize(onnx.load(str(fp32)), nncf.Dataset(feeds))
    onnx.save(quantized, str(work / "nncf_ptq.onnx"))
    files[f"NNCF {nncf.__version__} PTQ (defaults)"] = work / "nncf_ptq.onnx"
    return files


def stage_seconds(manifest: dict, name: str) -> float:
    return next((s.get("seconds") or 0.0 for s in manifest["stages"] if s.get("stage") == name), 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="hard,resnet18")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / ".work" / "peers")
    args = parser.parse_args()
    from edgedl import api
    from edgedl.artifacts import compare, predict
    from edgedl.bench import conditions
    from edgedl.data import calibration_samples, load_dataset
    from edgedl.quantization.speed import time_rounds
    from edgedl.recipe import validate_recipe

    print(f"CPU: {conditions.host().get('cpu')}; INT8 instructions: {', '.join(conditions.cpu_features()) or 'none'}")
    for model in args.models.split(","):
        out = args.out / model
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        recipe = validate_recipe(recipes(model, out), source="benchmark")
        started = time.time()
        run = api.compress(recipe, out=out / "run", force=True, progress=False)
        spent = time.time() - started
        arts = {a["name"]: a for a in run.manifest["artifacts"]}
        from edgedl.models.spec import model_stem

        stem = model_stem(recipe.model.spec)
        fp32 = run.artifact_path(f"{stem}.fp32.onnx")
        data = load_dataset(recipe.data.spec, seed=0)
        drawn = calibration_samples(data, 128, 0, "peers")
        feeds = [{"input": drawn.samples[i:i + 1]} for i in range(len(drawn.samples))]
        files = {"FP32": fp32, **peers(fp32, feeds, out), "edgedl PTQ": run.artifact_path(f"{stem}.int8.onnx")}
        if f"{stem}.int8qat.onnx" in arts:
            files["edgedl QAT"] = run.artifact_path(f"{stem}.int8qat.onnx")
        test = data.test
        reference = predict(fp32, test.x)
        labelled = test.y is not None
        rows = {}
        for name, path in files.items():
            got = predict(path, test.x)
            if labelled:
                score = float((got.reshape(len(got), -1).argmax(1) == test.y).mean())
            else:
                score = compare(reference, got)["top1_agreement"]
            rows[name] = (score, path.stat().st_size / 1024)
        timed = time_rounds(files, test.x[:1], threads=2, rounds=args.rounds)
        p50 = {k: float(np.median([r[0] for r in v])) for k, v in timed.items()}
        measure = "test accuracy" if labelled else "top-1 agreement with FP32 (test crops)"
        print(f"\n## {model}: {stem}, {recipe.data.spec}; {measure}; the edgedl run "
              f"{spent:.0f} s ({', '.join(st.stage for st in recipe.stages)})")
        print("| file | score | size KB | p50 ms | vs FP32 | vs fastest peer |")
        print("|---|---|---|---|---|---|")
        peer_best = min(p50[k] for k in files if k.startswith(("ORT", "NNCF")))
        for name in files:
            score, size = rows[name]
            print(f"| {name} | {score:.4f} | {size:.0f} | {p50[name]:.3f} | {p50['FP32'] / p50[name]:.2f}x | "
                  f"{peer_best / p50[name]:.2f}x |")
        ptq = arts[f"{stem}.int8.onnx"]["quantization"]
        print(f"edgedl PTQ: scheme {ptq['scheme']}, float layers {ptq['float_layers']}, "
              f"{ptq.get('scheme_choice')}; equalized {ptq.get('equalized')}")
        if "edgedl QAT" in files:
            qat = arts[f"{stem}.int8qat.onnx"]
            print(f"edgedl QAT: parity as it runs {qat['parity']['cosine']:.4f}, under Q/DQ semantics "
                  f"{qat['parity']['q_dq_semantics']['cosine']:.6f}; accuracy gate {qat['quantization']['accuracy_gate']}; "
                  f"equalized {qat['qat']['equalized']}; stage {stage_seconds(run.manifest, 'qat'):.0f} s against "
                  f"{stage_seconds(run.manifest, 'quantize'):.0f} s for PTQ")
        from edgedl.formats.onnx.profile import op_profile

        for name in [k for k in files if k.startswith(("NNCF", "edgedl PTQ"))]:
            shares = op_profile(files[name], test.x[:1], 2, runs=20, warmup=5)
            total = sum(shares.values())
            print(f"per-op profile, {name}: " + ", ".join(f"{op} {ms / total:.0%}" for op, ms in list(shares.items())[:4]))


if __name__ == "__main__":
    main()
