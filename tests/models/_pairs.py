"""Pairs of norm layers in the same state, for comparing inplace-abn with cdseg's ABN."""

from __future__ import annotations

import torch
from torch import nn


def same_random_state(ref: nn.Module, ours: nn.Module, channels: int, training: bool) -> None:
    """Give `ref` random affine parameters and running statistics, copy them into `ours`, set both modes."""
    with torch.no_grad():
        ref.weight.copy_(torch.randn(channels))
        ref.bias.copy_(torch.randn(channels))
        ref.running_mean.copy_(torch.randn(channels))
        ref.running_var.copy_(torch.rand(channels) + 0.5)
    ours.load_state_dict(ref.state_dict())
    ref.train(training)
    ours.train(training)
