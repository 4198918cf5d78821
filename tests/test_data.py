import numpy as np
import pytest

from edgedl.data import load_dataset, stratified_split
from edgedl.errors import UsageError


def test_digits_is_the_real_dataset_split_70_15_15():
    d = load_dataset("digits")
    assert len(d.train) + len(d.val) + len(d.test) == 1797  # scikit-learn's digits
    assert abs(len(d.test) - 0.15 * 1797) < 10
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10 and d.labeled
    assert d.train.x.dtype == np.float32 and d.train.y.dtype == np.int64
    # Normalised with statistics of the training split only.
    assert abs(float(d.train.x.mean())) < 1e-5 and abs(float(d.train.x.std()) - 1) < 1e-4
    assert d.normalization["scale"] == 1 / 16


def test_split_is_seeded_disjoint_and_stratified():
    y = np.repeat(np.arange(10), 50)
    a = stratified_split(y, seed=3, val_fraction=0.2, test_fraction=0.2)
    b = stratified_split(y, seed=3, val_fraction=0.2, test_fraction=0.2)
    c = stratified_split(y, seed=4, val_fraction=0.2, test_fraction=0.2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[2], c[2])
    train, val, test = (set(p.tolist()) for p in a)
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == len(y)
    assert np.bincount(y[a[2]]).tolist() == [10] * 10


def test_digits_same_seed_same_split_and_other_seed_differs():
    d1, d2, d3 = load_dataset("digits", seed=1), load_dataset("digits", seed=1), load_dataset("digits", seed=2)
    assert np.array_equal(d1.test.x, d2.test.x) and np.array_equal(d1.test.y, d2.test.y)
    assert not np.array_equal(d1.test.y, d3.test.y)


def test_digits_resize_and_channel_repeat():
    d = load_dataset("digits:3x16x16")
    assert d.train.x.shape[1:] == (3, 16, 16) and d.input_shape == (3, 16, 16)
    assert np.array_equal(d.train.x[:, 0], d.train.x[:, 2])
    assert len(d.normalization["mean"]) == 3


def test_random_data_has_no_labels_and_says_so():
    d = load_dataset("random:3x32x32")
    assert d.train.x.shape[1:] == (3, 32, 32) and not d.labeled and d.num_classes is None
    assert any("accuracy" in n for n in d.notes)


def test_npz_with_and_without_labels(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.standard_normal((100, 4)), y=np.repeat(np.arange(4), 25))
    d = load_dataset(str(path))
    assert d.train.x.dtype == np.float32 and d.num_classes == 4 and d.labeled
    assert len(d.train) + len(d.val) + len(d.test) == 100
    np.savez(path, x=rng.standard_normal((40, 4)).astype(np.float32))
    d = load_dataset(str(path))
    # unlabelled: no test split apart (no accuracy to report); val, held out, doubles as test
    assert not d.labeled and len(d.train) + len(d.val) == 40 and len(d.train) == 34
    assert np.array_equal(d.val.x, d.test.x)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("imagenet", "unknown dataset 'imagenet'; known: digits"),
        ("random", "needs a shape"),
        ("random:3x0x4", "CxHxW"),
        ("digits:big", "CxHxW"),
        ("missing.npz", "data file not found: missing.npz"),
    ],
)
def test_bad_data_specs(spec, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        load_dataset(spec)


def test_npz_without_x_or_with_mismatched_labels(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((4, 2)), masks=np.zeros((4, 2)))
    with pytest.raises(UsageError, match="a single-input model needs 'x'"):
        load_dataset(str(path))
    np.savez(path, images=np.zeros((4, 2)))  # one array under the model's input name is x
    assert load_dataset(str(path)).input_shape == (2,)
    np.savez(path, x=np.zeros((4, 2)), y=np.zeros(3))
    with pytest.raises(UsageError, match="x has 4 samples but y has 3"):
        load_dataset(str(path))


def test_npz_of_uint8_images_is_normalised_and_the_recipe_recorded(tmp_path):
    """HxWxC uint8 images become standardised NCHW floats; the recorded normalization, applied by
    the runtime's predict() to a raw image, gives back the same array."""
    from edgedl.runtime.preprocess import image_to_input

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 6, 5, 3), dtype=np.uint8)
    x[..., 0] //= 2  # channels with different statistics
    y = np.arange(60) % 2
    np.savez(tmp_path / "img.npz", x=x, y=y, labels=np.array(["clear", "obstacle"]))
    ds = load_dataset(str(tmp_path / "img.npz"))
    assert ds.input_shape == (3, 6, 5) and ds.labels == ["clear", "obstacle"]
    norm = ds.normalization
    assert norm["scale"] == 1 / 255 and norm["resize"] == "bilinear" and len(norm["mean"]) == 3
    assert norm["mean"][0] < norm["mean"][1]  # per-channel statistics, from the training split
    assert abs(ds.train.x.mean()) < 0.05 and abs(ds.train.x.std() - 1) < 0.05
    tr, va, te = stratified_split(y, 0, 0.15, 0.15)
    again = image_to_input(x[te[0]], (1, 3, 6, 5), "NCHW", norm)
    np.testing.assert_allclose(again[0], ds.test.x[0], atol=1e-5)
    np.savez(tmp_path / "short.npz", x=x, y=y, labels=np.array(["one"]))
    with pytest.raises(UsageError, match="'labels' names 1 classes but y has 2"):
        load_dataset(str(tmp_path / "short.npz"))
