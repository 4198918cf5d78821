"""Transformers on the CPU: FP32 against static INT8 (edgedl's scheme search, with the weighted-
layers-only scheme that keeps LayerNorm, Softmax and GELU in float) and dynamic INT8, on a
sentence encoder shaped like a small production one (BERT, hidden 256, 4 layers, 4 heads,
intermediate 1024, sequence 128; random weights from a config, no download), fed real sentences
(standard-library docstrings, tokenized by a WordPiece tokenizer trained on them).

Per precision: one `edgedl compress --model FOLDER --data text:FILE --quantize P` run (the stage's
own gates), then every file timed side by side in this process (ONNX Runtime, 2 threads, batch 1,
alternating rounds, median of per-round p50s) and its embeddings compared with FP32 on held-out
sentences (mean cosine, min cosine).

    .venv/bin/python benchmarks/transformer_int8.py [--rounds 7] [--out benchmarks/.work/transformer]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def make_encoder(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    from hf_models import tokenizer_json

    import hf_models

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_json(folder, hf_models.sentences(400), vocab_size=2000)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    config = BertConfig(vocab_size=len(vocab), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).eval().save_pretrained(str(folder), safe_serialization=True)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / ".work" / "transformer")
    args = parser.parse_args()
    import hf_models

    from edgedl import api
    from edgedl.artifacts import predict
    from edgedl.bench import conditions
    from edgedl.data import load_dataset
    from edgedl.quantization.speed import time_rounds
    from edgedl.models.importers.hf import HFImporter
    from edgedl.recipe import validate_recipe

    folder = make_encoder(args.out / "bert-mini")
    text = args.out / "sentences.txt"
    text.write_text("\n".join(hf_models.sentences(400)) + "\n")
    runs = {}
    for precision in ("int8", "int8_dynamic"):
        recipe = validate_recipe({"model": str(folder), "data": f"text:{text}", "targets": [], "stages": [
            {"stage": "export_onnx"},
            {"stage": "quantize", "precision": precision, "calibration_samples": 128, "on_gate_miss": "warn",
             "threads": 2}]}, source="benchmark")
        runs[precision] = api.compress(recipe, out=args.out / precision, force=True, progress=False)
    fp32 = runs["int8"].artifact_path("bert-mini.fp32.onnx")
    files = {"fp32": fp32, "int8 (static)": runs["int8"].artifact_path("bert-mini.int8.onnx"),
             "int8 (dynamic)": runs["int8_dynamic"].artifact_path("bert-mini.int8dyn.onnx")}
    info = HFImporter().describe(str(folder))
    data = load_dataset(f"text:{text}", tokenizer=info["tokenizer"], seed=0)
    held_out = data.test.x  # never calibrated on
    sample = held_out[:1].batch(0, 1)[0]
    reference = predict(fp32, held_out)
    print(f"CPU: {conditions.host().get('cpu')}; INT8 instructions: {', '.join(conditions.cpu_features()) or 'none'}")
    print(f"held-out sentences: {len(held_out)}, sequence 128, batch 1, 2 threads, {args.rounds} alternating rounds")
    print("| file | size KB | p50 ms (median of rounds) | speed vs fp32 | cosine mean | cosine min | scheme |")
    print("|---|---|---|---|---|---|---|")
    for name, path in files.items():
        out = predict(path, held_out)
        ref = reference.reshape(len(reference), -1).astype(np.float64)
        cand = out.reshape(len(out), -1).astype(np.float64)
        cos = (ref * cand).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1))
        timed = time_rounds({"fp32": fp32, "file": path}, sample, 2, rounds=args.rounds)
        f_ms, q_ms = (float(np.median([r[0] for r in timed[k]])) for k in ("fp32", "file"))
        manifest = runs["int8" if "static" in name or name == "fp32" else "int8_dynamic"].manifest
        record = next((a for a in manifest["artifacts"] if Path(a["path"]).name == path.name), {})
        scheme = (record.get("quantization") or {}).get("scheme", "—")
        print(f"| {name} | {path.stat().st_size / 1024:.0f} | {q_ms:.3f} | {f_ms / q_ms:.2f}x | {cos.mean():.4f} | "
              f"{cos.min():.4f} | {scheme} |")
    static = next(a for a in runs["int8"].manifest["artifacts"] if a["name"] == "bert-mini.int8.onnx")
    print("static candidates:", json.dumps(static["quantization"].get("candidates"), default=str)[:1500])


if __name__ == "__main__":
    main()
