"""Tiny models for the loss tests that run through a real segmenter."""

from __future__ import annotations

import pytest
import torch

from cdseg.models import ModelConfig, build_segmenter


@pytest.fixture
def tiny_model_factory():
    def make(heads=(2,), seed: int = 0):
        torch.manual_seed(seed)
        cfg = ModelConfig(encoder="test_resnet", pretrained=False, norm="iabn_sync")
        stats = {b: {"mean": 0.5, "std": 0.25} for b in ("R", "G", "B")}
        return build_segmenter(cfg, list(heads), ["R", "G", "B"], stats)

    return make
