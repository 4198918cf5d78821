import pytest
import torch

from edgedl.errors import EdgedlError, UsageError
from edgedl.models import create_model, get_entry, list_models, load_checkpoint, load_model, save_checkpoint
from edgedl.models.mobilenet import make_divisible


def test_registry_has_the_required_models():
    assert {"resnet8", "resnet18", "mobilenetv2_100", "mobilenetv2_050", "mlp"} <= set(list_models())
    assert list_models("mobilenet*") == ["mobilenetv2_050", "mobilenetv2_100"]
    assert list_models("nothing*") == []


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_and_runs(name):
    entry = get_entry(name)
    if len(entry.default_input) == 2:  # 1-D models: C x T windows
        size, kwargs = entry.default_input[1:], {}
    else:
        # Big architectures run at a reduced size here; global pooling makes them size-agnostic.
        size = entry.default_input[1:] if name in ("mlp", "resnet8") else (64, 64)
        kwargs = {"input_size": size}
    model = create_model(name, num_classes=7, in_channels=2, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 2, *size))
    assert out.shape == ((3, 2, *size) if entry.task == "reconstruction" else (3, 7))  # an autoencoder gives its input back
    assert torch.isfinite(out).all()


def test_parameter_counts_match_the_reference_architectures():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # torchvision: resnet18 11,689,512; mobilenet_v2 3,504,872 (1000 classes, 3 channels).
    assert count(create_model("resnet18", num_classes=1000)) == 11_689_512
    assert count(create_model("mobilenetv2_100", num_classes=1000)) == 3_504_872
    assert count(create_model("mobilenetv2_050", num_classes=1000)) < 0.6 * 3_504_872


def test_make_divisible_rounds_to_multiples_of_8():
    assert [make_divisible(v) for v in (16, 12, 8 * 0.5, 1280 * 0.5)] == [16, 16, 8, 640]


def test_unknown_model_lists_the_registry():
    with pytest.raises(UsageError) as err:
        create_model("resnet9000")
    assert "resnet9000" in str(err.value) and "resnet8" in str(err.value) and "mlp" in str(err.value)


def test_unknown_architecture_option_is_a_usage_error():
    with pytest.raises(UsageError, match="resnet8"):
        create_model("resnet8", depth=50)


def test_file_factory_spec(tmp_path):
    src = tmp_path / "mynet.py"
    src.write_text(
        "import torch.nn as nn\n"
        "def build(num_classes=10):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n"
        "def not_a_model():\n"
        "    return 3\n"
    )
    loaded = load_model(f"{src}:build", num_classes=4, in_channels=1, input_size=(8, 8))
    assert loaded.module(torch.zeros(2, 1, 8, 8)).shape == (2, 4)  # only declared options passed
    assert loaded.arch["spec"] == f"{src.resolve()}:build"
    with pytest.raises(UsageError, match="not a torch.nn.Module"):
        load_model(f"{src}:not_a_model")
    with pytest.raises(UsageError, match="not a callable"):
        load_model(f"{src}:missing")
    with pytest.raises(UsageError, match="model file not found"):
        load_model(f"{tmp_path / 'nope.py'}:build")


def test_module_factory_spec():
    loaded = load_model("edgedl.models.resnet:resnet8", num_classes=3, in_channels=1)
    assert loaded.module(torch.zeros(1, 1, 8, 8)).shape == (1, 3)
    with pytest.raises(UsageError, match="cannot import module"):
        load_model("no_such_pkg.mod:fn")


def test_checkpoint_round_trip_restores_weights_and_architecture(tmp_path):
    model = create_model("resnet8", num_classes=10, in_channels=1).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {"spec": "resnet8", "kwargs": {"num_classes": 10, "in_channels": 1}}, note="x")
    loaded = load_checkpoint(path)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.module.eval()(x))
    assert loaded.checkpoint == {"note": "x"}
    # A checkpoint is also a model spec.
    assert load_model(str(path)).arch["spec"] == "resnet8"


def test_a_bare_state_dict_is_not_an_edgedl_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(create_model("mlp").state_dict(), path)
    with pytest.raises(UsageError, match="not an edgedl checkpoint"):
        load_checkpoint(path)


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a zip file")
    with pytest.raises(EdgedlError, match="cannot read checkpoint"):
        load_checkpoint(path)
