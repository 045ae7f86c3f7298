"""Method recipes as presets: the recipe fills defaults, an explicit value always wins; CLI spelling."""

from __future__ import annotations

import pytest

from cdseg.cli.main import build_parser
from cdseg.cli.train import COMMAND
from cdseg.config import load_config
from cdseg.errors import ConfigError
from cdseg.train.config import METHODS, TrainConfig
from cdseg.train.methods import recipe


def _cfg(**cli: object) -> TrainConfig:
    return load_config(TrainConfig, cli={k.replace("__", "."): v for k, v in cli.items()}, environ={})


@pytest.mark.parametrize(
    ("method", "ce_unbiased", "kd_unbiased", "kd_weight", "factor", "factor_icl", "init_balanced"),
    [
        ("ft", False, False, 0.0, 0.0, 0.0, False),
        ("uft", True, False, 0.0, 0.0, 0.0, False),
        ("mib", True, True, 10.0, 0.0, 0.0, True),
        ("mib-cd", True, True, 10.0, 0.1, 0.1, True),
        ("ft-cd", True, False, 0.0, 0.1, 10.0, False),
        ("joint", False, False, 0.0, 0.0, 0.0, False),
    ],
)
def test_recipes_match_the_original_scripts(method: str, ce_unbiased: bool, kd_unbiased: bool, kd_weight: float,
                                            factor: float, factor_icl: float, init_balanced: bool) -> None:
    cfg = _cfg(method=method)
    assert (cfg.ce.unbiased, cfg.kd.unbiased, cfg.kd.weight) == (ce_unbiased, kd_unbiased, kd_weight)
    assert (cfg.aug.factor, cfg.aug.factor_icl, cfg.trainer.init_balanced) == (factor, factor_icl, init_balanced)


def test_every_method_has_a_recipe() -> None:
    for method in METHODS:
        assert set(recipe(method).terms) <= set(TrainConfig.model_fields)


def test_explicit_value_is_never_overridden_by_the_method() -> None:
    cfg = _cfg(method="mib", kd__weight=3.0, ce__unbiased=False, trainer__init_balanced=False)
    assert (cfg.kd.weight, cfg.ce.unbiased, cfg.trainer.init_balanced) == (3.0, False, False)
    cfg = _cfg(method="ft", aug__factor=0.5)
    assert cfg.aug.factor == 0.5 and cfg.kd.weight == 0.0


def test_explicit_value_from_yaml_wins_too(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "c.yaml"
    path.write_text("method: mib-cd\naug: {factor_icl: 2.5}\n")
    cfg = load_config(TrainConfig, config_file=path, environ={})
    assert cfg.aug.factor_icl == 2.5 and cfg.aug.factor == 0.1 and cfg.kd.weight == 10.0


def test_default_method_is_mib() -> None:
    assert _cfg().method == "mib" and _cfg().kd.weight == 10.0


def test_unknown_method_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="method"):
        _cfg(method="lwf-v2")


def test_joint_refuses_a_previous_checkpoint() -> None:
    with pytest.raises(ConfigError, match="prev-checkpoint"):
        _cfg(method="joint", prev_checkpoint="x/model")


def test_original_script_options_parse() -> None:
    parser = build_parser("train", COMMAND)
    argv = ["--task.name", "6s", "--task.step", "2", "--task.filter-mode", "split", "--model.encoder", "tresnet_m", "--model.norm", "iabn_sync", "--model.act", "ident", "--trainer.batch-size", "8", "--trainer.amp", "--trainer.patience", "25", "--optimizer.lr", "1e-3", "--scheduler.target", "cosine", "--in-channels", "3", "--aug.factor", "0.1", "--aug.factor-icl", "0.1", "--aug.fixed-angles", "--name", "X", "--method", "mib-cd"] + ["--comment", "a comment with words"]
    ns = parser.parse_args(argv)
    values = {k[4:]: v for k, v in vars(ns).items() if k.startswith("cfg:")}
    from cdseg.config.fields import iter_leaf_fields

    leaves = {leaf.path: leaf for leaf in iter_leaf_fields(TrainConfig)}
    parsed = {k: (v if isinstance(v, bool) else leaves[k].parse_text(v, source=k)) for k, v in values.items()}
    cfg = load_config(TrainConfig, cli=parsed, environ={})
    assert cfg.task.name == "6s" and cfg.task.step == 2 and cfg.task.filter_mode == "split"
    assert cfg.model.encoder == "tresnet_m" and cfg.model.norm == "iabn_sync"
    assert cfg.trainer.batch_size == 8 and cfg.trainer.amp and cfg.trainer.patience == 25
    assert cfg.optimizer.lr == 1e-3 and cfg.scheduler.target == "cosine" and cfg.in_channels == 3
    assert cfg.aug.factor == 0.1 and cfg.aug.factor_icl == 0.1 and cfg.aug.fixed_angles
    assert cfg.name == "X" and cfg.comment == "a comment with words" and cfg.kd.weight == 10.0


def test_paper_recipe_file_loads() -> None:
    from importlib import resources

    path = resources.files("cdseg.train").joinpath("recipes").joinpath("paper-6s-split.yaml")
    cfg = load_config(TrainConfig, config_file=str(path), cli={"method": "mib-cd"}, environ={})
    assert cfg.model.encoder == "tresnet_m" and cfg.trainer.amp and cfg.task.filter_mode == "split"


def test_train_help_lists_the_methods(capsys: pytest.CaptureFixture[str]) -> None:
    from cdseg.cli.main import main

    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--method" in out and "mib-cd" in out and "--trainer.amp-dtype" in out and "--prev-checkpoint" in out
