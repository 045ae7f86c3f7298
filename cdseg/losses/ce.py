"""Segmentation losses: cross-entropy and MiB's unbiased cross-entropy (seed-spec 5.1).

Both are computed in float32 (safe under AMP), average over non-ignored pixels, and return 0 (still attached
to the graph) for a batch with no labelled pixel instead of torch's NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cdseg.losses.config import CEConfig

IGNORE_INDEX = 255


def _masked_mean(nll: torch.Tensor, valid: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    count = valid.sum()
    if count == 0:
        return logits.sum() * 0.0
    return (nll * valid).sum() / count


class CrossEntropy(nn.Module):
    """Plain cross-entropy over all outputs, pixels labelled `ignore_index` left out."""

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean CE of logits [B, C, H, W] against target [B, H, W]."""
        z = logits.float()
        valid = target != self.ignore_index
        nll = F.cross_entropy(z, target.masked_fill(~valid, 0).long(), reduction="none")
        return _masked_mean(nll, valid, z)


class UnbiasedCrossEntropy(nn.Module):
    """MiB's unbiased CE: a background pixel may be any old class, so p(bg) := sum of p over old outputs.

    log p~_bg = logsumexp_{c<K} z_c - logsumexp_c z_c; log p~_c = z_c - logsumexp z for new c >= K;
    targets < K count as background. K = `old_classes` (old outputs, background included). With K = 1 it is
    exactly the plain CE.
    """

    def __init__(self, old_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if old_classes < 1:
            raise ValueError(f"old_classes={old_classes} must be >= 1 (the background is always old)")
        self.old_classes = old_classes
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean unbiased CE of logits [B, C_t, H, W] against target [B, H, W]."""
        z = logits.float()
        k = self.old_classes
        valid = target != self.ignore_index
        tgt = target.masked_fill(~valid, 0).long()
        den = torch.logsumexp(z, dim=1)
        old = torch.logsumexp(z[:, :k], dim=1)
        picked = z.gather(1, tgt.unsqueeze(1)).squeeze(1)
        log_p = torch.where(tgt < k, old, picked) - den
        return _masked_mean(-log_p, valid, z)


def build_seg_loss(cfg: CEConfig, old_classes: int, ignore_index: int = IGNORE_INDEX) -> nn.Module:
    """The segmentation loss for a step with `old_classes` old outputs (0 at step 0)."""
    if cfg.unbiased and old_classes >= 1:
        return UnbiasedCrossEntropy(old_classes, ignore_index)
    return CrossEntropy(ignore_index)
