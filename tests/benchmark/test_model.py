"""Architecture registry, segmenter checkpoints, encoder weights and features."""

from __future__ import annotations

import pytest
import torch

from groundsynth.benchmark.model import (
    ModelSpec,
    build_model,
    encoder_features,
    get_architecture,
    list_architectures,
    load_segmenter,
    resolve_device,
    save_segmenter,
)
from groundsynth.errors import InputError
from tests.benchmark.conftest import TINY


def test_registry_lists_the_six_architectures_and_rejects_others():
    assert list_architectures() == [
        "unet",
        "unetplusplus",
        "pan",
        "deeplabv3plus",
        "segformer",
        "fpn",
    ]
    assert get_architecture("UNet-PlusPlus").__name__ == "UnetPlusPlus"
    with pytest.raises(InputError, match="valid architectures: unet, unetplusplus"):
        get_architecture("linknet2")


@pytest.mark.parametrize("arch", list_architectures())
def test_every_architecture_builds_and_runs_at_64_px(arch):
    torch.manual_seed(0)
    model = build_model(arch, **TINY).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 7, 64, 64)
    assert encoder_features(model, x).shape[0] == 2


@pytest.mark.parametrize("arch", ["pan", "fpn"])
def test_any_image_size_is_padded_and_cropped_back(arch):
    model = build_model(arch, **TINY).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 50, 37)).shape == (1, 7, 50, 37)


def test_spec_validation_names_the_problem():
    with pytest.raises(InputError, match="encoder_depth must be 3, 4 or 5"):
        ModelSpec("unet", encoder_depth=2)
    with pytest.raises(InputError, match="normalisation"):
        ModelSpec("unet", normalisation="zscore")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown encoder 'no-such-encoder'.*tu-<name>"):
        build_model("unet", "no-such-encoder", encoder_depth=3)
    with pytest.raises(InputError, match="cannot build unetplusplus with encoder 'mit_b0'"):
        build_model("unetplusplus", "mit_b0")


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = build_model("fpn", **TINY).eval()
    path = save_segmenter(tmp_path / "m.pt", model, {"name": "fpn-test", "trained": {"seed": 3}})
    loaded, info = load_segmenter(path)
    assert not loaded.training
    assert info["name"] == "fpn-test" and info["trained"] == {"seed": 3}
    assert info["model"] == {**model.spec.to_dict()} and info["class_names"][6] == "Water"
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # plain tensors and containers only: loadable with weights_only=True
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "groundsynth-segmenter"


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_segmenter(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(InputError, match="not a groundsynth segmenter checkpoint"):
        load_segmenter(other)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt: cannot read"):
        load_segmenter(junk)


def test_encoder_weights_from_a_local_file(tmp_path):
    torch.manual_seed(2)
    source = build_model("unet", **TINY)
    weights = tmp_path / "encoder.pth"
    torch.save(source.net.encoder.state_dict(), weights)
    model = build_model("segformer", encoder_weights=weights, **TINY)
    for key, value in source.net.encoder.state_dict().items():
        assert torch.equal(model.net.encoder.state_dict()[key], value), key
    # a whole smp model's state dict works too (its "encoder." keys are used)
    whole = tmp_path / "whole.pt"
    torch.save(source.net.state_dict(), whole)
    build_model("fpn", encoder_weights=whole, **TINY)
    # weights of another encoder are refused, naming what is missing
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(InputError, match="wrong.pth: does not fit encoder"):
        build_model("unet", encoder_weights=wrong, **TINY)


def test_resolve_device_is_cpu_safe():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("quantum")
