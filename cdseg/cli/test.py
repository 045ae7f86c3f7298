"""`cdseg test`: evaluate a checkpoint on whole test scenes (sliding window, optional D4 TTA)."""

from __future__ import annotations

import os

from cdseg.cli.command import Command
from cdseg.evaluate.config import TestConfig


def _run(cfg: TestConfig) -> int:
    from cdseg.evaluate import run_test
    from cdseg.train.distributed import destroy

    try:
        metrics = run_test(cfg)
    finally:
        destroy()  # leave the process group run_test joined under torchrun (no-op in one process)
    if os.environ.get("RANK", "0") != "0":
        return 0  # rank 0 reports
    means = metrics["mean"]
    cells = ", ".join(f"{g} {_pct(means[g]['miou'])}" for g in ("old", "new", "all"))
    print(f"task {metrics['task']} step {metrics['step']}: mIoU % {cells} (background excluded)")
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


COMMAND = Command(
    name="test",
    help="evaluate a checkpoint on whole test scenes (old/new/all classes)",
    config=TestConfig,
    run=_run,
    description="Evaluate a checkpoint on whole scenes of a prepared dataset: sliding-window inference with "
    "centre-weighted blending, optional 8x D4 test-time augmentation, one confusion matrix; writes metrics.json, "
    "metrics.md, confusion.png, previews/*.png and predictions/*.tif (georeferenced) to <output>/step-<k>/eval/.",
    epilog="Background is excluded from the mIoU/mF1 averages and reported per class.\n"
    "An output folder holding a different evaluation is refused; pass --overwrite or another --output.",
)
