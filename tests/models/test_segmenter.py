from __future__ import annotations

import math

import pytest
import torch

from cdseg.errors import CheckpointError, ConfigError
from cdseg.models import init_new_head_mib, load_previous_into


def test_forward_contract(tiny_model) -> None:
    model = tiny_model(heads=[3, 2, 1])
    logits, features = model(torch.rand(2, 3, 32, 48))
    assert logits.shape == (2, 6, 32, 48) and model.num_outputs == 6
    assert features.shape == (2, model.feature_channels, 32, 48)
    model.eval()
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(model.predict(x, rows=None), model(x)[0])
    assert torch.allclose(model.predict(x), model(x)[0], atol=1e-6)  # banded decoder: float rounding only


def test_features_are_pre_dropout_unless_asked(tiny_model) -> None:
    x = torch.rand(2, 3, 32, 32)
    model = tiny_model(heads=[2], dropout=0.5)
    model.train()
    torch.manual_seed(0)
    _, f1 = model(x)
    torch.manual_seed(1)
    _, f2 = model(x)
    assert torch.allclose(f1, f2, atol=1e-6)  # same batch statistics, no dropout on the features
    model = tiny_model(heads=[2], dropout=0.5, feature_dropout=True)
    torch.manual_seed(0)
    _, f1 = model(x)
    torch.manual_seed(1)
    _, f2 = model(x)
    assert not torch.allclose(f1, f2)


def test_input_normalisation_is_owned_by_the_model(tiny_model) -> None:
    model = tiny_model(heads=[2])
    x = torch.full((1, 3, 2, 2), 0.75)
    assert torch.allclose(model.normalise(x), torch.ones_like(x))  # (0.75 - 0.25) / 0.5
    assert "input_mean" in model.state_dict() and "input_std" in model.state_dict()
    with pytest.raises(ValueError, match="4 bands"):
        model.normalise(torch.rand(1, 4, 2, 2))


def test_channels_last(tiny_model) -> None:
    model = tiny_model(heads=[2, 1], channels_last=True)
    x = torch.rand(2, 3, 32, 32).to(memory_format=torch.channels_last)
    logits, _ = model(x)
    ref = tiny_model(heads=[2, 1])
    ref.load_state_dict(model.state_dict())
    model.eval()
    ref.eval()
    assert torch.allclose(model(x)[0], ref(x.contiguous())[0], atol=1e-4)
    assert logits.shape == (2, 3, 32, 32)


def _bg_and_new_share(model, x, new: slice) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.softmax(model(x)[0], dim=1)
    return probs[:, 0] + probs[:, new].sum(1), probs


@pytest.mark.parametrize("step_heads", [[3, 2], [3, 2, 2]])
def test_mib_init_splits_the_background(step_heads: list[int], tiny_model) -> None:
    x = torch.rand(2, 3, 32, 32)
    old = tiny_model(heads=step_heads[:-1], seed=1)
    with torch.no_grad():  # a trained-looking background row, distinct from the other rows
        for head in old.heads:
            head.weight.normal_()
            head.bias.normal_()
    old.eval()
    new = tiny_model(heads=step_heads, seed=2)
    load_previous_into(new, old.state_dict())
    b0 = old.heads[0].bias[0].item()
    init_new_head_mib(new)
    new.eval()
    n_new = step_heads[-1]
    old_probs = torch.softmax(old(x)[0], dim=1)
    start = sum(step_heads[:-1])
    share, new_probs = _bg_and_new_share(new, x, slice(start, start + n_new))
    # background + new classes share exactly the old background probability; old classes unchanged
    assert torch.allclose(share, old_probs[:, 0], atol=1e-5)
    assert torch.allclose(new_probs[:, 1:start], old_probs[:, 1:], atol=1e-5)
    # each of them gets an equal part
    each = old_probs[:, 0] / (n_new + 1)
    for c in [0, *range(start, start + n_new)]:
        assert torch.allclose(new_probs[:, c], each, atol=1e-5)
    assert math.isclose(new.heads[0].bias[0].item(), b0 - math.log(n_new + 1), rel_tol=1e-6)
    assert torch.equal(new.heads[-1].weight[:, :, 0, 0], old.heads[0].weight[0:1, :, 0, 0].expand(n_new, -1))


def test_mib_init_needs_a_new_head(tiny_model) -> None:
    with pytest.raises(ConfigError, match="at least 2 heads"):
        init_new_head_mib(tiny_model(heads=[3]))


def test_load_previous_into_copies_all_but_the_new_head(tiny_model) -> None:
    old = tiny_model(heads=[3], seed=1)
    new = tiny_model(heads=[3, 2], seed=2)
    load_previous_into(new, old.state_dict())
    for key, value in old.state_dict().items():
        assert torch.equal(new.state_dict()[key], value), key


def test_load_previous_into_says_what_differs(tiny_model) -> None:
    new = tiny_model(heads=[3, 2])
    with pytest.raises(CheckpointError, match=r"shape differences \[encoder.conv1.0.weight.*4, 3, 3\)"):
        load_previous_into(new, tiny_model(heads=[3], bands=["R", "G", "B", "IR"]).state_dict())
    with pytest.raises(CheckpointError, match=r"shape differences .*heads.0.weight: checkpoint \(2, 32, 1, 1\) vs model \(3, 32, 1, 1\)"):
        load_previous_into(new, tiny_model(heads=[2]).state_dict())
    state = tiny_model(heads=[3]).state_dict()
    state.pop("decoder.blocks.0.reduce.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys \[decoder.blocks.0.reduce.bias\].*unexpected keys \[extra.weight\]"):
        load_previous_into(new, state)
    with pytest.raises(CheckpointError, match="expected fewer"):
        load_previous_into(new, tiny_model(heads=[3, 2]).state_dict())


def test_bad_heads_and_stats(tiny_model) -> None:
    with pytest.raises(ConfigError, match="heads"):
        tiny_model(heads=[])
    from cdseg.models import build_segmenter
    from cdseg.models.config import ModelConfig

    with pytest.raises(ConfigError, match="stats have 2 means"):
        build_segmenter(ModelConfig(encoder="test_resnet", pretrained=False, norm="bn"), [2], ["R"],
                        {"mean": [0.1, 0.2], "std": [0.1, 0.1]})


def test_constant_band_is_centred_not_blown_up() -> None:
    from cdseg.models.segmenter import normalisation

    mean, std = normalisation(["R", "DSM"], {"R": {"mean": 0.2, "std": 0.1}, "DSM": {"mean": 0.5, "std": 0.0}}, None)
    assert mean == [0.2, 0.5] and std == [0.1, 1.0]
    mean, std = normalisation(["IR", "R"], {"mean": [0.3, 0.2], "std": [0.2, 0.1]}, {"mean": [0.4, 0.5, 0.6], "std": [0.1, 0.2, 0.3]})
    assert mean == [0.3, 0.4] and std == [0.2, 0.1]  # IR from the dataset, R from the weights


def test_predict_logits_skips_the_feature_forward(tiny_model) -> None:
    from torch import nn

    from cdseg.models import predict_logits

    model = tiny_model(heads=[3, 2]).eval()
    calls: list[int] = []
    model.register_forward_hook(lambda m, i, o: calls.append(1))
    x = torch.rand(1, 3, 32, 32)
    out = predict_logits(model, x)
    assert calls == []
    assert torch.allclose(out, model(x)[0], atol=1e-6) and calls == [1]
    conv = nn.Conv2d(3, 4, 1)
    assert torch.equal(predict_logits(conv, x), conv(x))
    assert torch.equal(predict_logits(nn.Sequential(conv), x), conv(x))


def test_named_outputs_are_computed_only_as_far_as_asked_and_match_the_tuple(tiny_model) -> None:  # noqa: ANN001
    model = tiny_model().eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ran: list[str] = []
    model.decoder.register_forward_hook(lambda *_: ran.append("decoder"))
    model.heads[0].register_forward_hook(lambda *_: ran.append("heads"))
    out = model(x, need={"stages"})
    assert out.stages and out.logits is None and out.features is None and ran == []
    out = model(x, need={"features"})
    assert out.features is not None and out.logits is None and ran == ["decoder"]
    logits, features = model(x)
    full = model(x, need={"logits", "features", "stages", "decoded", "head_logits"})
    assert torch.equal(full.logits, logits) and torch.equal(full.features, features)
    assert full.head_logits.shape[-2:] == full.decoded.shape[-2:] and len(full.stages) == len(model.encoder.feature_info)
    with pytest.raises(ValueError, match="unknown model outputs"):
        model(x, need={"attention"})
