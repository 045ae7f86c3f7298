"""Contrastive distillation term `cd` (section `aug`; seed-spec 5.3): features must commute with a random
flip/rotation g of the tile (Arnaudo et al., "A Contrastive Distillation Approach for Incremental Semantic
Segmentation in Aerial Images", ICIAP 2021).

- self term:      MSE(g(f_new(x)), f_new(g(x)))   weight `aug.factor`
- old-model term: MSE(f_new(g(x)), g(f_old(x)))   weight `aug.factor_icl` (steps >= 1; f_old is detached)

It is a plain MSE between feature maps ("contrastive" is the paper's name). One g is drawn per batch and
applied to the whole batch, its labels included; the trainer adds the segmentation loss on g(x) as well.
Differences from the original: the MSE is computed in float32 and NaN is not silently replaced by 0.

`aug.fixed_angles=False` draws any integer angle in [-360, 360] (an approximation: bilinear resampling of
images and features, nearest for labels; pixels rotated in from outside the tile are labelled 255 and left
out of both MSE terms, where the original compared them with zero fill).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cdseg.losses.ce import IGNORE_INDEX
from cdseg.losses.config import AugConfig
from cdseg.losses.term import StepContext, StepInfo, Term, TermSpec
from cdseg.models.d4 import D4Element, random_element


@dataclass(frozen=True)
class FreeRotation:
    """Rotation by `angle` degrees (counter-clockwise, as torch.rot90) about the tile centre; same shape out."""

    angle: float

    def _grid(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        theta = math.radians(self.angle)
        cos, sin = math.cos(theta), math.sin(theta)
        ys = torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2
        xs = torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2
        dy, dx = torch.meshgrid(ys, xs, indexing="ij")
        sy = cos * dy + sin * dx + (h - 1) / 2
        sx = cos * dx - sin * dy + (w - 1) / 2
        # grid_sample, align_corners=False: pixel i has normalised coordinate (2i + 1) / size - 1
        return torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], dim=-1).unsqueeze(0)

    def _sample(self, t: torch.Tensor, mode: str) -> torch.Tensor:
        lead = t.shape[:-2]
        flat = t.reshape(-1, 1, *t.shape[-2:]) if t.ndim != 4 else t
        grid = self._grid(t.shape[-2], t.shape[-1], t.device).expand(flat.shape[0], -1, -1, -1)
        out = F.grid_sample(flat.float(), grid, mode=mode, padding_mode="zeros", align_corners=False)
        return out.to(t.dtype).reshape(*lead, *t.shape[-2:])

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """Bilinear rotation of an image / feature map [..., H, W]; outside the tile: 0."""
        return self._sample(t, "bilinear")

    def apply_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Nearest rotation of a label mask [..., H, W]; outside the tile: 255 (ignored)."""
        rotated = self._sample(mask.float(), "nearest")
        inside = self._sample(torch.ones_like(mask[..., :1, :, :] if mask.ndim == 4 else mask[:1], dtype=torch.float32),
                              "nearest") > 0.5
        return torch.where(inside.expand_as(rotated), rotated, float(IGNORE_INDEX)).to(mask.dtype)

    @property
    def inverse(self) -> FreeRotation:
        """The opposite rotation (exact only for multiples of 90 degrees)."""
        return FreeRotation(-self.angle)

    def valid_mask(self, like: torch.Tensor) -> torch.Tensor:
        """[1, 1, H, W] bool: pixels of a rotated map interpolated from inside the tile only."""
        ones = torch.ones(1, 1, *like.shape[-2:], device=like.device)
        return self._sample(ones, "bilinear") > 0.999


def sample_transform(cfg: AugConfig, generator: torch.Generator | None = None) -> D4Element | FreeRotation:
    """Draw the batch's transform: a uniform D4 element (or rotation only, `flip=False`), or a free angle."""
    if cfg.fixed_angles:
        return random_element(flip=cfg.flip, generator=generator)
    angle = float(torch.randint(-360, 361, (1,), generator=generator).item())
    return FreeRotation(angle)


def transform_batch(
    g: D4Element | FreeRotation,
    image: torch.Tensor,
    mask: torch.Tensor | None,
    cfg: AugConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(g(image), g(mask)); with `cfg.color` the transformed images are also jittered (+-10% brightness/contrast)."""
    out = g.apply(image)
    if cfg.color:
        out = color_jitter(out, generator=generator)
    return out, (g.apply_mask(mask) if mask is not None else None)


def color_jitter(x: torch.Tensor, strength: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image brightness and contrast factors uniform in [1-s, 1+s], on [0,1] images of any band count."""
    b = x.shape[0]
    rand = torch.rand(2, b, 1, 1, 1, generator=generator).to(x.device, x.dtype)
    brightness, contrast = 1 + strength * (2 * rand[0] - 1), 1 + strength * (2 * rand[1] - 1)
    y = x * brightness
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    return ((y - mean) * contrast + mean).clamp(0, 1)


def _mse(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    diff = (a.float() - b.float()).pow(2)
    if valid is None:
        return diff.mean()
    weight = valid.to(diff.dtype).expand_as(diff)
    count = weight.sum()
    return (diff * weight).sum() / count if count > 0 else diff.sum() * 0.0


def contrastive_terms(
    f_new_x: torch.Tensor,
    f_new_gx: torch.Tensor,
    f_old_x: torch.Tensor | None,
    g: D4Element | FreeRotation,
) -> dict[str, torch.Tensor]:
    """Unweighted terms: `cd_self` = MSE(g(f_new(x)), f_new(g(x))), and `cd_old` = MSE(f_new(g(x)), g(f_old(x)))
    when the old model's features are given (they are detached)."""
    valid = g.valid_mask(f_new_gx)
    terms = {"cd_self": _mse(g.apply(f_new_x), f_new_gx, valid)}
    if f_old_x is not None:
        terms["cd_old"] = _mse(f_new_gx, g.apply(f_old_x.detach()), valid)
    return terms


class ContrastiveDistillation(nn.Module):
    """Weighted contrastive distillation: returns the unweighted terms and `cd`, their weighted sum."""

    def __init__(self, cfg: AugConfig) -> None:
        super().__init__()
        self.factor = cfg.factor
        self.factor_icl = cfg.factor_icl

    def forward(
        self,
        f_new_x: torch.Tensor,
        f_new_gx: torch.Tensor,
        f_old_x: torch.Tensor | None,
        g: D4Element | FreeRotation,
    ) -> dict[str, torch.Tensor]:
        """{"cd_self", ["cd_old"], "cd" = factor * cd_self + factor_icl * cd_old}."""
        terms = contrastive_terms(f_new_x, f_new_gx, f_old_x if self.factor_icl > 0 else None, g)
        total = self.factor * terms["cd_self"]
        if "cd_old" in terms:
            total = total + self.factor_icl * terms["cd_old"]
        terms["cd"] = total
        return terms


class CDTerm(Term):
    """The contrastive terms read from the step's context: student features on x and g(x), teacher's on x."""

    name = "cd"
    needs = frozenset({"features"})
    needs_transform = True

    def __init__(self, cfg: AugConfig) -> None:
        super().__init__()
        self.cd = ContrastiveDistillation(cfg)
        self.teacher_needs = frozenset({"features"}) if cfg.factor_icl > 0 else frozenset()

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """{"cd": weighted sum, "cd_self", ["cd_old"] (detached)}."""
        assert ctx.student_g is not None and ctx.student.features is not None and ctx.student_g.features is not None
        f_old = ctx.teacher.features if ctx.teacher is not None and self.teacher_needs else None
        out = self.cd(ctx.student.features, ctx.student_g.features, f_old, ctx.transform)
        return {"cd": out["cd"], **{k: v.detach() for k, v in out.items() if k != "cd"}}


def _build(cfg: AugConfig, info: StepInfo) -> Term | None:
    factor_icl = cfg.factor_icl if info.has_teacher else 0.0
    if info.step < cfg.from_step or (cfg.factor <= 0 and factor_icl <= 0):
        return None
    return CDTerm(cfg.model_copy(update={"factor_icl": factor_icl}))


TERM = TermSpec(section="aug", config=AugConfig, build=_build, order=20, step1_only=("factor_icl",),
                acts_at_step0=lambda cfg: cfg.acts_at(0), description="contrastive distillation (MiB-CD)")
