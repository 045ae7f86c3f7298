"""The method's training step: student, frozen teacher and loss terms -> a dict of named terms.

One object covers every method (seed-spec §5.4, §5.6); the recipe only changes weights and flags:

    ft     CE                                   uft    UCE
    mib    UCE + λkd·UKD                        mib-cd UCE(2B) + λkd·UKD + λaug·Linv_seg + λicl·Linv_kd
    ft-cd  UCE(2B) + λaug·Linv_seg + λicl·Linv_kd
    joint  CE on fully labelled images of every seen class (no teacher)

Efficiency of the contrastive (CD) step: the frozen teacher runs once, under no_grad, on x only;
x and g(x) go through the student in ONE forward of the concatenated 2B batch (the original ran
two forwards). Consequences, chosen deliberately: batch-norm statistics are computed over x and
g(x) together (a D4 copy of the same images, so the statistics barely move, and both halves are
normalised identically, which is what an invariance loss wants); running statistics are updated
once per iteration instead of twice; DDP sees one forward per backward (two forwards of a DDP module
before one backward are not allowed). `trainer.cd_single_forward false` restores the original's two
forwards (single process only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Tensor = torch.Tensor


class MethodStep(nn.Module):
    """Computes the loss terms of one iteration; `forward` returns {"loss": total, term: value, ...}.

    Reported terms: `seg` (CE / UCE, on the 2B batch with CD), `kd` (weighted output KD), `cd` (weighted
    sum of the contrastive terms) and, unweighted for monitoring, `cd_self`, `cd_old`. loss = seg + kd + cd.
    """

    teacher: nn.Module | None

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        seg_loss: Callable[[Tensor, Tensor], Tensor],
        kd_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        kd_weight: float = 0.0,
        aug: Any = None,
        seed: int = 0,
        single_forward: bool = True,
    ) -> None:
        super().__init__()
        self.student = student
        # kept out of the module tree: never in the optimizer, never DDP-wrapped, never in state_dict
        self.__dict__["teacher"] = teacher
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
        self.seg_loss, self.kd_loss = seg_loss, kd_loss
        self.kd_weight = kd_weight if teacher is not None and kd_loss is not None else 0.0
        self.aug = aug
        factor = float(getattr(aug, "factor", 0.0) or 0.0)
        factor_icl = float(getattr(aug, "factor_icl", 0.0) or 0.0) if teacher is not None else 0.0
        self.cd_module: nn.Module | None = None
        if factor > 0 or factor_icl > 0:
            from cdseg.losses import ContrastiveDistillation

            self.cd_module = ContrastiveDistillation(aug.model_copy(update={"factor_icl": factor_icl}))
        self.use_teacher_features = factor_icl > 0
        self.seed = seed
        self.single_forward = single_forward

    @property
    def needs_teacher_forward(self) -> bool:
        return self.teacher is not None and (self.kd_weight > 0 or self.use_teacher_features)

    def draw(self, iteration: int) -> tuple[Any, torch.Generator]:
        """The batch's transform g for `iteration`: a function of (seed, iteration), the same on every rank."""
        from cdseg.losses import sample_transform
        from cdseg.train.data import mix_seed

        gen = torch.Generator().manual_seed(mix_seed(self.seed, iteration, 0xD4))
        return sample_transform(self.aug, gen), gen

    def forward(self, x: Tensor, y: Tensor, iteration: int) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        q = f_old = None
        if self.needs_teacher_forward:
            with torch.no_grad():
                q, f_old = self.teacher(x)  # type: ignore[misc]
        if self.cd_module is None:
            z, _ = self.student(x)
            terms["seg"] = self.seg_loss(z, y)
        else:
            from cdseg.losses import transform_batch

            b = x.shape[0]
            g, gen = self.draw(iteration)
            xg, yg = transform_batch(g, x, y, self.aug, gen)
            if self.single_forward:
                z2, f2 = self.student(torch.cat([x, xg]))
                z, f, f_of_xg = z2[:b], f2[:b], f2[b:]
            else:
                z, f = self.student(x)
                z_g, f_of_xg = self.student(xg)
                z2 = torch.cat([z, z_g])
            assert yg is not None
            terms["seg"] = self.seg_loss(z2, torch.cat([y, yg]))
            cd = self.cd_module(f, f_of_xg, f_old if self.use_teacher_features else None, g)
            terms["cd"] = cd["cd"]
            terms.update({k: v.detach() for k, v in cd.items() if k != "cd"})
        if self.kd_weight > 0 and q is not None:
            terms["kd"] = self.kd_weight * self.kd_loss(z, q)  # type: ignore[misc]
        terms["loss"] = terms["seg"] + terms.get("kd", 0.0) + terms.get("cd", 0.0)
        return terms
