"""Losses, one term per module: segmentation (`ce`: CE, UCE, BCE), output distillation (`kd`), LwF-MC's sigmoid
distillation (`multiclass`), ILT's feature distillation (`feature`), contrastive distillation (`contrastive`),
PLOP's Local POD (`pod`) and pseudo-labels (`pseudo`), EWC / PI / RW (`importance`).

Each term module defines `TERM` (a `cdseg.losses.term.TermSpec`: config section, builder); `cdseg.losses.registry`
finds them by listing this package. Public API: `CEConfig`, `KDConfig`, `AugConfig`; `build_seg_loss(ce_cfg,
old_classes)`, `build_kd_loss(kd_cfg)`; `CrossEntropy`, `UnbiasedCrossEntropy`, `KD`, `UnbiasedKD`;
`ContrastiveDistillation(aug_cfg)`, `contrastive_terms`, `sample_transform`, `transform_batch`; the seam in
`cdseg.losses.term` (`Term`, `TermSpec`, `StepContext`, `StepInfo`) and `cdseg.losses.registry`.
"""

from cdseg.losses.ce import IGNORE_INDEX, CrossEntropy, UnbiasedCrossEntropy, build_seg_loss
from cdseg.losses.config import AugConfig, CEConfig, KDConfig
from cdseg.losses.contrastive import (
    ContrastiveDistillation,
    FreeRotation,
    contrastive_terms,
    sample_transform,
    transform_batch,
)
from cdseg.losses.kd import KD, UnbiasedKD, build_kd_loss

__all__ = [
    "IGNORE_INDEX",
    "KD",
    "AugConfig",
    "CEConfig",
    "ContrastiveDistillation",
    "CrossEntropy",
    "FreeRotation",
    "KDConfig",
    "UnbiasedCrossEntropy",
    "UnbiasedKD",
    "build_kd_loss",
    "build_seg_loss",
    "contrastive_terms",
    "sample_transform",
    "transform_batch",
]
