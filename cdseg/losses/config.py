"""Loss settings: segmentation cross-entropy, output distillation, contrastive distillation.

Defaults are neutral (plain CE, no KD, no CD). Method recipes (MiB, MiB-CD, FT, ...) set them as presets,
*below* anything the user typed, so an explicit `--kd.weight 5` is never overridden (seed bug 6).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field

from cdseg.config import Section


class CEConfig(Section):
    """Segmentation loss."""

    kind: Literal["ce", "bce"] = Field(
        default="ce", description="ce: softmax cross-entropy; bce: per-class sigmoid cross-entropy (iCaRL, LwF-MC)")
    unbiased: bool = Field(
        default=False,
        description="MiB's unbiased cross-entropy at steps >= 1 (old classes' probability counted as background)",
    )


class KDConfig(Section):
    """Output knowledge distillation against the previous step's model (steps >= 1)."""

    unbiased: bool = Field(default=False, description="MiB's unbiased distillation (new classes' probability counted as background)")
    weight: float = Field(
        default=0.0,
        ge=0.0,
        validation_alias=AliasChoices("weight", "decoder_factor"),
        description="loss weight lambda_KD (the original's kd.decoder_factor; MiB uses 10); 0 disables distillation",
    )
    alpha: float = Field(default=1.0, gt=0.0, description="scale of the old logits before their softmax (inverse temperature)")


class AugConfig(Section):
    """Contrastive distillation: features must commute with a random flip/rotation of the tile."""

    factor: float = Field(
        default=0.0, ge=0.0, description="weight of the self term MSE(g(f_new(x)), f_new(g(x))) (paper: 0.1); >0 also trains on g(x)"
    )
    factor_icl: float = Field(
        default=0.0, ge=0.0, description="weight of the old-model term MSE(f_new(g(x)), g(f_old(x))) at steps >= 1 (paper: 0.1)"
    )
    flip: bool = Field(default=True, description="include the flipped elements (all 8 of D4); false: the 4 rotations only")
    fixed_angles: bool = Field(
        default=True,
        description="rotate by multiples of 90 degrees (exact); false: any angle (bilinear, corners outside the tile "
        "ignored), an approximation",
    )
    color: bool = Field(default=False, description="also jitter brightness and contrast (+-10%) of the transformed copy")
    from_step: int = Field(
        default=0, ge=0, description="first step at which the terms act (0: every step, as the paper; 1: step 0 trains "
        "without the self term, like MiB's step 0, which the experiment then shares with mib)",
    )

    @property
    def apply(self) -> bool:
        """Whether the transformed copy of the batch is used at all."""
        return self.factor > 0 or self.factor_icl > 0

    def acts_at(self, step: int) -> bool:
        """Whether the terms act at `step` (at step 0 only the self term can: there is no old model)."""
        return step >= self.from_step and (self.factor > 0 or (step > 0 and self.factor_icl > 0))
