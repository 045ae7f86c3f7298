"""Training of one incremental step: config, method step, loop, checkpoints, distributed glue.

`run_train(cfg)` is the entry point (imported lazily so that `cdseg.train.config` stays light).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cdseg.train.config import TrainConfig

__all__ = ["run_train"]


def run_train(cfg: TrainConfig) -> str:
    """Train one incremental step and return the URI of its final model folder."""
    from cdseg.train.run import run_train as _run

    return _run(cfg)


