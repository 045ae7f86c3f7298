"""Tiny models for fast CPU tests: timm's `test_resnet` (0.4 M parameters), random init."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from cdseg.models import IncrementalSegmenter, ModelConfig, build_segmenter

STATS = {b: {"mean": 0.25, "std": 0.5} for b in ("R", "G", "B", "IR", "DSM")}


def _tiny_cfg(**kw: object) -> ModelConfig:
    base: dict[str, object] = {"encoder": "test_resnet", "pretrained": False, "norm": "bn"}
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture
def stats() -> dict:
    return STATS


@pytest.fixture
def tiny_cfg() -> Callable[..., ModelConfig]:
    return _tiny_cfg


@pytest.fixture
def tiny_model() -> Callable[..., IncrementalSegmenter]:
    def make(heads=(3, 2), bands=("R", "G", "B"), seed: int = 0, **kw: object) -> IncrementalSegmenter:
        torch.manual_seed(seed)
        return build_segmenter(_tiny_cfg(**kw), list(heads), list(bands), STATS)

    return make
