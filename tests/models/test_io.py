from __future__ import annotations

import json

import pytest
import torch

from cdseg.errors import CheckpointError
from cdseg.models.io import CARD_NAME, WEIGHTS_NAME, load_model, load_state, read_card, save_model

CARD = {"task": "6s", "step": 1, "classes": [["background", "building"], ["tree"]], "method": "mib-cd",
        "epoch": 3, "metric": {"name": "miou", "value": 0.5}}


def test_round_trip(tmp_path, tiny_model) -> None:
    model = tiny_model(heads=[2, 1], bands=["R", "G", "B", "IR"], norm="iabn_sync")
    model.eval()
    uri = save_model(model, tmp_path / "model", CARD)
    loaded, card = load_model(uri)
    loaded.eval()
    x = torch.rand(1, 4, 32, 32)
    assert torch.equal(model(x)[0], loaded(x)[0])
    assert card["task"] == "6s" and card["heads"] == [2, 1] and card["bands"] == ["R", "G", "B", "IR"]
    assert card["model"]["norm"] == "iabn_sync" and card["normalisation"]["mean"] == [0.25] * 4
    assert read_card(uri)["sha256"] == card["sha256"]
    assert loaded.cfg == model.cfg


def test_corrupted_weights_are_refused(tmp_path, tiny_model) -> None:
    uri = save_model(tiny_model(heads=[2]), tmp_path / "model", CARD)
    weights = tmp_path / "model" / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_NAME} has sha256 .* corrupted"):
        load_model(uri)


def test_missing_or_foreign_checkpoint(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="model.json"):
        read_card(tmp_path / "none")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / CARD_NAME).write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not a cdseg model card"):
        read_card(tmp_path / "x")


def test_save_is_atomic_on_bad_card(tmp_path, tiny_model) -> None:
    with pytest.raises(Exception, match="JSON"):
        save_model(tiny_model(heads=[2]), tmp_path / "model", {"bad": object()})
    assert not (tmp_path / "model").exists()


def test_load_state_for_the_next_step(tmp_path, tiny_model) -> None:
    from cdseg.models import load_previous_into

    old = tiny_model(heads=[2])
    uri = save_model(old, tmp_path / "model", CARD)
    state, card = load_state(uri)
    new = tiny_model(heads=[2, 1], seed=5)
    load_previous_into(new, state)
    assert torch.equal(new.heads[0].weight, old.heads[0].weight)


def test_overwrite_and_portability_without_inplace_abn(tmp_path, tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from cdseg.models import norm

    model = tiny_model(heads=[2], norm="iabn")
    uri = tmp_path / "model"
    save_model(tiny_model(heads=[2], seed=3, norm="iabn"), uri, CARD)
    save_model(model, uri, CARD)  # the best epoch replaces the previous one
    model.eval()
    x = torch.rand(1, 3, 32, 32)
    norm.reset_import_cache()
    monkeypatch.setitem(sys.modules, "inplace_abn", None)
    try:
        loaded, _ = load_model(uri)
        assert any(isinstance(m, norm.ABN) for m in loaded.modules())
        loaded.eval()
        assert torch.allclose(loaded(x)[0], model(x)[0], atol=1e-5)
    finally:
        norm.reset_import_cache()


@pytest.mark.parametrize("version", ["1", None, 1.5])
def test_card_with_a_non_integer_format_version(tmp_path, tiny_model, version) -> None:
    uri = save_model(tiny_model(heads=[2]), tmp_path / "model", CARD)
    card = json.loads((tmp_path / "model" / CARD_NAME).read_text())
    card["format_version"] = version
    (tmp_path / "model" / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"has format_version .*, expected an integer"):
        load_model(uri)


def test_remote_checkpoint_must_be_a_committed_folder(s3_server, tmp_path, tiny_model) -> None:
    from conftest import make_bucket

    import cdseg.storage as storage

    make_bucket(s3_server, "ckpts")
    storage.configure(storage.StorageConfig(endpoint_url=s3_server))
    model = tiny_model(heads=[2])
    good = save_model(model, "s3://ckpts/good", CARD)
    assert load_model(good)[1]["sha256"] == read_card(good)["sha256"]
    save_model(model, tmp_path / "m", CARD)
    for name in (WEIGHTS_NAME, CARD_NAME):  # uploaded by hand: plain objects, no storage manifest
        storage.write_bytes(f"s3://ckpts/by-hand/{name}", (tmp_path / "m" / name).read_bytes())
    with pytest.raises(CheckpointError, match=r"s3://ckpts/by-hand cannot be read as a checkpoint folder .*not a "
                                              r"committed folder"):
        load_model("s3://ckpts/by-hand")
