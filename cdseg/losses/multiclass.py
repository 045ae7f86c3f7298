"""Multi-class sigmoid distillation term `mcd` (section `mcd`): LwF-MC, the distillation of iCaRL.

    L = lambda / |P| sum_p sum_{c<K} BCE(sigmoid(z_pc), sigmoid(q_pc))
      = -lambda / |P| sum_p sum_{c<K} [s(q_pc) log s(z_pc) + (1 - s(q_pc)) log(1 - s(z_pc))]

z: the student's logits, q: the frozen teacher's (its K outputs), s the logistic function. Each old output is
distilled as an independent binary problem (Rebuffi et al., "iCaRL: Incremental Classifier and Representation
Learning", CVPR 2017; as an LwF variant: Li & Hoiem, ECCV 2016). MiB's code runs it with the per-class sigmoid
segmentation loss (`ce.kind bce`) and weight 10 (`--method LWF-MC`: icarl_importance 10, the BCE averaged over
the K old outputs then multiplied by K, i.e. summed over them as here). Like every cross-entropy it is not 0
when z == q (its minimum over z is the binary entropy of s(q), reached exactly there: the gradient vanishes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from cdseg.config import Section
from cdseg.losses.term import StepContext, StepInfo, Term, TermSpec


class MCDConfig(Section):
    """Multi-class sigmoid distillation (LwF-MC) against the previous step's model (steps >= 1)."""

    weight: float = Field(default=0.0, ge=0.0, description="loss weight (MiB's LwF-MC: 10); 0 disables it")


def multiclass_distillation(new_logits: torch.Tensor, old_logits: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of sum_{c<K} BCE(sigmoid(z_c), sigmoid(q_c)); z [B, C, H, W], q [B, K, H, W]."""
    k = old_logits.shape[1]
    z = new_logits.float()[:, :k]
    target = torch.sigmoid(old_logits.float())
    return F.binary_cross_entropy_with_logits(z, target, reduction="none").sum(dim=1).mean()


class MCDTerm(Term):
    """lambda x multi-class sigmoid distillation of the old outputs."""

    name = "mcd"
    needs = frozenset({"logits"})
    teacher_needs = frozenset({"logits"})

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """{"mcd": weight x L}."""
        assert ctx.teacher is not None and ctx.teacher.logits is not None and ctx.student.logits is not None
        return {"mcd": self.weight * multiclass_distillation(ctx.student.logits, ctx.teacher.logits)}


def _build(cfg: MCDConfig, info: StepInfo) -> Term | None:
    return MCDTerm(cfg.weight) if cfg.weight > 0 and info.has_teacher else None


TERM = TermSpec(section="mcd", config=MCDConfig, build=_build, order=11,
                description="multi-class sigmoid distillation of the old outputs (LwF-MC)")
