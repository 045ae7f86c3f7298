"""The seam of a method: a loss term, what it reads, and the per-batch context it reads it from.

A term is one module of `cdseg.losses` that defines `TERM = TermSpec(...)`: its config section (one pydantic
`Section`, a field of `TrainConfig` under `TermSpec.section`), and `build(section, info)` returning a `Term`
for a step, or None when the section leaves it off (weight 0, or no teacher at step 0). The method step
(`cdseg.train.step`) asks every active term what it needs, runs the student once and the frozen teacher at
most once per batch with the union of those needs, and adds up what the terms return.

A term's `forward(ctx)` returns named values: the one named `name` is its weighted contribution to the loss;
other names are reported for monitoring only (detached). A term with `phase = "targets"` runs before the others
and may rewrite `ctx.target` / `ctx.pixel_weight` (PLOP's pseudo-labels). A term may keep tensor state that
lives across iterations and steps (`state_tensors` / `load_state_tensors`, saved as safetensors), and may act
on the gradients after the backward pass (`after_backward`) and on the parameters after the optimizer step
(`after_step`): the parameter-importance regularisers (EWC, PI, RW) do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from cdseg.models.segmenter import SegOutputs

Tensor = torch.Tensor


@dataclass(frozen=True)
class StepInfo:
    """What a term may know about the step it is built for (no ranks, no world size)."""

    step: int
    old_classes: int  # outputs of the previous steps, background included (0 at step 0 and without a teacher)
    num_outputs: int  # outputs of this step's model, background included
    has_teacher: bool  # a frozen previous model is available (step >= 1, a method that starts from one)
    seed: int = 0

    @property
    def new_classes(self) -> int:
        """Outputs added at this step."""
        return self.num_outputs - self.old_classes if self.old_classes else self.num_outputs


@dataclass
class StepContext:
    """One batch as the terms see it. `student` / `teacher` hold what the active terms asked for.

    With a transformed copy (contrastive distillation), `student` is the output on x only, and `student_g` the
    student's output on g(x) (same forward, batch halves); `target_all` / `logits_all` the 2B versions the
    segmentation term uses.
    """

    x: Tensor
    target: Tensor
    iteration: int
    student: SegOutputs
    teacher: SegOutputs | None = None
    student_g: SegOutputs | None = None
    student_all: SegOutputs | None = None
    transform: Any = None
    target_g: Tensor | None = None
    pixel_weight: Tensor | None = None  # per-pixel weight [B, H, W] of the segmentation loss (None: 1)
    pixel_weight_g: Tensor | None = None
    model: nn.Module | None = None  # the student module


class Term(nn.Module):
    """A loss term. Subclasses set `name` and the needs, and implement `forward(ctx) -> {name: loss, ...}`."""

    name: ClassVar[str] = ""
    #: student outputs read (SegOutputs field names)
    needs: frozenset[str] = frozenset()
    #: teacher outputs read (empty: no teacher forward for this term)
    teacher_needs: frozenset[str] = frozenset()
    #: the student also runs on a transformed copy g(x) (contrastive distillation)
    needs_transform: bool = False
    #: "targets" terms run first and may rewrite ctx.target / ctx.pixel_weight; "loss" terms add to the loss
    phase: Literal["targets", "loss"] = "loss"
    #: the term needs the previous step's parameters (not its forward), e.g. EWC
    needs_teacher_params: bool = False

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:  # pragma: no cover - interface
        """{name: weighted loss, other: monitored value, ...}."""
        raise NotImplementedError

    def bind(self, model: nn.Module, teacher: nn.Module | None) -> None:
        """Called once with the (unwrapped) student and the frozen teacher (None at step 0), before training."""

    def state_tensors(self) -> dict[str, Tensor]:
        """Tensor state carried across iterations (resume) and steps (the next step's prior); {} by default."""
        return {}

    def load_state_tensors(self, state: Mapping[str, Tensor]) -> None:
        """Restore `state_tensors()` of a resume state."""

    def carry_state(self) -> dict[str, Tensor]:
        """Tensor state handed to the next step (saved beside the step's model); {} by default."""
        return {}

    def load_carried(self, state: Mapping[str, Tensor]) -> None:
        """Take the previous step's `carry_state()`."""

    def after_backward(self, model: nn.Module, grad_scale: float = 1.0) -> Tensor | None:
        """Called after loss.backward(), before the optimizer step; may add to gradients; returns a value to
        report (or None)."""
        return None

    def after_step(self, model: nn.Module) -> None:
        """Called after the optimizer step."""

    # Calibration: statistics a term measures with the previous model over the training data before the step
    # (PLOP's per-class entropy thresholds). The trainer runs the teacher once per batch for every term that
    # needs it, sums `calibration_counts()` over ranks and hands the sum to `finish_calibration`.
    #: training batches the calibration pass reads at most (0: the whole epoch)
    calibration_batches: int = 0

    @property
    def needs_calibration(self) -> bool:
        """Whether the term still has to measure its statistics (False once done, also after a resume)."""
        return False

    def calibrate(self, teacher: SegOutputs, target: Tensor) -> None:
        """Accumulate one batch: the teacher's outputs (`teacher_needs`) and the step's targets."""

    def calibration_counts(self) -> Tensor:
        """What this rank accumulated (summed over ranks by the trainer)."""
        raise NotImplementedError(f"{type(self).__name__} needs calibration but has no counts")

    def finish_calibration(self, counts: Tensor) -> None:
        """Set the statistics from the all-rank `counts`."""


@dataclass(frozen=True)
class TermSpec:
    """How a term module plugs in: its section, how to build it, and how it behaves at step 0."""

    section: str
    config: type[Any]
    build: Callable[[Any, StepInfo], Term | None]
    #: run order among terms (the loss is summed in this order; targets-phase terms run first anyway)
    order: int = 100
    #: options of the section that do not change step 0 (None: the whole section, () none)
    step1_only: tuple[str, ...] | None = None
    #: whether the section, as configured, acts at step 0 at all (None: assume it does); a section that does
    #: not is left out of the step-0 fingerprint, so its other options do not split a shared step-0 model
    acts_at_step0: Callable[[Any], bool] | None = None
    description: str = ""


def weighted(terms: Mapping[str, Tensor], order: list[str]) -> Tensor:
    """The total loss: the terms named in `order`, summed in that order (the first must be present)."""
    total = terms[order[0]]
    for name in order[1:]:
        if name in terms:
            total = total + terms[name]
    return total
