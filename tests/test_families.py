"""The model families beyond CNNs, from the CLI through train, compression, quantization, export
(ONNX, LiteRT), evaluation by the task's own measure, and bench: a GRU and an LSTM over sensor
windows (digits:seq, the digits' rows as 8 time steps of 8 features: real data), a small ViT built from a
transformers config, and a convolutional autoencoder judged by its reconstruction error. What a
family cannot do is refused with its reason (benchmarks/compat_matrix.py writes the whole table
into the README)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgedl.cli import main

FAST = ["--set", "stages.benchmark.rounds=1", "--set", "stages.benchmark.runs=10", "--set",
        "stages.benchmark.min_seconds=0", "--set", "stages.benchmark.warmup=1", "--quiet"]
NOBENCH = ["--no-bench", "--quiet"]  # where the test is not about timing


def cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def artifacts(run: Path) -> dict[str, dict]:
    return {a["name"]: a for a in json.loads((run / "manifest.json").read_text())["artifacts"]}


def test_a_gru_trains_and_goes_to_dynamic_int8_onnx_and_tflite(tmp_path, capsys):
    run = tmp_path / "gru"
    code, _, err = cli(["compress", "--model", "gru", "--data", "digits:seq", "--epochs", "4", "--quantize",
                        "int8_dynamic", "--targets", "onnx,tflite", "--out", run, *FAST], capsys)
    assert code == 0, err
    a = artifacts(run)
    assert a["gru.pt"]["metrics"]["accuracy"] > 0.5  # real learning on 8-step sequences, not chance (0.1)
    assert a["gru.fp32.onnx"]["metrics"]["accuracy"] == pytest.approx(a["gru.pt"]["metrics"]["accuracy"], abs=0.004)
    assert a["gru.int8dyn.onnx"]["metrics"]["accuracy"] > a["gru.pt"]["metrics"]["accuracy"] - 0.05
    assert a["gru.fp32.tflite"]["metrics"]["latency_ms"]["p50"] > 0
    code, _, err = cli(["compress", "--model", "gru", "--data", "digits:seq", "--prune", "0.3", "--out",
                        tmp_path / "p", "--quiet"], capsys)
    assert code == 1 and "Torch-Pruning does not prune GRUs" in err and err.count("\n") == 1


def test_an_lstm_distills_and_quantizes_to_int8(tmp_path, capsys):
    run = tmp_path / "lstm"
    code, _, err = cli(["compress", "--model", "lstm", "--data", "digits:seq", "--epochs", "3", "--distill", "--set",
                        "stages.distill.epochs=2", "--quantize", "int8", "--out", run, *FAST], capsys)
    assert code == 0, err
    a = artifacts(run)
    assert a["lstm.distilled.int8.onnx"]["quantization"]["quality_metric"] == "accuracy"
    assert a["lstm.distilled.int8.onnx"]["metrics"]["latency_ms"]["p50"] > 0


def test_a_small_vit_loses_whole_attention_heads_to_pruning_and_quantizes(tmp_path, capsys):
    run = tmp_path / "vit"
    code, _, err = cli(["compress", "--model", "vit_tiny", "--data", "digits:3x16x16", "--set",
                        "model.kwargs.input_size=[16,16]", "--epochs", "2", "--prune", "0.5", "--set",
                        "stages.prune.finetune_epochs=1", "--quantize", "int8", "--out", run,
                        "--set", "stages.quantize.on_gate_miss=warn", *NOBENCH], capsys)
    assert code == 0, err
    a = artifacts(run)
    pruned = a["vit_tiny.pruned.pt"]
    assert pruned["pruning"]["attention_heads"]["before"] == 8 and pruned["pruning"]["attention_heads"]["after"] == 4
    assert pruned["metrics"]["params"] < 0.7 * a["vit_tiny.pt"]["metrics"]["params"]
    # the pruned checkpoint rebuilds (head counts restored) and exports with parity
    assert a["vit_tiny.pruned.fp32.onnx"]["metrics"]["accuracy"] == pytest.approx(pruned["metrics"]["accuracy"], abs=0.004)
    assert a["vit_tiny.pruned.int8.onnx"]["metrics"]["accuracy"] is not None


def test_an_autoencoder_is_judged_by_its_reconstruction(tmp_path, capsys):
    run = tmp_path / "ae"
    code, _, err = cli(["compress", "--model", "conv_autoencoder", "--data", "digits", "--epochs", "5", "--prune",
                        "0.3", "--quantize", "int8", "--targets", "onnx,tflite", "--out", run, *NOBENCH], capsys)
    assert code == 0, err
    a = artifacts(run)
    trained = a["conv_autoencoder.pt"]["metrics"]["reconstruction_mse"]
    assert 0 < trained < 0.6  # standardized pixels (variance 1): it reconstructs, it does not output zeros
    assert a["conv_autoencoder.pruned.pt"]["metrics"]["params"] < a["conv_autoencoder.pt"]["metrics"]["params"]
    int8 = a["conv_autoencoder.pruned.int8.onnx"]
    assert int8["quantization"]["quality_metric"] == "cosine"  # never argmax against the digits' labels
    assert int8["metrics"]["accuracy"] is None and "reconstruction" in int8["notes"]["accuracy"]
    assert int8["metrics"]["reconstruction_mse"] < a["conv_autoencoder.pruned.fp32.onnx"]["metrics"][
        "reconstruction_mse"] * 1.2
    assert "mse " in (run / "report.md").read_text()


def test_anomaly_auc_separates_what_the_autoencoder_never_saw():
    from edgedl.stages.evaluate import anomaly_auc

    assert anomaly_auc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([0, 0, 1, 1])) == 1.0
    assert anomaly_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert anomaly_auc(np.array([0.9, 0.1]), np.array([0, 1])) == 0.0
