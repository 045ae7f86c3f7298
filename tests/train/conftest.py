"""Helpers for the trainer's tests: tiny configs on the shared prepared dataset, a step-0 checkpoint."""

from __future__ import annotations

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
