"""Pooled local distillation term `pod` (section `pod`): PLOP's Local POD over encoder stages, decoder and logits.

Douillard et al., "PLOP: Learning without Forgetting for Continual Semantic Segmentation", CVPR 2021, eq. 2-4.
For a feature map x [B, C, H, W], squared element-wise (x^2), and a scale s (default s in {1, 2, 4}), split
H x W into s x s regions R; each region gives its width-pooled and height-pooled profiles

    Phi_w(R) = 1/|R_w| sum_{w in R} x^2[:, :, h, w]   (C x |R_h| values)
    Phi_h(R) = 1/|R_h| sum_{h in R} x^2[:, :, h, w]   (C x |R_w| values)

and the embedding Phi(x) of one image is every region's profiles of every scale, concatenated. Per layer l

    L_l = 1/B sum_b || Phi(x_new,b) - Phi(x_old,b) ||_2

and the term, over the L layers (every encoder stage and the decoder output with weight lambda, the logits at
the decoder's resolution with weight lambda_logits; the student's logits with their new outputs summed into
the background so that they match the teacher's K outputs):

    L_pod = sqrt(C_t / C_new) x 1/L x (lambda sum_{l < L} L_l + lambda_logits L_logits)

with C_t the outputs of the step and C_new those added at it (PLOP's "pod schedule"). PLOP's code, method
PLOP: pod local, pod_factor 0.01, pod_logits with factor 0.0005 and extra channels summed, scales 1, 2, 4.
Where H or W is not a multiple of s the regions are floor(H/s) x floor(W/s) from the top left (PLOP's code
uses the width for both axes, i.e. assumes square maps). The term is 0 exactly when the two models' maps are
equal.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from cdseg.config import Section
from cdseg.losses.term import StepContext, StepInfo, Term, TermSpec


class PODConfig(Section):
    """PLOP's pooled local distillation against the previous step's model (steps >= 1)."""

    weight: float = Field(default=0.0, ge=0.0, description="weight of the encoder stages and the decoder output "
                          "(PLOP: 0.01); 0 with logits_weight 0 disables the term")
    logits_weight: float = Field(default=0.0, ge=0.0, description="weight of the logits at the decoder's "
                                 "resolution (PLOP: 0.0005)")
    scales: list[int] = Field(default_factory=lambda: [1, 2, 4], description="region grids s x s pooled per map")
    schedule: bool = Field(default=True, description="multiply by sqrt(outputs / new outputs) (PLOP's pod schedule)")


def local_pod_distance(new: torch.Tensor, old: torch.Tensor, scales: list[int]) -> torch.Tensor:
    """Per-image L2 distance [B] between the Local POD embeddings of two maps [B, C, H, W] (squared first)."""
    a, b = new.float().pow(2), old.float().pow(2)
    sq = a.new_zeros(a.shape[0])
    for s in scales:
        h, w = a.shape[-2] // s, a.shape[-1] // s
        if h == 0 or w == 0:
            continue
        shape = (a.shape[0], a.shape[1], s, h, s, w)
        ra = a[..., : s * h, : s * w].reshape(shape)
        rb = b[..., : s * h, : s * w].reshape(shape)
        d = ra - rb
        sq = sq + d.mean(dim=5).pow(2).sum(dim=(1, 2, 3, 4)) + d.mean(dim=3).pow(2).sum(dim=(1, 2, 3, 4))
    return sq.sqrt()


def collapse_new(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The student's logits [B, C, ...] as K outputs: background + every new output summed, then old 1..K-1."""
    return torch.cat([logits[:, :1] + logits[:, k:].sum(dim=1, keepdim=True), logits[:, 1:k]], dim=1)


class PODTerm(Term):
    """PLOP's Local POD over the encoder stages, the decoder output and the small logits."""

    name = "pod"
    needs = frozenset({"stages", "decoded", "head_logits"})
    teacher_needs = frozenset({"stages", "decoded", "head_logits"})

    def __init__(self, cfg: PODConfig, info: StepInfo) -> None:
        super().__init__()
        self.weight, self.logits_weight, self.scales = cfg.weight, cfg.logits_weight, list(cfg.scales)
        self.factor = math.sqrt(info.num_outputs / max(info.new_classes, 1)) if cfg.schedule else 1.0

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """{"pod": L_pod}."""
        s, t = ctx.student, ctx.teacher
        assert t is not None and s.stages and t.stages and s.decoded is not None and t.decoded is not None
        assert s.head_logits is not None and t.head_logits is not None
        pairs = [*zip(s.stages, t.stages, strict=True), (s.decoded, t.decoded)]
        total = s.decoded.new_zeros((), dtype=torch.float32)
        for new, old in pairs:
            total = total + self.weight * local_pod_distance(new, old, self.scales).mean()
        k = t.head_logits.shape[1]
        logits = local_pod_distance(collapse_new(s.head_logits, k), t.head_logits, self.scales).mean()
        total = total + self.logits_weight * logits
        return {"pod": self.factor * total / (len(pairs) + 1)}


def _build(cfg: PODConfig, info: StepInfo) -> Term | None:
    if not info.has_teacher or (cfg.weight <= 0 and cfg.logits_weight <= 0):
        return None
    return PODTerm(cfg, info)


TERM = TermSpec(section="pod", config=PODConfig, build=_build, order=30,
                description="pooled local distillation of encoder stages, decoder and logits (PLOP)")
