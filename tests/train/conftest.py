"""Helpers for the trainer's tests: tiny configs on the shared prepared dataset, a step-0 checkpoint."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from train._util import tiny_cfg

torch.set_num_threads(1)

@pytest.fixture(scope="session")
def step0_run(prepared_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding a trained step 0 of 222a (method mib, tiny)."""
    from cdseg.train import run_train

    out = tmp_path_factory.mktemp("run0") / "run"
    run_train(tiny_cfg(prepared_dataset, out, method="mib", task__step=0))
    return out


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No torchrun variables leak into a single-process test; handlers `cdseg` CLI runs install are removed
    afterwards (they write to the test's captured stderr, closed once the test ends)."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cdseg", False):
            root.removeHandler(handler)
