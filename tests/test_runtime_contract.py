"""The Runner contract, written once and run against every backend that is installed.

Each case is one artifact of the same compressed model (the quickstart recipe, shortened): its
PyTorch checkpoint (the reference), fp32 and INT8 ONNX, fp32 and full-integer INT8 .tflite. A
backend whose framework is missing skips with the reason.
"""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pytest

import edgedl.runtime as rt
from edgedl.errors import EdgedlError
from edgedl.runtime import InputError, Prediction

# backend -> (the module it needs, the quick run's artifacts it runs)
CASES = {
    "torch": ("torch", ["resnet8.distilled.pt"]),
    "onnxruntime": ("onnxruntime", ["resnet8.distilled.fp32.onnx", "resnet8.distilled.int8.onnx"]),
    "litert": ("ai_edge_litert", ["resnet8.distilled.fp32.tflite", "resnet8.distilled.int8fio.tflite"]),
    # an engine built on this GPU from the fp32 ONNX (the quick run's INT8 is the CPU scheme)
    "tensorrt": ("tensorrt", ["resnet8.distilled.fp32.onnx"]),
}
MISSING = {"tensorrt": "TensorRT is not installed: it comes with JetPack on a Jetson, from NVIDIA's index elsewhere, "
                       "and cannot be installed on this machine"}


def _params():
    for backend, (module, names) in CASES.items():
        missing = importlib.util.find_spec(module) is None
        for name in names:
            yield pytest.param((backend, name), id=f"{backend}:{name}" if backend == "tensorrt" else name,
                               marks=pytest.mark.skipif(missing, reason=MISSING.get(backend,
                                                                                     f"{module} is not installed")))


@pytest.fixture(scope="module")
def engines(quick_run, tmp_path_factory):
    """Engines built on this GPU, and a trust file pinning them (only where TensorRT imports)."""
    import os

    from edgedl import api
    from edgedl.formats.tensorrt.plan import BuildOptions

    folder = tmp_path_factory.mktemp("engines")
    os.environ["EDGEDL_TRUSTED_ENGINES"] = str(folder / "trusted.txt")
    built = {}

    def engine(name, path):
        if name not in built:
            built[name] = folder / path.with_suffix(".engine").name
            api.build_engine(path, built[name], BuildOptions(batch=(1, 16, 64)), use_cache=False)
        return built[name]
    return engine


@pytest.fixture(params=list(_params()))
def case(request, quick_run, manifest):
    backend, name = request.param
    (record,) = [a for a in manifest["artifacts"] if a["name"] == name]
    if backend == "tensorrt":
        path = request.getfixturevalue("engines")(name, quick_run / record["path"])
        return backend, path, {**record, "name": path.name}
    return backend, quick_run / record["path"], record


@pytest.fixture(scope="module")
def digits():
    """The quick run's data (8x8 digits): model-ready test arrays and the raw 0..16 images."""
    from sklearn.datasets import load_digits

    from edgedl.data import load_dataset, stratified_split

    ds = load_dataset("digits", seed=0)
    bunch = load_digits()
    _, _, test = stratified_split(bunch.target, 0, 0.15, 0.15)
    raw = bunch.images[test].astype(np.uint8)
    return ds.test.x[:48], raw[:48], ds.test.y[:48]


@pytest.fixture(scope="module")
def reference(quick_run, manifest, digits):
    (record,) = [a for a in manifest["artifacts"] if a["name"] == "resnet8.distilled.pt"]
    x, _, _ = digits
    with rt.load(quick_run / record["path"], backend="torch") as m:
        return m(x)


def test_backend_is_picked_from_the_file_and_can_be_named(case):
    backend, path, record = case
    with rt.load(path) as m, rt.load(path, backend=backend) as named:
        assert m.backend == named.backend == backend
        (inp,), (out,) = m.inputs, m.outputs
        assert inp.layout == "NCHW" and inp.shape[1:] == (1, 8, 8) and inp.name
        assert out.shape[-1] == 10
        quantized_io = inp.dtype == "int8"
        assert (inp.quantization is not None) == quantized_io
        assert m.labels == [str(i) for i in range(10)]


def test_outputs_agree_with_the_torch_reference(case, digits, reference):
    _, path, record = case
    x, _, _ = digits
    from edgedl.artifacts import predict  # batches, or one at a time for a fixed-batch file

    out = predict(path, x)
    assert out.dtype == np.float32 and out.shape == reference.shape
    agreement = (out.argmax(1) == reference.argmax(1)).mean()
    if record["precision"] == "fp32":
        np.testing.assert_allclose(out, reference, atol=1e-3 * max(1.0, np.abs(reference).max()))
    else:
        assert agreement >= 0.9


def test_one_array_a_dict_and_run_give_the_same(case, digits):
    _, path, _ = case
    x = digits[0][:1]
    with rt.load(path) as m:
        name, out_name = m.inputs[0].name, m.outputs[0].name
        a, b, c = m(x), m({name: x}), m.run({name: x})
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c[out_name])


def test_warmup_and_the_context_manager_frees_the_runner(case, digits):
    _, path, _ = case
    with rt.load(path) as m:
        m.warmup(3)
        m(digits[0][:1])
    with pytest.raises(EdgedlError, match="was closed"):
        m(digits[0][:1])


def test_a_wrong_shape_or_dtype_names_the_input_and_both_shapes(case):
    _, path, _ = case
    with rt.load(path) as m:
        name = m.inputs[0].name
        with pytest.raises(InputError, match=rf"input '{name}' expects .*1x8x8.*, got 1x1x9x9 float32"):
            m(np.zeros((1, 1, 9, 9), np.float32))
        with pytest.raises(InputError, match=rf"input '{name}' expects .*got 1x1x8x8 float64"):
            m(np.zeros((1, 1, 8, 8), np.float64))
        with pytest.raises(InputError, match="got 8x8 float32"):
            m(np.zeros((8, 8), np.float32))  # no silent batch dimension


def test_predict_takes_a_raw_image_and_matches_the_model_fed_by_hand(case, digits, reference):
    """predict(uint8 image) applies the sidecar's normalization, layout and int8 quantization:
    the same answer as the model fed the training pipeline's own arrays."""
    _, path, record = case
    x, raw, y = digits
    with rt.load(path) as m:
        predictions = [m.predict(image) for image in raw]
        by_hand = np.concatenate([m(x[i : i + 1]) for i in range(len(x))])
    assert all(isinstance(p, Prediction) for p in predictions)
    assert [p.class_id for p in predictions] == list(by_hand.argmax(1))
    assert [p.label for p in predictions] == [str(i) for i in by_hand.argmax(1)]
    outputs = np.stack([p.output for p in predictions])
    np.testing.assert_allclose(outputs, by_hand, atol=1e-4 if record["precision"] == "fp32" else 0.3)
    assert all(abs(p.scores.sum() - 1) < 1e-5 and p.score == p.scores.max() for p in predictions)
    assert np.mean([p.class_id for p in predictions] == y) >= 0.8  # a trained model, not noise


def test_a_camera_thread_and_a_control_thread_can_share_one_runner(case, digits):
    _, path, _ = case
    x = digits[0]
    with rt.load(path) as m:
        expected = [m(x[i : i + 1]).copy() for i in range(len(x))]
        results: dict = {"camera": [], "control": []}
        errors = []

        def worker(name, order):
            try:
                for _ in range(3):
                    for i in order:
                        results[name].append((i, m(x[i : i + 1]).copy()))
            except Exception as exc:  # pragma: no cover - the assertion below reports it
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=("camera", range(len(x)))),
                   threading.Thread(target=worker, args=("control", range(len(x) - 1, -1, -1)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    for name in results:
        assert len(results[name]) == 3 * len(x)
        for i, out in results[name]:
            np.testing.assert_array_equal(out, expected[i])


def test_preallocated_outputs_are_reused_where_the_backend_allows(case, digits):
    backend, path, _ = case
    x = digits[0]
    with rt.load(path) as plain, rt.load(path, preallocate=True) as m:
        first = m(x[:1])
        first_values = first.copy()
        second = m(x[1:2])
        np.testing.assert_array_equal(first_values, plain(x[:1]))
        np.testing.assert_array_equal(second, plain(x[1:2]))
        if backend == "torch":
            assert m.preallocate is False  # torch allocates its outputs itself
        else:
            assert m.preallocate is True and second is first  # the same buffer, overwritten


def test_preallocated_onnx_reads_a_reused_input_array_in_place(quick_run, manifest, digits):
    """The IMU pattern: one input buffer refilled in place every call; each call sees the new data."""
    (record,) = [a for a in manifest["artifacts"] if a["name"] == "resnet8.distilled.fp32.onnx"]
    x = digits[0]
    with rt.load(quick_run / record["path"], preallocate=True) as m, rt.load(quick_run / record["path"]) as plain:
        window = np.empty((1, 1, 8, 8), np.float32)
        for i in range(4):
            window[0] = x[i]
            np.testing.assert_array_equal(m(window), plain(x[i : i + 1]))
        batch = np.ascontiguousarray(x[:3])  # a new shape: new buffers, still right
        np.testing.assert_array_equal(m(batch), plain(batch))
