"""Hostile files: opening a model, checkpoint, recipe or sidecar never runs code it names and
never reads outside the model's folder. Each rule of the README's security section has a test:
a pickle that would create a file, external data pointing at /etc, a symlink out of the folder,
a TorchScript file without trust, a YAML tag that would run a command, a file too large to be
what it claims. Each ends in one line and exit 2, with nothing written and the marker never made."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EDGEDL = [sys.executable, "-m", "edgedl"]


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEDL, *map(str, args)], capture_output=True, text=True, cwd=cwd)


class _Touch:
    """Unpickling this calls Path.touch(marker): a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def evil_pickle(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Touch(marker)}, path)
    return path, marker


def test_a_pickle_that_would_create_a_file_is_never_unpickled(evil_pickle, tmp_path):
    path, marker = evil_pickle
    net = tmp_path / "net.py"
    net.write_text("import torch\ndef build(**_):\n    return torch.nn.Linear(64, 10)\n")
    for args, message in (
        (["compress", "--model", path, "--data", "digits"], "pickled Python objects"),
        (["compress", "--model", f"{net}:build", "--weights", path, "--data", "digits"], "--trust-model-code"),
        (["inspect", path], "pickled Python objects"),
        (["bench", path], "pickled Python objects"),
    ):
        r = cli(*args, "--out", tmp_path / "run") if args[0] == "compress" else cli(*args)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
        assert not marker.exists() and not (tmp_path / "run").exists()
    import edgedl.runtime as rt
    from edgedl.errors import UsageError

    with pytest.raises(UsageError):
        rt.load(path)
    assert not marker.exists()


def test_a_hugging_face_folder_with_pickled_weights_is_not_opened(evil_pickle, tmp_path):
    path, marker = evil_pickle
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "vit", "architectures": ["ViTForImageClassification"], '
                                        '"num_channels": 3, "image_size": 32}')
    path.rename(folder / "pytorch_model.bin")
    r = cli("compress", "--model", folder, "--data", "digits:3x32x32", "--out", tmp_path / "run")
    assert r.returncode == 2 and "pickle" in r.stderr and not marker.exists() and not (tmp_path / "run").exists()


@pytest.fixture
def external_model(tmp_path):
    """A MatMul model whose weight lives in external data beside it (w.bin)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = tmp_path / "model"
    folder.mkdir()
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, str(folder / "good.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    return folder


def _pointing(folder: Path, name: str, location: str) -> Path:
    import onnx

    model = onnx.load(str(folder / "good.onnx"), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, str(folder / name))
    return folder / name


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_external_data_outside_the_folder_is_refused_by_every_command(external_model, tmp_path, kind):
    secret = tmp_path / "secret.bin"  # stands for /etc/shadow: 64 bytes the model must never read
    secret.write_bytes(np.arange(16, dtype=np.float32).tobytes())
    if kind == "absolute":
        model = _pointing(external_model, "m.onnx", "/etc/hostname")
    elif kind == "dotdot":
        model = _pointing(external_model, "m.onnx", "../secret.bin")
    else:
        (external_model / "link.bin").symlink_to(secret)
        model = _pointing(external_model, "m.onnx", "link.bin")
    for args in (["inspect", model], ["bench", model, "--runs", "2"], ["inspect", model, "--target", "tensorrt"],
                 ["compress", "--model", model, "--data", "random:1x1x4", "--out", tmp_path / "run"]):
        r = cli(*args)
        assert r.returncode == 2 and "outside the model's folder" in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and not (tmp_path / "run").exists()
    assert "symlink" in r.stderr or kind != "symlink"
    r = cli("inspect", external_model / "good.onnx")  # data inside the folder is read as before
    assert r.returncode == 0, r.stderr


def test_torchscript_without_trust_is_refused_everywhere(tmp_path):
    import torch

    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(64, 10)), str(path))
    r = cli("compress", "--model", path, "--data", "digits", "--out", tmp_path / "run")
    assert r.returncode == 2 and "TorchScript program" in r.stderr and not (tmp_path / "run").exists()
    r = cli("inspect", path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_a_yaml_tag_that_would_run_a_command_is_plain_data_refused(tmp_path):
    marker = tmp_path / "pwned"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\ndata: digits\n")
    r = cli("compress", recipe, "--out", tmp_path / "run")
    assert r.returncode == 2 and "cannot read recipe" in r.stderr and not marker.exists()


@pytest.mark.parametrize("name, body, message", [
    ("huge.yaml", b"# " + b"x" * (5 << 20), "over the 4 MiB"),
    ("binary.yaml", b"\xff\xfe\x00model: resnet8", "not UTF-8"),
])
def test_a_recipe_too_large_or_not_text_is_one_line(tmp_path, name, body, message):
    path = tmp_path / name
    path.write_bytes(body)
    r = cli("compress", path, "--out", tmp_path / "run")
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_a_sidecar_that_travels_with_a_file_does_not_skip_the_parser_probe(tmp_path, monkeypatch):
    """A matching sha256 in a sidecar only names the file: the first parse still happens in a child."""
    from edgedl.formats.onnx import graph as onnx_graph
    from edgedl.runtime import probed

    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    model = tmp_path / "m.onnx"
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(model))
    from edgedl.artifacts import write_sidecar

    write_sidecar(model, "onnx", "fp32", {})
    onnx_graph.probe(model)
    assert len(calls) == 1 and probed.seen(probed.digest(model))
    onnx_graph.probe(model)  # once per process
    assert len(calls) == 1


def test_a_parser_that_dies_in_the_probe_is_one_error_line(tmp_path, monkeypatch):
    """No file at hand crashes protobuf's parser (the fuzz found none in 10,000), so the child is
    made to die as a segfault would: the caller gets one UsageError, and this process lives."""
    from edgedl.errors import UsageError
    from edgedl.formats.onnx import graph as onnx_graph

    model = tmp_path / "crash.onnx"
    model.write_bytes(b"\x08\x07")
    monkeypatch.setattr(onnx_graph, "_PROBE", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    with pytest.raises(UsageError, match=r"crash.onnx is corrupt: the ONNX parser crashed reading it \(signal 11\)"):
        onnx_graph.probe(model)


def test_a_pt2_in_the_older_layout_that_torch_would_unpickle_is_refused(tmp_path):
    """torch.export.load falls back to its older reader (which unpickles serialized_*.pt) for an
    archive its new reader does not take; edgedl reads only torch.export.save's layout untrusted."""
    import io
    import zipfile

    import torch

    marker = tmp_path / "pwned"
    payload = io.BytesIO()
    torch.save(_Touch(marker), payload)
    path = tmp_path / "old.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/models/m.json", "{}")
        archive.writestr("a/serialized_exported_program.json", "{}")
        archive.writestr("a/serialized_state_dict.pt", payload.getvalue())
        archive.writestr("a/version", "1")
    r = cli("compress", "--model", path, "--data", "digits", "--out", tmp_path / "run")
    assert r.returncode == 2 and "serialized_state_dict.pt" in r.stderr and "--trust-model-code" in r.stderr, r.stderr
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_hugging_face_folder_whose_files_lead_out_of_it_is_refused(tmp_path):
    """A tokenizer.json that is a symlink to a secret would be copied into the run (and the device)."""
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).parent))
    from hf_models import bert_folder, sentence_file

    folder = bert_folder(tmp_path / "model")
    secret = tmp_path / "secret.json"
    secret.write_text('{"not": "a tokenizer"}')
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to(secret)
    text = sentence_file(tmp_path / "s.txt", 40)
    r = cli("compress", "--model", folder, "--data", f"text:{text}", "--out", tmp_path / "run")
    assert r.returncode == 2 and "outside the model folder" in r.stderr and not (tmp_path / "run").exists(), r.stderr


def test_a_yaml_alias_bomb_and_a_deeply_nested_sidecar_are_one_line(tmp_path):
    recipe = tmp_path / "bomb.yaml"
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(6)]
    recipe.write_text("\n".join(["x:"] + [f"  {line}" for line in levels]) + "\nmodel: resnet8\ndata: digits\n")
    r = cli("compress", recipe, "--out", tmp_path / "run")
    assert r.returncode == 2 and "aliases" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    import onnx
    from onnx import TensorProto, helper

    model = tmp_path / "m.onnx"
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(model))
    (tmp_path / "m.onnx.json").write_text("[" * 100000 + "]" * 100000)
    r = cli("inspect", model)
    assert r.returncode == 2 and "cannot read sidecar" in r.stderr and r.stderr.count("\n") == 1, r.stderr
