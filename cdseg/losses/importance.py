"""Parameter-importance regulariser term `reg` (section `reg`): EWC, PI (path integral) and RW.

At step k >= 1 every parameter theta_i the previous model had is pulled towards its old value theta*_i:

    L_reg = lambda sum_i W_i (theta_i - theta*_i)^2,          W = N(importance measured during steps < k)

N(m) = (m - min m) / (max m - min m + 1e-8) per parameter tensor (MiB's code normalises so). Importance:

- `ewc`, Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017) in the online form of RW / MiB's code:
  the empirical Fisher, a running average of squared task gradients, F <- alpha g^2 + (1 - alpha) F per
  iteration; W = N(F).
- `pi`, Path Integral / Synaptic Intelligence (Zenke et al., ICML 2017): omega_i = sum_t -g_i,t (theta_i,t+1 -
  theta_i,t) over the step's iterations (the loss decrease attributed to theta_i), then
  Omega_i = max(omega_i / ((theta_i,end - theta_i,start)^2 + xi), 0), summed over the steps; W = N(Omega).
- `rw`, Riemannian Walk (Chaudhry et al., ECCV 2018): the Fisher F as in ewc, plus a path score accumulated every
  `iterations` iterations from the gradient g there and the window's displacement Delta theta (theta now minus
  theta `iterations` iterations ago), s_i += -g_i Delta theta_i / (1/2 F_i Delta theta_i^2 + eps) (RW's and
  MiB's code's sparse approximation of the path integral: no per-iteration work but the Fisher), kept positive
  and averaged with the previous steps' (S <- (max(s, 0) + S_prev) / 2); W = N(F) + N(S).

MiB's code settings (--method EWC / PI / RW): importance 500 / 500 / 100, alpha 0.9, RW every 10 iterations,
normalised. g is the gradient of the task loss only: the penalty's own gradient, 2 lambda W (theta - theta*),
is added to the gradients after the importance has seen them (as MiB's code, which back-propagates the
penalty separately), and the penalty is reported, not back-propagated. The importance is carried from step to
step beside the model (`terms.safetensors`, listed with its sha256 in the card) and kept in resume states.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from cdseg.config import Section
from cdseg.losses.term import StepContext, StepInfo, Term, TermSpec

EPS = 1e-8
PI_XI = 1e-20


class RegConfig(Section):
    """Parameter-importance regularisation towards the previous step's weights (EWC, PI, RW)."""

    kind: Literal["none", "ewc", "pi", "rw"] = Field(default="none", description="importance estimate: ewc (Fisher), "
                                                     "pi (path integral), rw (Fisher + path score); none: off")
    weight: float = Field(default=0.0, ge=0.0, description="lambda (MiB's code: ewc 500, pi 500, rw 100)")
    alpha: float = Field(default=0.9, gt=0.0, le=1.0, description="weight of the newest squared gradient in the "
                         "running Fisher (ewc, rw)")
    iterations: int = Field(default=10, ge=1, description="rw: iterations per path-score window")
    normalize: bool = Field(default=True, description="min-max normalise each tensor's importance before use")


def normalise(m: torch.Tensor) -> torch.Tensor:
    """(m - min m) / (max m - min m + 1e-8)."""
    return (m - m.min()) / (m.max() - m.min() + EPS)


class ImportanceTerm(Term):
    """Measures parameter importance during the step; penalises moving important old parameters at steps >= 1."""

    name = "reg"
    needs_teacher_params = True

    def __init__(self, cfg: RegConfig, info: StepInfo) -> None:
        super().__init__()
        self.kind, self.weight, self.alpha = cfg.kind, cfg.weight, cfg.alpha
        self.window, self.normalize = cfg.iterations, cfg.normalize
        self.params: dict[str, nn.Parameter] = {}
        self.old: dict[str, torch.Tensor] = {}  # theta*: the previous model's parameters
        self.prior: dict[str, torch.Tensor] = {}  # W, from the previous steps' importance
        self.carried: dict[str, torch.Tensor] = {}  # the previous steps' raw importance (pi, rw keep adding to it)
        self.acc: dict[str, dict[str, torch.Tensor]] = {}  # running state: fisher, omega, start, score, wstart
        self.count = 0
        self._grad: dict[str, torch.Tensor] = {}
        self._before: dict[str, torch.Tensor] = {}
        self._pull: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ wiring
    def bind(self, model: nn.Module, teacher: nn.Module | None) -> None:
        """Track the student's trainable parameters; theta* are the teacher's."""
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.old = {n: p.detach() for n, p in teacher.named_parameters()} if teacher is not None else {}
        self.old = {n: v for n, v in self.old.items() if n in self.params and v.shape == self.params[n].shape}
        kinds = {"ewc": ("fisher",), "pi": ("omega", "start"), "rw": ("fisher", "score", "wstart")}[self.kind]
        for key in kinds:
            if key == "fisher":
                self.acc[key] = {n: torch.ones_like(p, dtype=torch.float32) for n, p in self.params.items()}
            elif key in ("start", "wstart"):
                self.acc[key] = {n: p.detach().float().clone() for n, p in self.params.items()}
            else:
                self.acc[key] = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in self.params.items()}
        if self.kind == "pi":  # the path of an old parameter starts at its old value
            for n, v in self.old.items():
                self.acc["start"][n] = v.float().clone()

    def load_carried(self, state: Mapping[str, torch.Tensor]) -> None:
        """Take the previous steps' importance: it defines W, and ewc / rw continue their Fisher from it."""
        raw = {k: v for k, v in state.items() if k.split("/", 1)[1] in self.old}
        self.carried = dict(raw)
        n = normalise if self.normalize else (lambda m: m)
        prior: dict[str, torch.Tensor] = {}
        for key, value in raw.items():
            kind, name = key.split("/", 1)
            w = n(value.float().to(self.params[name].device))
            prior[name] = prior[name] + w if name in prior else w
            if kind == "fisher" and "fisher" in self.acc:
                self.acc["fisher"][name] = value.float().to(self.params[name].device).clone()
        self.prior = prior

    # ------------------------------------------------------------------ per iteration
    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """{"reg": lambda x penalty} (a reported value: its gradient is added in `after_backward`)."""
        device = next(iter(self.params.values())).device if self.params else torch.device("cpu")
        self._pull = {}
        if not self.prior or self.weight <= 0:
            return {"reg": torch.zeros((), device=device)}
        with torch.no_grad():  # W (theta - theta*), kept for the gradient (theta does not move before it)
            names = list(self.prior)
            diff = torch._foreach_sub([self.params[n].detach().float() for n in names],
                                      [self.old[n].float() for n in names])
            pull = torch._foreach_mul(diff, [self.prior[n] for n in names])
            value = torch.stack([torch.dot(a.flatten(), b.flatten()) for a, b in zip(pull, diff, strict=True)]).sum()
        self._pull = dict(zip(names, pull, strict=True))
        return {"reg": self.weight * value}

    @torch.no_grad()
    def after_backward(self, model: nn.Module, grad_scale: float = 1.0) -> torch.Tensor | None:
        """Update the importance from the task gradient, then add the penalty's gradient."""
        names = [n for n, p in self.params.items() if p.grad is not None]
        grads = [self.params[n].grad.float() for n in names]  # type: ignore[union-attr]
        if grad_scale != 1.0:
            grads = list(torch._foreach_div(grads, grad_scale))
        if self.kind == "rw":  # every `iterations`: the score of the window that ends here, before F moves on
            self.count += 1
            if self.count % self.window == 0:
                for n, g in zip(names, grads, strict=True):
                    p, start = self.params[n].detach().float(), self.acc["wstart"][n]
                    delta = p - start
                    self.acc["score"][n].add_(-g * delta / (0.5 * self.acc["fisher"][n] * delta * delta + EPS))
                    start.copy_(p)
        if "fisher" in self.acc:
            fisher = [self.acc["fisher"][n] for n in names]
            torch._foreach_mul_(fisher, 1 - self.alpha)
            torch._foreach_addcmul_(fisher, grads, grads, value=self.alpha)
        if "omega" in self.acc:  # the path increment needs the task gradient and theta before the step
            self._grad = dict(zip(names, [g.clone() for g in grads] if grads and grads[0] is self.params[names[0]].grad
                                  else grads, strict=True))
            self._before = {n: self.params[n].detach().float().clone() for n in names}
        if self._pull:
            own = [n for n in names if n in self._pull]
            torch._foreach_add_([self.params[n].grad for n in own],  # type: ignore[misc]
                                [self._pull[n].to(self.params[n].grad.dtype) for n in own],  # type: ignore[union-attr]
                                alpha=2 * self.weight * grad_scale)
        self._pull = {}
        return None

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        """pi: add this iteration's path increment -g (theta_new - theta_old)."""
        if "omega" not in self.acc:
            return
        names = list(self._grad)
        if names:  # omega += g (theta_old - theta_new)
            before = [self._before[n] for n in names]
            torch._foreach_sub_(before, [self.params[n].detach().float() for n in names])
            torch._foreach_addcmul_([self.acc["omega"][n] for n in names], [self._grad[n] for n in names], before)
        self._grad, self._before = {}, {}

    # ------------------------------------------------------------------ state
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Running accumulators (resume)."""
        out = {f"{key}/{n}": v for key, values in self.acc.items() for n, v in values.items()}
        out["count"] = torch.tensor(self.count)
        return out

    def load_state_tensors(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore the running accumulators of a resume state."""
        for key, value in state.items():
            if key == "count":
                self.count = int(value)
                continue
            kind, name = key.split("/", 1)
            if kind in self.acc and name in self.acc[kind]:
                self.acc[kind][name].copy_(value)

    def carry_state(self) -> dict[str, torch.Tensor]:
        """The importance after this step, for the next: ewc {fisher}, pi {score}, rw {fisher, score}."""
        out: dict[str, torch.Tensor] = {}
        if "fisher" in self.acc:
            out.update({f"fisher/{n}": v.clone() for n, v in self.acc["fisher"].items()})
        if self.kind == "pi":
            for n, p in self.params.items():
                moved = p.detach().float() - self.acc["start"][n]
                omega = (self.acc["omega"][n] / (moved * moved + PI_XI)).clamp(min=0)
                prev = self.carried.get(f"score/{n}")
                out[f"score/{n}"] = omega + prev.to(omega.device) if prev is not None else omega
        if self.kind == "rw":
            for n, s in self.acc["score"].items():
                score = s.clamp(min=0)
                prev = self.carried.get(f"score/{n}")
                out[f"score/{n}"] = 0.5 * (score + prev.to(score.device)) if prev is not None else score
        return out


def _build(cfg: RegConfig, info: StepInfo) -> Term | None:
    return ImportanceTerm(cfg, info) if cfg.kind != "none" else None


TERM = TermSpec(section="reg", config=RegConfig, build=_build, order=40, step1_only=(),
                description="parameter-importance regularisation (EWC, PI, RW)")
