from __future__ import annotations

import pytest

from cdseg.config import load_config
from cdseg.errors import ConfigError
from cdseg.models import ModelConfig


def test_defaults_are_the_paper_setup() -> None:
    cfg = ModelConfig()
    assert (cfg.encoder, cfg.norm, cfg.act, cfg.dropout) == ("tresnet_m", "iabn_sync", "leaky_relu", 0.5)


def test_original_cli_spellings_keep_their_meaning() -> None:
    # saticl: `--model.norm iabn_sync --model.act ident` = iABN's own leaky_relu, no extra activation
    cfg = load_config(ModelConfig, cli={"norm": "iabn_sync", "act": "ident"})
    assert (cfg.norm, cfg.act) == ("iabn_sync", "leaky_relu")
    assert ModelConfig(norm="std", act="ident").act == "identity"  # BatchNorm then no activation, literally
    assert ModelConfig(norm="std", act="lrelu").norm == "bn"
    assert ModelConfig(norm="iabn", act="identity").act == "identity"  # our spelling is literal


def test_relu_cannot_be_fused_into_iabn() -> None:
    with pytest.raises(ConfigError, match="act='relu' cannot be fused"):
        load_config(ModelConfig, cli={"norm": "iabn", "act": "relu"})


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("norm", "groupnorm", "--model.norm|--norm"),
    ("dropout", 1.5, "--dropout"),
    ("decoder_channels", [0, 3], "decoder-channels.*positive"),
])
def test_bad_values_name_the_field(field: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(ModelConfig, cli={field: value})


def test_weights_without_pretrained_is_contradictory() -> None:
    with pytest.raises(ConfigError, match="contradictory"):
        load_config(ModelConfig, cli={"weights": "/w.safetensors", "pretrained": False})
