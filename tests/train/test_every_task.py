"""Every method preset runs every step of every shipped task on CPU, each step from the previous one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdseg.data.isprs import POTSDAM
from cdseg.tasks import get_task as task_of
from cdseg.train import run_train
from cdseg.train.config import METHODS
from train._util import tiny_cfg

pytestmark = pytest.mark.usefixtures("clean_env")

#: the default tier runs offline and 222a (the demo's task) for the FAST methods; 321 and 6s (6 steps) and the
#: other methods run with `pytest -m slow` (tests/train/test_methods.py chains a few of those in the default tier)
SHIPPED_TASKS = ("offline", "222a", pytest.param("321", marks=pytest.mark.slow), pytest.param("6s", marks=pytest.mark.slow))
FAST = ("ft", "uft", "mib", "mib-cd", "ft-cd", "joint")


def get_task(name: str):
    return task_of(name, POTSDAM.manifest_fields())


@pytest.mark.parametrize("task", SHIPPED_TASKS)
@pytest.mark.parametrize("method", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow) for m in METHODS])
def test_every_step_of_every_task(task: str, method: str, prepared_dataset: Path, tmp_path: Path) -> None:
    steps = get_task(task).num_steps
    out = tmp_path / "run"
    for step in range(steps):
        cfg = tiny_cfg(prepared_dataset, out, method=method, task__name=task, task__step=step, trainer__epochs=1,
                       trainer__limit_batches=1, trainer__limit_val_batches=1)
        card = json.loads((Path(run_train(cfg)) / "model.json").read_text())
        assert (card["task"], card["step"], card["method"]) == (task, step, method)
        assert card["class_names"][1:] == [c for s in get_task(task).steps[: step + 1] for c in s]
