"""Segmentation term `seg` (section `ce`): cross-entropy, MiB's unbiased cross-entropy (seed-spec 5.1), or the
per-class sigmoid cross-entropy of iCaRL / LwF-MC.

    CE:   L = -1/|P| sum_{p in P} w_p log softmax(z_p)_{y_p}                       (P: pixels not ignored)
    UCE:  as CE, with log p_bg := logsumexp_{c<K} z_c - logsumexp_c z_c for targets < K
          (Cermelli et al., "Modeling the Background for Incremental Learning in Semantic Segmentation", CVPR 2020)
    BCE:  L = 1/|P| sum_{p in P} sum_c BCE(sigmoid(z_pc), [y_p == c])
          (Rebuffi et al., "iCaRL", CVPR 2017, as MiB's LwF-MC runs it: every output an independent sigmoid)

w_p is 1 unless a targets-phase term (PLOP's pseudo-labels) sets per-pixel weights. All are computed in float32
(safe under AMP), average over non-ignored pixels, and return 0 (still attached to the graph) for a batch with no
labelled pixel instead of torch's NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cdseg.losses.config import CEConfig
from cdseg.losses.term import StepContext, StepInfo, Term, TermSpec

IGNORE_INDEX = 255


def _masked_mean(nll: torch.Tensor, valid: torch.Tensor, logits: torch.Tensor,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    count = valid.sum()
    if count == 0:
        return logits.sum() * 0.0
    if weight is None:
        return (nll * valid).sum() / count
    return (nll * valid * weight.float()).sum() / count


class CrossEntropy(nn.Module):
    """Plain cross-entropy over all outputs, pixels labelled `ignore_index` left out."""

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Mean CE of logits [B, C, H, W] against target [B, H, W] (optional pixel weights [B, H, W])."""
        z = logits.float()
        valid = target != self.ignore_index
        nll = F.cross_entropy(z, target.masked_fill(~valid, 0).long(), reduction="none")
        return _masked_mean(nll, valid, z, weight)


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

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Mean unbiased CE of logits [B, C_t, H, W] against target [B, H, W]."""
        z = logits.float()
        k = self.old_classes
        valid = target != self.ignore_index
        tgt = target.masked_fill(~valid, 0).long()
        den = torch.logsumexp(z, dim=1)
        old = torch.logsumexp(z[:, :k], dim=1)
        picked = z.gather(1, tgt.unsqueeze(1)).squeeze(1)
        log_p = torch.where(tgt < k, old, picked) - den
        return _masked_mean(-log_p, valid, z, weight)


class BinaryCrossEntropy(nn.Module):
    """Per-class sigmoid cross-entropy against one-hot targets, summed over classes, mean over labelled pixels."""

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over labelled pixels of sum_c BCE(z_c, [y == c]) for logits [B, C, H, W], target [B, H, W]."""
        z = logits.float()
        valid = target != self.ignore_index
        onehot = F.one_hot(target.masked_fill(~valid, 0).long(), z.shape[1]).permute(0, 3, 1, 2).to(z.dtype)
        nll = F.binary_cross_entropy_with_logits(z, onehot, reduction="none").sum(dim=1)
        return _masked_mean(nll, valid, z, weight)


def build_seg_loss(cfg: CEConfig, old_classes: int, ignore_index: int = IGNORE_INDEX) -> nn.Module:
    """The segmentation loss for a step with `old_classes` old outputs (0 at step 0)."""
    if cfg.kind == "bce":
        return BinaryCrossEntropy(ignore_index)
    if cfg.unbiased and old_classes >= 1:
        return UnbiasedCrossEntropy(old_classes, ignore_index)
    return CrossEntropy(ignore_index)


class SegTerm(Term):
    """The segmentation loss on the student's logits (on x and g(x) together when a transformed copy exists)."""

    name = "seg"
    needs = frozenset({"logits"})

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """{"seg": L_seg}."""
        if ctx.student_g is not None:
            assert ctx.student_all is not None and ctx.target_g is not None
            logits, target = ctx.student_all.logits, torch.cat([ctx.target, ctx.target_g])
            weight = None
            if ctx.pixel_weight is not None:
                assert ctx.pixel_weight_g is not None
                weight = torch.cat([ctx.pixel_weight, ctx.pixel_weight_g])
        else:
            logits, target, weight = ctx.student.logits, ctx.target, ctx.pixel_weight
        assert logits is not None
        if weight is None:
            return {"seg": self.loss(logits, target)}
        return {"seg": self.loss(logits, target, weight)}


def _build(cfg: CEConfig, info: StepInfo) -> Term:
    return SegTerm(build_seg_loss(cfg, info.old_classes))


TERM = TermSpec(section="ce", config=CEConfig, build=_build, order=0, step1_only=("unbiased",),
                description="segmentation loss (always on)")
