"""The checked-in pipelines/compiled/*.yaml are what `cdseg pipeline compile --all` produces today."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import SHIPPED_TASKS
from pipelines.compile import COMPILED_DIR, compile_task


@pytest.mark.parametrize("task", SHIPPED_TASKS)
def test_checked_in_yaml_is_fresh(tmp_path: Path, task: str) -> None:
    fresh = compile_task(task, tmp_path)
    stored = COMPILED_DIR / fresh.name
    assert stored.is_file(), f"{stored} is missing; run: cdseg pipeline compile --all"
    assert stored.read_text() == fresh.read_text(), (
        f"{stored} is stale (components, factory or TrainConfig defaults changed); run: cdseg pipeline compile --all")


def test_compiled_dir_holds_only_shipped_tasks() -> None:
    assert sorted(p.name for p in COMPILED_DIR.glob("*.yaml")) == sorted(f"{t}.yaml" for t in SHIPPED_TASKS)
