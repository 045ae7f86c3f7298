"""Whole-scene evaluation: sliding-window inference with blending, optional D4 TTA, one confusion matrix,
per-class / old / new / all scores, and the outputs (metrics.json, Markdown, PNGs, GeoTIFFs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cdseg.evaluate.config import TestConfig

__all__ = ["run_test"]


def run_test(cfg: TestConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on whole scenes; returns the content of metrics.json."""
    from cdseg.evaluate.run import run_test as _run

    return _run(cfg)
