"""Segmentation models: timm encoder + residual UNet decoder + incremental classifier heads.

Public API (see docs/architecture.md): `ModelConfig`, `build_segmenter`, `IncrementalSegmenter`,
`init_new_head_mib`, `load_previous_into`, `predict_logits` (evaluation's logits-only call), `convert_sync` (CUDA/NCCL) and
`set_stats_reducer` (CPU/gloo) for synchronised norms; checkpoints in `cdseg.models.io`;
the D4 group in `cdseg.models.d4`.
"""

from cdseg.models.config import ModelConfig
from cdseg.models.norm import convert_sync, set_stats_reducer
from cdseg.models.segmenter import (
    IncrementalSegmenter,
    build_segmenter,
    init_new_head_mib,
    load_previous_into,
    predict_logits,
)

__all__ = [
    "IncrementalSegmenter",
    "ModelConfig",
    "build_segmenter",
    "convert_sync",
    "init_new_head_mib",
    "load_previous_into",
    "predict_logits",
    "set_stats_reducer",
]
