"""Output distillation term `kd` (section `kd`) against the previous step's model (seed-spec 5.2).

    KD (LwF; Li & Hoiem, "Learning without Forgetting", ECCV 2016; MiB's code's plain KD):
        L = -1/|P| sum_p 1/K sum_{c<K} w_pc log softmax(z_p[:K])_c,     w = softmax(alpha * q)
    UKD (MiB; Cermelli et al., CVPR 2020): log p_bg := logsumexp_{c in {0} u new} z_c - logsumexp_c z_c

Both losses are cross-entropies H(w, p) between the old model's distribution w = softmax(alpha * q) over its
K outputs and the new model's (collapsed) distribution p, averaged over pixels and divided by K as MiB does.
A cross-entropy is not 0 when the models agree: its minimum over p is the entropy H(w)/K, reached iff p == w.
"""

from __future__ import annotations

import torch
from torch import nn

from cdseg.losses.config import KDConfig
from cdseg.losses.term import StepContext, StepInfo, Term, TermSpec


def _reduce(loss: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return loss.mean()
    mask = mask.to(loss.dtype)
    count = mask.sum()
    return (loss * mask).sum() / count if count > 0 else loss.sum() * 0.0


class UnbiasedKD(nn.Module):
    """MiB's unbiased distillation: the new model's background := background + every new class.

    log p_bg = logsumexp_{c in {0} u {K..C_t-1}} z_c - logsumexp z; log p_c = z_c - logsumexp z (0 < c < K);
    L = -mean_pixels (sum_{c<K} w_c log p_c) / K with w = softmax(alpha * q).
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, new_logits: torch.Tensor, old_logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of new logits [B, C_t, H, W] against old logits [B, K, H, W] (optional pixel mask [B, H, W])."""
        z = new_logits.float()
        k = old_logits.shape[1]
        if z.shape[1] < k:
            raise ValueError(f"new model has {z.shape[1]} outputs, fewer than the old model's {k}")
        w = torch.softmax(old_logits.float() * self.alpha, dim=1)
        den = torch.logsumexp(z, dim=1, keepdim=True)
        bg = torch.logsumexp(torch.cat([z[:, :1], z[:, k:]], dim=1), dim=1, keepdim=True)
        log_p = torch.cat([bg, z[:, 1:k]], dim=1) - den
        loss = -(w * log_p).sum(dim=1) / k
        return _reduce(loss, mask)


class KD(nn.Module):
    """Plain distillation over the first K new outputs: -mean_pixels mean_c w_c log softmax(z[:, :K])_c."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, new_logits: torch.Tensor, old_logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of new logits [B, C_t, H, W] against old logits [B, K, H, W]."""
        k = old_logits.shape[1]
        w = torch.softmax(old_logits.float() * self.alpha, dim=1)
        log_p = torch.log_softmax(new_logits.float()[:, :k], dim=1)
        loss = -(w * log_p).sum(dim=1) / k
        return _reduce(loss, mask)


def build_kd_loss(cfg: KDConfig) -> nn.Module | None:
    """The distillation loss (unweighted; multiply by `cfg.weight`), or None when `cfg.weight == 0`."""
    if cfg.weight == 0:
        return None
    return UnbiasedKD(cfg.alpha) if cfg.unbiased else KD(cfg.alpha)


class KDTerm(Term):
    """lambda_KD x (U)KD of the student's logits on x against the teacher's."""

    name = "kd"
    needs = frozenset({"logits"})
    teacher_needs = frozenset({"logits"})

    def __init__(self, loss: nn.Module, weight: float) -> None:
        super().__init__()
        self.loss, self.weight = loss, weight

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """{"kd": weight x KD}."""
        assert ctx.teacher is not None and ctx.student.logits is not None and ctx.teacher.logits is not None
        return {"kd": self.weight * self.loss(ctx.student.logits, ctx.teacher.logits)}


def _build(cfg: KDConfig, info: StepInfo) -> Term | None:
    loss = build_kd_loss(cfg)
    if loss is None or not info.has_teacher:
        return None
    return KDTerm(loss, float(cfg.weight))


TERM = TermSpec(section="kd", config=KDConfig, build=_build, order=10, step1_only=None,
                description="output distillation (LwF, ILT, MiB)")
