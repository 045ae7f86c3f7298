"""Methods built from terms, end to end: a few chained 0 -> 1 -> 2 in the default tier (every method and task: the
`slow` cells of test_every_task.py); the method list comes from the recipes; recipes agree with their terms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cdseg.config import load_config
from cdseg.losses.registry import build_terms
from cdseg.losses.term import StepInfo
from cdseg.train import run_train
from cdseg.train.config import METHODS, TrainConfig
from cdseg.train.methods import recipes
from train._util import tiny_cfg

PAPER = ("ft", "uft", "lwf", "lwf-mc", "ilt", "ewc", "pi", "rw", "mib", "mib-cd", "ft-cd", "plop", "plop-cd", "joint")


def test_the_method_list_is_the_recipes() -> None:
    assert set(METHODS) == set(recipes())
    assert set(PAPER) <= set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_recipe_declares_what_its_terms_need(method: str) -> None:
    """`teacher: true` in a recipe iff one of its terms reads the frozen previous model at step >= 1."""
    cfg = load_config(TrainConfig, cli={"method": method}, environ={})
    terms = build_terms(cfg, StepInfo(step=1, old_classes=3, num_outputs=5, has_teacher=True))
    needs = any(t.teacher_needs or t.needs_teacher_params for t in terms)
    assert recipes()[method].teacher == needs
    assert terms[0].name == "seg" or terms[0].phase == "targets"


def test_train_help_lists_every_method(capsys: pytest.CaptureFixture[str]) -> None:
    from cdseg.cli.main import main

    try:
        main(["train", "--help"])
    except SystemExit as exc:
        assert not exc.code
    text = " ".join(capsys.readouterr().out.split())
    for m in PAPER:
        assert m in text


@pytest.mark.parametrize("method", ["plop-cd", "rw"])
def test_chain_0_1_2(method: str, prepared_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    for step in (0, 1, 2):
        cfg = tiny_cfg(prepared_dataset, out, method=method, task__step=step, trainer__epochs=1,
                       trainer__limit_batches=2, trainer__limit_val_batches=1)
        card = json.loads((Path(run_train(cfg)) / "model.json").read_text())
        assert (card["step"], card["method"]) == (step, method)
        history = json.loads((out / f"step-{step}" / "history.json").read_text())
        assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)
        if method == "rw":  # the importance travels with the model, as safetensors listed in the card
            assert "terms" in card["extra_files"] and (out / f"step-{step}" / "model" / "terms.safetensors").is_file()
        if method == "plop-cd" and step:
            assert {"train_pod", "train_cd", "train_pseudo_kept"} <= set(history[0])


@pytest.mark.parametrize("from_step", [0, 1, 2])
def test_cd_from_step_leaves_earlier_steps_without_the_terms(from_step: int) -> None:
    """`aug.from_step=k`: no contrastive term (and no transformed copy) before step k, both terms from it on."""
    cfg = load_config(TrainConfig, cli={"method": "mib-cd", "aug.from_step": from_step}, environ={})
    for step in range(3):
        info = StepInfo(step=step, old_classes=3 if step else 0, num_outputs=5, has_teacher=step > 0)
        cd = [t for t in build_terms(cfg, info) if t.name == "cd"]
        assert bool(cd) == (step >= from_step), step
        if cd:
            assert cd[0].needs_transform and bool(cd[0].teacher_needs) == (step > 0)
