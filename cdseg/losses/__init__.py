"""Losses: (unbiased) cross-entropy, (unbiased) output distillation, contrastive distillation.

Public API: `CEConfig`, `KDConfig`, `AugConfig`; `build_seg_loss(ce_cfg, old_classes)`, `build_kd_loss(kd_cfg)`;
`CrossEntropy`, `UnbiasedCrossEntropy`, `KD`, `UnbiasedKD`; `ContrastiveDistillation(aug_cfg)`,
`contrastive_terms`, `sample_transform`, `transform_batch`.
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
