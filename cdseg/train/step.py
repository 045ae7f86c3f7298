"""The method's training step: student, frozen teacher and the method's loss terms -> a dict of named terms.

A method is its active terms (`cdseg.losses`, one module each, built from the resolved config by
`cdseg.losses.registry.build_terms`). Per batch the step

1. runs the frozen teacher at most once, under no_grad, on x only, asking for the union of what the terms read
   (logits, features, encoder stages, ...), and not at all when no term reads it;
2. runs the student once, asking for the union of what the terms read; with a contrastive term, x and g(x) go
   through the student in ONE forward of the concatenated 2B batch (the original ran two forwards);
3. runs the targets-phase terms (PLOP's pseudo-labels), then the loss terms, and sums their contributions in
   run order (segmentation first).

Efficiency of the contrastive (CD) step, chosen deliberately: batch-norm statistics are computed over x and
g(x) together (a D4 copy of the same images, so the statistics barely move, and both halves are
normalised identically, which is what an invariance loss wants); running statistics are updated
once per iteration instead of twice; DDP sees one forward per backward (two forwards of a DDP module
before one backward are not allowed). `trainer.cd_single_forward false` restores the original's two
forwards (single process only).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cdseg.losses.term import StepContext, Term, weighted
from cdseg.models.segmenter import SegOutputs

Tensor = torch.Tensor


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP and/or torch.compile wrapper."""
    target = getattr(model, "module", model)  # DDP
    target = getattr(target, "_orig_mod", target)  # torch.compile
    return getattr(target, "module", target)


def _takes_need(model: nn.Module) -> bool:
    target = unwrap(model)
    try:
        return "need" in inspect.signature(target.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False


def run_model(model: nn.Module, x: Tensor, need: frozenset[str], takes_need: bool | None = None) -> SegOutputs:
    """`model`'s outputs named in `need`; a model without `need` (returning (logits, features)) is wrapped."""
    if takes_need if takes_need is not None else _takes_need(model):
        out = model(x, need=need)
        assert isinstance(out, SegOutputs)
        return out
    logits, features = model(x)
    return SegOutputs(logits=logits, features=features)


def _halves(out: SegOutputs, b: int) -> tuple[SegOutputs, SegOutputs]:
    def cut(t: Any, lo: bool) -> Any:
        if t is None:
            return None
        if isinstance(t, list):
            return [cut(v, lo) for v in t]
        return t[:b] if lo else t[b:]

    fields = ("logits", "features", "stages", "decoded", "head_logits")
    return (SegOutputs(**{f: cut(getattr(out, f), True) for f in fields}),
            SegOutputs(**{f: cut(getattr(out, f), False) for f in fields}))


def _cat(a: SegOutputs, b: SegOutputs) -> SegOutputs:
    def join(u: Any, v: Any) -> Any:
        if u is None or v is None:
            return None
        if isinstance(u, list):
            return [join(p, q) for p, q in zip(u, v, strict=True)]
        return torch.cat([u, v])

    fields = ("logits", "features", "stages", "decoded", "head_logits")
    return SegOutputs(**{f: join(getattr(a, f), getattr(b, f)) for f in fields})


class MethodStep(nn.Module):
    """Computes the loss terms of one iteration; `forward` returns {"loss": total, term: value, ...}.

    Reported terms: each active term's name (`seg`, `kd`, `cd`, `pod`, ...; weighted) plus what terms report
    for monitoring (`cd_self`, `cd_old`, `pseudo_ratio`, ...; unweighted, detached). loss = sum of the
    weighted terms in run order.
    """

    teacher: nn.Module | None
    base: nn.Module

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        terms: Sequence[Term],
        aug: Any = None,
        seed: int = 0,
        single_forward: bool = True,
    ) -> None:
        super().__init__()
        self.student = student
        self.terms = nn.ModuleList(terms)
        needs_teacher = any(t.teacher_needs or t.needs_teacher_params for t in terms)
        # kept out of the module tree: never in the optimizer, never DDP-wrapped, never in state_dict
        self.__dict__["teacher"] = teacher if needs_teacher else None
        if self.teacher is not None:
            self.teacher.eval()
            self.teacher.requires_grad_(False)
        self.student_needs = frozenset().union(*(t.needs for t in terms)) or frozenset({"logits"})
        self.teacher_needs = frozenset().union(*(t.teacher_needs for t in terms))
        self.transform = any(t.needs_transform for t in terms)
        self.order = [t.name for t in terms if t.phase == "loss"]
        assert self.order and self.order[0] == "seg", f"the segmentation term must come first, got {self.order}"
        self.aug = aug
        self.seed = seed
        self.single_forward = single_forward
        self._student_takes_need = _takes_need(student)
        self._teacher_takes_need = _takes_need(teacher) if teacher is not None else False
        self.__dict__["base"] = unwrap(student)  # parameter names without wrapper prefixes
        for term in terms:
            term.bind(self.base, teacher)

    @property
    def needs_teacher_forward(self) -> bool:
        """Whether a batch runs the teacher (some active term reads its outputs)."""
        return self.teacher is not None and bool(self.teacher_needs)

    def draw(self, iteration: int) -> tuple[Any, torch.Generator]:
        """The batch's transform g for `iteration`: a function of (seed, iteration), the same on every rank."""
        from cdseg.losses import sample_transform
        from cdseg.train.data import mix_seed

        gen = torch.Generator().manual_seed(mix_seed(self.seed, iteration, 0xD4))
        return sample_transform(self.aug, gen), gen

    def forward(self, x: Tensor, y: Tensor, iteration: int) -> dict[str, Tensor]:
        """The terms of one batch (images x in [0, 1], labels y) and their total under "loss"."""
        teacher_out = None
        if self.needs_teacher_forward:
            with torch.no_grad():
                teacher_out = run_model(self.teacher, x, self.teacher_needs, self._teacher_takes_need)  # type: ignore[arg-type]
        ctx = StepContext(x=x, target=y, iteration=iteration, student=SegOutputs(), teacher=teacher_out,
                          model=self.student)
        if not self.transform:
            ctx.student = run_model(self.student, x, self.student_needs, self._student_takes_need)
        else:
            from cdseg.losses import transform_batch

            b = x.shape[0]
            g, gen = self.draw(iteration)
            xg, yg = transform_batch(g, x, y, self.aug, gen)
            if self.single_forward:
                both = run_model(self.student, torch.cat([x, xg]), self.student_needs, self._student_takes_need)
                ctx.student, ctx.student_g = _halves(both, b)
            else:
                ctx.student = run_model(self.student, x, self.student_needs, self._student_takes_need)
                ctx.student_g = run_model(self.student, xg, self.student_needs, self._student_takes_need)
                both = _cat(ctx.student, ctx.student_g)
            ctx.student_all, ctx.transform, ctx.target_g = both, g, yg
        out: dict[str, Tensor] = {}
        for term in self._terms():
            if term.phase == "targets":
                out.update(term(ctx))
        if self.transform and ctx.target is not y:  # targets were rewritten: transform what the loss sees
            ctx.target_g = ctx.transform.apply_mask(ctx.target)
            if ctx.pixel_weight is not None:
                ctx.pixel_weight_g = ctx.transform.apply(ctx.pixel_weight.unsqueeze(1)).squeeze(1)
        for term in self._terms():
            if term.phase == "loss":
                out.update(term(ctx))
        out["loss"] = weighted(out, self.order)
        return out

    def calibrate(self, batches: Any, device: torch.device, reduce: Any, limit: int = 0) -> bool:
        """Measure what terms measure before the step (PLOP's per-class entropy medians) with one teacher pass
        over `batches` (dicts with "image" and "mask"); `reduce` sums a tensor over ranks. False if none needs it."""
        terms = [t for t in self._terms() if t.needs_calibration]
        if not terms or self.teacher is None:
            return False
        limit = limit or min(t.calibration_batches for t in terms)
        needs = frozenset().union(*(t.teacher_needs for t in terms)) or frozenset({"logits"})
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if limit and i >= limit:
                    break
                x = batch["image"].to(device, non_blocking=True)
                y = batch["mask"].to(device, non_blocking=True)
                out = run_model(self.teacher, x, needs, self._teacher_takes_need)
                for t in terms:
                    t.calibrate(out, y)
        for t in terms:
            t.finish_calibration(reduce(t.calibration_counts()))
        return True

    def _terms(self) -> list[Term]:
        return [t for t in self.terms if isinstance(t, Term)]

    def after_backward(self, grad_scale: float = 1.0) -> None:
        """Let the terms act on the gradients (parameter-importance regularisers); before the optimizer step."""
        for term in self._terms():
            term.after_backward(self.base, grad_scale)

    def after_step(self) -> None:
        """Let the terms see the parameters after the optimizer step."""
        for term in self._terms():
            term.after_step(self.base)

    def state_tensors(self) -> dict[str, Tensor]:
        """Every term's tensor state, keys `<term>/<name>` (resume)."""
        return {f"{t.name}/{k}": v for t in self._terms() for k, v in t.state_tensors().items()}

    def load_state_tensors(self, state: dict[str, Tensor]) -> None:
        """Restore `state_tensors()`."""
        for t in self._terms():
            prefix = f"{t.name}/"
            t.load_state_tensors({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def carry_state(self) -> dict[str, Tensor]:
        """Every term's state for the next step, keys `<term>/<name>`."""
        return {f"{t.name}/{k}": v for t in self._terms() for k, v in t.carry_state().items()}

    def load_carried(self, state: dict[str, Tensor]) -> None:
        """Hand the previous step's `carry_state()` to the terms."""
        for t in self._terms():
            prefix = f"{t.name}/"
            t.load_carried({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
