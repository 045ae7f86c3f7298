"""Feature distillation term `fd` (section `fd`): ILT's distillation of the encoder's output.

    L = lambda x 1/(B C H W) sum (f_new - f_old)^2

f: the last (deepest) encoder stage of the student and of the frozen teacher on the same images (Michieli &
Zanuttigh, "Incremental Learning Techniques for Semantic Segmentation", ICCV Workshops 2019, the
feature-space distillation L'_D; MiB's code `--method ILT`: --loss_de 100 on the backbone's output, with
--loss_kd 100 output distillation). It is 0 exactly when the two encoders agree on the batch.
"""

from __future__ import annotations

import torch
from pydantic import Field

from cdseg.config import Section
from cdseg.losses.term import StepContext, StepInfo, Term, TermSpec


class FDConfig(Section):
    """Distillation of the encoder output against the previous step's model (steps >= 1)."""

    weight: float = Field(default=0.0, ge=0.0, description="loss weight (ILT as MiB ran it: 100); 0 disables it")


def feature_distillation(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two feature maps of the same shape (float32)."""
    return (new.float() - old.float()).pow(2).mean()


class FDTerm(Term):
    """lambda x MSE of the deepest encoder stage against the teacher's."""

    name = "fd"
    needs = frozenset({"stages"})
    teacher_needs = frozenset({"stages"})

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """{"fd": weight x MSE}."""
        assert ctx.teacher is not None and ctx.teacher.stages and ctx.student.stages
        return {"fd": self.weight * feature_distillation(ctx.student.stages[-1], ctx.teacher.stages[-1])}


def _build(cfg: FDConfig, info: StepInfo) -> Term | None:
    return FDTerm(cfg.weight) if cfg.weight > 0 and info.has_teacher else None


TERM = TermSpec(section="fd", config=FDConfig, build=_build, order=12,
                description="distillation of the encoder output (ILT)")
