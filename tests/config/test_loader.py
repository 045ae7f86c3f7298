"""Config resolution: defaults < presets < YAML < env < CLI, and one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

from cdseg.config import Section, dump_config, load_config
from cdseg.config.fields import iter_leaf_fields
from cdseg.errors import ConfigError


class Inner(Section):
    batch_size: int = Field(8, gt=0, description="images per process")
    amp: bool = Field(False, description="mixed precision")
    mode: Literal["split", "overlap", "disjoint"] = Field("overlap", description="filter")
    classes: list[str] = Field(default_factory=list, description="names")


class Root(Section):
    name: str | None = Field(None, description="run name")
    method: str = Field("ft", description="preset")
    lr: float = Field(1e-3, description="learning rate")
    trainer: Inner = Field(default_factory=Inner)

    @classmethod
    def presets(cls, user: dict[str, Any]) -> dict[str, Any]:
        if user.get("method") == "big":
            return {"trainer": {"batch_size": 64, "amp": True}, "lr": 0.1}
        return {}


def test_leaf_paths_and_flags() -> None:
    leaves = {leaf.path: leaf for leaf in iter_leaf_fields(Root)}
    assert list(leaves) == ["name", "method", "lr", "trainer.batch_size", "trainer.amp", "trainer.mode", "trainer.classes"]
    assert leaves["trainer.batch_size"].flag == "--trainer.batch-size"
    assert leaves["trainer.mode"].choices == ["split", "overlap", "disjoint"]
    assert leaves["trainer.classes"].parse_text("a, b", source="x") == ["a", "b"]


def test_precedence(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lr: 0.5\ntrainer:\n  batch_size: 2\n  mode: split\n")
    env = {"CDSEG_TRAINER__BATCH_SIZE": "3", "CDSEG_NAME": "from-env", "NAME": "ignored", "SEED": "1"}
    cfg = load_config(Root, config_file=cfg_file, environ=env, cli={"trainer.batch_size": "4"})
    assert cfg.trainer.batch_size == 4  # CLI beats env beats file
    assert cfg.name == "from-env"
    assert cfg.lr == 0.5 and cfg.trainer.mode == "split"


def test_preset_never_overrides_explicit_values() -> None:
    cfg = load_config(Root, environ={}, cli={"method": "big", "lr": "0.01"})
    assert cfg.lr == 0.01  # explicit
    assert cfg.trainer.batch_size == 64 and cfg.trainer.amp is True  # from the preset
    cfg = load_config(Root, environ={"CDSEG_TRAINER__AMP": "false"}, cli={"method": "big"})
    assert cfg.trainer.amp is False


@pytest.mark.parametrize(
    ("cli", "expected"),
    [
        ({"trainer.batch_size": "0"}, "--trainer.batch-size"),
        ({"trainer.mode": "noov"}, "split"),
        ({"lr": "fast"}, "--lr=fast"),
    ],
)
def test_errors_name_the_option(cli: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(Root, environ={}, cli=cli)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_yaml_key_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  batchsize: 3\n")
    with pytest.raises(ConfigError, match=r"unknown option --trainer\.batchsize"):
        load_config(Root, config_file=bad, environ={})


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Root, config_file=tmp_path / "nope.yaml", environ={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Root, config_file=broken, environ={})


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = load_config(Root, environ={}, cli={"trainer.classes": ["car", "tree"]})
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(Root, config_file=path, environ={}) == cfg


def test_a_bad_environment_value_is_reported_under_the_variable() -> None:
    env = {"CDSEG_TRAINER__BATCH_SIZE": "0", "CDSEG_LR": "fast"}
    with pytest.raises(ConfigError) as err:
        load_config(Root, environ=env)
    assert "invalid CDSEG_TRAINER__BATCH_SIZE=0" in str(err.value) and "invalid CDSEG_LR=fast" in str(err.value)
    assert "--trainer.batch-size" not in str(err.value)
    with pytest.raises(ConfigError, match="invalid --trainer.batch-size=-1"):  # the flag won: it is named
        load_config(Root, environ=env, cli={"trainer.batch_size": "-1", "lr": "0.1"})
