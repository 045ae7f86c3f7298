"""Pseudo-labelling term `pseudo` (section `pseudo`): PLOP's entropy-based pseudo-labels of the background.

Douillard et al., "PLOP: Learning without Forgetting for Continual Semantic Segmentation", CVPR 2021, sec. 3.2.
At step t >= 1 a pixel labelled background (label < K: the current labels know only the new classes) takes the
old model's prediction c* = argmax_c q_c when the old model is confident enough, and is ignored otherwise:

    u = H(softmax(q)) / log K                      normalised entropy in [0, 1]
    y~ = c*   if y < K and u < tau_{c*}
    y~ = 255  if y < K and u >= tau_{c*}            (left out of the loss)
    y~ = y    otherwise                            (labelled new classes are never touched)

tau_c = max(median of u over the training pixels labelled background that the old model assigns to c,
tau_min) is measured once before the step (a histogram of 100 bins, the median interpolated in its bin).
With `adaptive` the segmentation loss of image b is multiplied by nu_b = |{background pixels of b that got a
pseudo-label}| / |{background pixels of b}| (PLOP's "classif_adaptive_factor"; 1 for an image without
background). PLOP's code, method PLOP: pseudo entropy, threshold 0.001, classif_adaptive_factor.

Deliberate differences from PLOP's code: u is H / log K (its code divides a mean over classes by log of the
class count twice, so its 0.001 floor means another thing); the median is the histogram's exact median (its
running sum adds bin positions instead of counts); an image without background pixels gets nu = 1, not NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from pydantic import Field

from cdseg.config import Section
from cdseg.losses.ce import IGNORE_INDEX
from cdseg.losses.term import StepContext, StepInfo, Term, TermSpec
from cdseg.models.segmenter import SegOutputs

BINS = 100


class PseudoConfig(Section):
    """PLOP's pseudo-labels of background pixels from the previous step's model (steps >= 1)."""

    enabled: bool = Field(default=False, description="replace background labels by confident old predictions")
    threshold: float = Field(default=0.001, ge=0.0, le=1.0, description="floor tau_min of the per-class thresholds "
                             "on the normalised entropy (PLOP: 0.001)")
    adaptive: bool = Field(default=True, description="weight each image's segmentation loss by the share of its "
                           "background pixels that got a pseudo-label (PLOP's classif_adaptive_factor)")
    calibration_batches: int = Field(default=0, ge=0, description="training batches the per-class medians are "
                                     "measured on before the step (0: one whole epoch)")


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(q)) / log K per pixel, [B, H, W] in [0, 1], for logits q [B, K, H, W]."""
    logp = torch.log_softmax(logits.float(), dim=1)
    h = -(logp.exp() * logp).sum(dim=1)
    k = logits.shape[1]
    return h / math.log(k) if k > 1 else torch.zeros_like(h)


def entropy_histogram(old_logits: torch.Tensor, target: torch.Tensor, old_classes: int) -> torch.Tensor:
    """Counts [K, BINS] of the normalised entropy of background pixels (target < K), per predicted old class."""
    k = old_logits.shape[1]
    bg = target < old_classes
    u = normalised_entropy(old_logits)[bg]
    pred = old_logits.argmax(dim=1)[bg]
    bins = (u * BINS).long().clamp(0, BINS - 1)
    hist = torch.zeros(k * BINS, dtype=torch.float64, device=old_logits.device)
    hist.index_add_(0, pred * BINS + bins, torch.ones_like(u, dtype=torch.float64))
    return hist.view(k, BINS)


def histogram_medians(hist: torch.Tensor, floor: float) -> torch.Tensor:
    """Per-class median of a [K, BINS] histogram over [0, 1] (linear within the bin), at least `floor`;
    a class with no pixel gets `floor`."""
    out = torch.full((hist.shape[0],), float(floor), dtype=torch.float32)
    for c in range(hist.shape[0]):
        counts = hist[c].double()
        total = float(counts.sum())
        if total <= 0:
            continue
        cum = torch.cumsum(counts, 0)
        i = int(torch.searchsorted(cum, torch.tensor(total / 2, dtype=cum.dtype)).item())
        i = min(i, hist.shape[1] - 1)
        before = float(cum[i - 1]) if i > 0 else 0.0
        inside = float(counts[i])
        frac = (total / 2 - before) / inside if inside > 0 else 0.0
        out[c] = max((i + frac) / hist.shape[1], floor)
    return out


def pseudo_label(target: torch.Tensor, old_logits: torch.Tensor, thresholds: torch.Tensor,
                 old_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(new target, background mask, mask of background pixels that got a pseudo-label)."""
    bg = target < old_classes
    pred = old_logits.argmax(dim=1)
    confident = normalised_entropy(old_logits) < thresholds.to(old_logits.device)[pred]
    kept = bg & confident
    out = torch.where(kept, pred.to(target.dtype), target)
    out = torch.where(bg & ~confident, torch.full_like(target, IGNORE_INDEX), out)
    return out, bg, kept


class PseudoTerm(Term):
    """Rewrites the batch's targets (and per-image weights) before the segmentation term reads them."""

    name = "pseudo"
    phase = "targets"
    thresholds: torch.Tensor
    calibrated: torch.Tensor
    needs = frozenset({"logits"})
    teacher_needs = frozenset({"logits"})

    def __init__(self, cfg: PseudoConfig, info: StepInfo) -> None:
        super().__init__()
        self.floor, self.adaptive, self.old_classes = cfg.threshold, cfg.adaptive, info.old_classes
        self.calibration_batches = cfg.calibration_batches
        self.register_buffer("thresholds", torch.full((info.old_classes,), float(cfg.threshold)))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self.histogram: torch.Tensor | None = None

    # calibration: one pass of the old model over the training data before the step
    @property
    def needs_calibration(self) -> bool:
        """Whether the per-class thresholds are still to be measured."""
        return not bool(self.calibrated)

    def calibrate(self, teacher: SegOutputs, target: torch.Tensor) -> None:
        """Add one batch's background entropies (of the old model's logits) to the histogram."""
        assert teacher.logits is not None
        hist = entropy_histogram(teacher.logits, target, self.old_classes)
        self.histogram = hist if self.histogram is None else self.histogram + hist

    def calibration_counts(self) -> torch.Tensor:
        """The histogram so far (the trainer sums it over ranks)."""
        if self.histogram is None:
            return torch.zeros(self.old_classes, BINS, dtype=torch.float64, device=self.thresholds.device)
        return self.histogram

    def finish_calibration(self, counts: torch.Tensor) -> None:
        """Set the thresholds from the (all-rank) histogram."""
        self.thresholds.copy_(histogram_medians(counts.cpu(), self.floor).to(self.thresholds.device))
        self.calibrated.fill_(True)
        self.histogram = None

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Rewrite ctx.target (and ctx.pixel_weight); report the share of background pixels kept."""
        assert ctx.teacher is not None and ctx.teacher.logits is not None
        target, bg, kept = pseudo_label(ctx.target, ctx.teacher.logits, self.thresholds, self.old_classes)
        ctx.target = target
        n_bg = bg.flatten(1).sum(dim=1).float()
        n_kept = kept.flatten(1).sum(dim=1).float()
        share = torch.where(n_bg > 0, n_kept / n_bg.clamp(min=1), torch.ones_like(n_bg))
        if self.adaptive:
            ctx.pixel_weight = share.view(-1, 1, 1).expand_as(target)
        return {"pseudo_kept": (n_kept.sum() / n_bg.sum().clamp(min=1)).detach()}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The measured thresholds (a resumed step does not measure them again)."""
        return {"thresholds": self.thresholds.detach().clone(), "calibrated": self.calibrated.detach().clone()}

    def load_state_tensors(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore the thresholds of a resume state."""
        if "thresholds" in state:
            self.thresholds.copy_(state["thresholds"])
            self.calibrated.copy_(state["calibrated"])


def _build(cfg: PseudoConfig, info: StepInfo) -> Term | None:
    return PseudoTerm(cfg, info) if cfg.enabled and info.has_teacher and info.old_classes > 0 else None


TERM = TermSpec(section="pseudo", config=PseudoConfig, build=_build, order=-10,
                description="entropy-based pseudo-labels of the background from the old model (PLOP)")
