import json
import shutil

import numpy as np
import pytest

import edgedl.runtime as rt
from edgedl.errors import EdgedlError, MissingDependencyError, UsageError
from edgedl.runtime import InputError


def test_load_reads_metadata_from_file_and_sidecar(onnx_artifact):
    with rt.load(onnx_artifact) as m:
        assert m.backend == "onnxruntime"
        (inp,) = m.inputs
        assert inp.name == "input" and inp.dtype == "float32" and inp.shape[1:] == (1, 8, 8)
        assert isinstance(inp.shape[0], str)  # dynamic batch
        assert inp.layout == "NCHW"  # from the sidecar
        assert [o.name for o in m.outputs] == ["logits"]
        assert m.labels == [str(i) for i in range(10)]


def test_call_matches_the_torch_model_it_came_from(quick_run, onnx_artifact):
    import torch

    from edgedl.data import load_dataset
    from edgedl.models import load_checkpoint

    x = load_dataset("digits").test.x[:32]
    torch_model = load_checkpoint(quick_run / "artifacts" / "resnet8.pt").module.eval()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    with rt.load(onnx_artifact) as m:
        np.testing.assert_allclose(m(x), expected, atol=1e-4)
        np.testing.assert_allclose(m.run({"input": x})["logits"], expected, atol=1e-4)
        np.testing.assert_allclose(m({"input": x}), expected, atol=1e-4)


def test_wrong_shape_or_dtype_names_the_input_and_both_shapes(onnx_artifact):
    with rt.load(onnx_artifact) as m:
        with pytest.raises(InputError) as err:
            m(np.zeros((1, 3, 8, 8), np.float32))
        assert "input 'input' expects input" in str(err.value) and "got 1x3x8x8 float32" in str(err.value)
        with pytest.raises(InputError, match="got 1x1x8x8 float64"):
            m(np.zeros((1, 1, 8, 8)))  # no silent cast
        with pytest.raises(InputError, match="got 1x8x8 float32"):
            m(np.zeros((1, 8, 8), np.float32))  # no silent broadcast
        with pytest.raises(InputError, match="unknown \\['image'\\]"):
            m({"image": np.zeros((1, 1, 8, 8), np.float32)})
        with pytest.raises(InputError, match="expected a numpy array"):
            m([[0.0]])


def test_several_inputs_and_outputs(tmp_path):
    import torch

    class TwoByTwo(torch.nn.Module):
        def forward(self, a, b):
            return a + b, (a * b).sum(1)

    path = tmp_path / "two.onnx"
    torch.onnx.export(TwoByTwo().eval(), (torch.ones(2, 3), torch.ones(2, 3)), str(path), input_names=["a", "b"],
                      output_names=["sum", "dot"], dynamo=True, opset_version=18, verbose=False)
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), np.float32)
    with rt.load(path) as m:
        out = m({"a": a, "b": b})
        assert set(out) == {"sum", "dot"}
        np.testing.assert_allclose(out["dot"], [3.0, 12.0])
        with pytest.raises(InputError, match="several inputs \\(a, b\\); pass a dict"):
            m(a)
        with pytest.raises(InputError, match="missing \\['b'\\]"):
            m({"a": a})


def test_sidecar_hash_mismatch_refuses_to_load(onnx_artifact, tiny_conv_onnx, tmp_path):
    copy = tmp_path / onnx_artifact.name
    shutil.copy(onnx_artifact, copy)
    shutil.copy(str(onnx_artifact) + ".json", str(copy) + ".json")
    with rt.load(copy):
        pass
    shutil.copy(tiny_conv_onnx, copy)  # another valid model under the same sidecar
    with pytest.raises(EdgedlError, match="does not match its sidecar"):
        rt.load(copy)
    with rt.load(copy, verify=False) as m:  # the explicit opt-out loads it
        assert m.inputs[0].name == "input"


def test_bad_sidecar_and_files(onnx_artifact, tmp_path):
    copy = tmp_path / "m.onnx"
    shutil.copy(onnx_artifact, copy)
    with pytest.raises(UsageError, match="unknown backend 'tensorflow'"):
        rt.load(copy, backend="tensorflow")
    (tmp_path / "m.onnx.json").write_text(json.dumps({"something": "else"}))
    with pytest.raises(EdgedlError, match="is not an edgedl sidecar"):
        rt.load(copy)
    with pytest.raises(UsageError, match="artifact not found"):
        rt.load(tmp_path / "absent.onnx")
    weird = tmp_path / "model.xyz"
    weird.write_bytes(b"x")
    with pytest.raises(UsageError, match="no runtime backend for 'model.xyz'"):
        rt.load(weird)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage")
    with pytest.raises(EdgedlError, match="not a readable ONNX file|ONNX Runtime cannot load"):  # onnx checks first where loaded
        rt.load(corrupt)


def test_missing_backend_names_the_pip_extra(onnx_artifact, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as on a device without it
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgedl\[onnx\]'"):
        rt.load(onnx_artifact)


def test_threads_warmup_and_close(tiny_conv_onnx):
    m = rt.load(tiny_conv_onnx, threads=1)
    m.warmup(3, batch=4)
    assert m(np.zeros((4, 1, 8, 8), np.float32)).shape == (4, 10)
    m.close()
    m.close()  # idempotent
    with pytest.raises(EdgedlError, match="tiny.onnx was closed; load it again"):
        m(np.zeros((1, 1, 8, 8), np.float32))


def test_predict_preprocessing_rebuilds_the_training_arrays_from_raw_digits():
    """Raw 8x8 digits (0..16) through the sidecar's recipe (resize with aligned corners, scale,
    mean, std, NCHW) equal the arrays the model was trained on at 16x16, which scipy's zoom made."""
    from sklearn.datasets import load_digits

    from edgedl.data import load_dataset, stratified_split
    from edgedl.runtime.preprocess import image_to_input, resize

    ds = load_dataset("digits:3x16x16", seed=0)
    bunch = load_digits()
    _, _, test = stratified_split(bunch.target, 0, 0.15, 0.15)
    for i in range(5):
        raw = bunch.images[test[i]].astype(np.uint8)
        x = image_to_input(raw, (1, 3, 16, 16), "NCHW", ds.normalization)
        np.testing.assert_allclose(x[0], ds.test.x[i], atol=1e-5)
    image = np.random.default_rng(0).random((5, 7, 2)).astype(np.float32)
    half_pixel = resize(image, 10, 14, "bilinear")
    assert half_pixel.shape == (10, 14, 2) and np.isclose(half_pixel.mean(), image.mean(), atol=0.05)
