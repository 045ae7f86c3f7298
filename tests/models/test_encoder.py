from __future__ import annotations

import time

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import SpaceToDepth

from cdseg.errors import ConfigError, UserError
from cdseg.models import ModelConfig, build_segmenter
from cdseg.models.encoder import adapt_first_conv, create_encoder


@pytest.mark.parametrize("bands", [["R", "G", "B"], ["R", "G", "B", "IR"], ["R", "G", "B", "IR", "DSM"]])
@pytest.mark.parametrize("encoder", ["resnet18", "test_resnet"])
def test_encoders_by_name_and_band_counts(encoder: str, bands: list[str], tiny_model) -> None:
    model = tiny_model(heads=[3, 1], bands=bands, encoder=encoder)
    logits, features = model(torch.rand(2, len(bands), 32, 32))
    assert logits.shape == (2, 4, 32, 32)
    assert features.shape == (2, model.encoder.feature_info.channels()[0], 32, 32)


def test_tresnet_m_forward_is_fast_enough(tiny_model) -> None:
    start = time.perf_counter()
    model = tiny_model(heads=[2], bands=["R", "G", "B", "IR"], encoder="tresnet_m", norm="iabn_sync")
    logits, features = model(torch.rand(1, 4, 64, 64))
    assert time.perf_counter() - start < 20
    assert logits.shape == (1, 2, 64, 64) and features.shape == (1, 64, 64, 64)


def test_unknown_encoder_is_a_config_error(tiny_cfg) -> None:
    with pytest.raises(ConfigError, match="not a timm model.*resnet"):
        create_encoder(tiny_cfg(encoder="resnet_does_not_exist"), 3)


def test_space_to_depth_adaptation_keeps_the_pretrained_stem() -> None:
    # tresnet's stem: SpaceToDepth(4) then a conv over 16 blocks x bands. Feeding the same RGB twice
    # (6 bands) through the adapted 6-band conv must equal the 3-band conv on RGB.
    torch.manual_seed(0)
    s2d = SpaceToDepth(4)
    weight = torch.randn(8, 48, 3, 3)
    x = torch.rand(2, 3, 16, 16)
    ref = torch.nn.functional.conv2d(s2d(x), weight, padding=1)
    adapted = adapt_first_conv(weight, 6)
    assert adapted.shape == (8, 96, 3, 3)
    out = torch.nn.functional.conv2d(s2d(torch.cat([x, x], 1)), adapted, padding=1)
    assert torch.allclose(out, ref, atol=1e-5)
    # and for a plain stem (1 block) it is timm's own rule
    w = torch.randn(4, 3, 7, 7)
    assert torch.allclose(adapt_first_conv(w, 5), timm.models.adapt_input_conv(5, w))


@pytest.fixture
def weights_file(tmp_path):
    """A full (classifier included) test_resnet state dict, as a user would download it."""
    torch.manual_seed(1)
    full = timm.create_model("test_resnet", pretrained=False)
    path = tmp_path / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    return path, full


def test_weights_file_gives_weights_and_their_normalisation(weights_file, stats) -> None:
    path, full = weights_file
    cfg = ModelConfig(encoder="test_resnet", weights=str(path), norm="bn")
    model = build_segmenter(cfg, [2], ["R", "G", "B", "IR"], stats)
    # R, G, B use the weights' own mean/std (test_resnet: 0.5/0.5); IR the dataset's
    assert model.input_mean.tolist() == [0.5, 0.5, 0.5, 0.25]
    assert model.input_std.tolist() == [0.5, 0.5, 0.5, 0.5]
    stem = full.state_dict()["conv1.0.weight"]
    adapted = model.encoder.state_dict()["conv1.0.weight"]
    assert torch.allclose(adapted, adapt_first_conv(stem, 4))
    assert torch.equal(model.encoder.state_dict()["layer1.0.conv1.weight"], full.state_dict()["layer1.0.conv1.weight"])


def test_random_init_uses_dataset_stats_for_every_band(tiny_model) -> None:
    model = tiny_model(heads=[2], bands=["R", "G", "B"])
    assert model.input_mean.tolist() == [0.25] * 3 and model.input_std.tolist() == [0.5] * 3


def test_missing_weights_file_says_what_to_do(tmp_path) -> None:
    cfg = ModelConfig(encoder="test_resnet", weights=str(tmp_path / "nope.pth"), norm="bn")
    with pytest.raises(ConfigError, match="does not exist"):
        create_encoder(cfg, 3)


def test_pretrained_offline_without_cache_is_a_user_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("cdseg.models.encoder.cached_pretrained_file", lambda name: None)
    with pytest.raises(UserError, match="--model.weights.*--model.pretrained false"):
        create_encoder(ModelConfig(encoder="test_resnet", pretrained=True, norm="bn"), 3)


def test_pretrained_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CDSEG_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("cdseg.models.encoder.cached_pretrained_file", lambda name: None)
    monkeypatch.setattr("cdseg.models.encoder._reachable", lambda url, timeout=3.0: False)
    with pytest.raises(UserError, match="cannot be reached.*--model.weights"):
        create_encoder(ModelConfig(encoder="test_resnet", pretrained=True, norm="bn"), 3)


def test_pretrained_from_cache_uses_the_cached_file(monkeypatch: pytest.MonkeyPatch, weights_file) -> None:
    path, full = weights_file
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("cdseg.models.encoder.cached_pretrained_file", lambda name: path)
    encoder, pcfg = create_encoder(ModelConfig(encoder="test_resnet", pretrained=True, norm="bn"), 3)
    assert pcfg is not None and tuple(pcfg["mean"]) == (0.5, 0.5, 0.5)
    assert torch.equal(encoder.state_dict()["conv1.0.weight"], full.state_dict()["conv1.0.weight"])


class _Evil:
    def __reduce__(self):  # what a malicious checkpoint does: call something when unpickled
        return (print, ("unpickled!",))


def test_pickled_weights_file_is_refused_with_the_right_fix(tmp_path, capsys) -> None:
    from cdseg.errors import CheckpointError

    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Evil()}, evil)
    with pytest.raises(CheckpointError) as err:
        create_encoder(ModelConfig(encoder="test_resnet", weights=str(evil), norm="bn"), 3)
    message = str(err.value)
    assert "\n" not in message and "holds pickled Python objects" in message and ".safetensors" in message
    assert "pass --model.weights" not in message and "weights_only=False" not in message
    assert "unpickled!" not in capsys.readouterr().out
