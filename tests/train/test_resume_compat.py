"""Resume compatibility: every option of the resolved config counts, except an explicit list that may change."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdseg.config import load_config
from cdseg.errors import CheckpointError
from cdseg.losses.registry import term_specs
from cdseg.train.checkpoint import RESUME_MAY_CHANGE, check_resume_config, resume_fingerprint
from cdseg.train.config import TrainConfig


def _fp(**cli: object) -> dict:
    cfg = load_config(TrainConfig, cli={k.replace("__", "."): v for k, v in cli.items()}, environ={})
    return resume_fingerprint(cfg.model_dump(mode="json"))


def test_every_term_section_is_covered_by_default() -> None:
    fp = _fp()
    for spec in term_specs():
        assert any(k.startswith(spec.section + ".") for k in fp), spec.section


def test_an_option_added_later_is_covered_without_touching_the_list() -> None:
    dumped = load_config(TrainConfig, environ={}).model_dump(mode="json")
    dumped["newterm"] = {"weight": 1.0}
    assert resume_fingerprint(dumped)["newterm.weight"] == 1.0


@pytest.mark.parametrize("change", [{"pod__weight": 0.5}, {"reg__weight": 3.0}, {"kd__alpha": 2.0},
                                    {"trainer__batch_size": 3}, {"ce__kind": "bce"}, {"method": "plop"},
                                    {"pseudo__threshold": 0.2}, {"trainer__init_balanced": False}])
def test_a_changed_option_refuses_the_resume(change: dict, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="resume state"):
        check_resume_config(_fp(), _fp(**change), tmp_path)


@pytest.mark.parametrize("change", [{"trainer__epochs": 7}, {"trainer__max_iters": 9}, {"trainer__log_every": 3},
                                    {"trainer__max_iters_by_step": {2: 9}},
                                    {"output": "elsewhere"}, {"data__workers": 0}, {"metrics__port": 9999}])
def test_the_listed_options_may_change(change: dict, tmp_path: Path) -> None:
    check_resume_config(_fp(), _fp(**change), tmp_path)


def test_the_list_names_real_options() -> None:
    keys = set(_flat_keys(load_config(TrainConfig, environ={}).model_dump(mode="json")))
    for entry in RESUME_MAY_CHANGE:
        assert any(k == entry or k.startswith(entry + ".") for k in keys), entry


def _flat_keys(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out += _flat_keys(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def test_a_state_from_before_an_option_existed_resumes_while_the_option_keeps_its_default(tmp_path: Path) -> None:
    defaults = resume_fingerprint(TrainConfig.model_validate({}).model_dump(mode="json"))
    older = {k: v for k, v in _fp().items() if not k.startswith("pod.")}  # written before `pod` existed
    check_resume_config(older, _fp(), tmp_path, defaults)
    with pytest.raises(CheckpointError, match="pod.weight"):
        check_resume_config(older, _fp(pod__weight=0.5), tmp_path, defaults)
