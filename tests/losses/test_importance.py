"""EWC, PI and RW: importance and penalty against straightforward computations; importance is non-negative, the
penalty is 0 when the student equals the teacher, the state survives a save/load (resume) unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cdseg.losses.importance import ImportanceTerm, RegConfig
from cdseg.losses.term import StepContext, StepInfo
from cdseg.models.segmenter import SegOutputs

INFO = StepInfo(step=1, old_classes=2, num_outputs=3, has_teacher=True)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def _ctx() -> StepContext:
    return StepContext(x=torch.zeros(1), target=torch.zeros(1), iteration=0, student=SegOutputs())


def _loss(model: nn.Module, seed: int) -> torch.Tensor:
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(seed))
    return model(x).pow(2).mean()


def _train(term: ImportanceTerm, model: nn.Module, iters: int) -> list[dict[str, torch.Tensor]]:
    """SGD iterations through the term's hooks; returns each iteration's task gradients."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    grads = []
    for it in range(iters):
        opt.zero_grad()
        _loss(model, it).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        term.after_backward(model)
        opt.step()
        term.after_step(model)
    return grads


def test_ewc_fisher_is_the_running_average_of_squared_gradients() -> None:
    model = _model()
    term = ImportanceTerm(RegConfig(kind="ewc", weight=1.0, alpha=0.9), INFO)
    term.bind(model, None)
    grads = _train(term, model, 3)
    for n, _ in model.named_parameters():
        f = torch.ones_like(grads[0][n])
        for g in grads:
            f = 0.9 * g[n] ** 2 + 0.1 * f
        assert torch.allclose(term.carry_state()[f"fisher/{n}"], f, atol=1e-6, rtol=1e-6)


def test_penalty_value_and_gradient_match_the_formula() -> None:
    teacher, model = _model(0), _model(1)
    term = ImportanceTerm(RegConfig(kind="ewc", weight=3.0), INFO)
    term.bind(model, teacher)
    fisher = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    term.load_carried({f"fisher/{n}": f for n, f in fisher.items()})
    want, grads = 0.0, {}
    for (n, p), (_, q) in zip(model.named_parameters(), teacher.named_parameters(), strict=True):
        f = fisher[n]
        w = (f - f.min()) / (f.max() - f.min() + 1e-8)
        want += float((w * (p.detach() - q.detach()) ** 2).sum())
        grads[n] = 2 * 3.0 * w * (p.detach() - q.detach())
    assert abs(float(term(_ctx())["reg"]) - 3.0 * want) < 1e-6 * max(1.0, 3.0 * want)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    term.after_backward(model)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[n], atol=1e-6)


def test_pi_score_is_the_clamped_path_integral_over_the_squared_displacement() -> None:
    model = _model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    term = ImportanceTerm(RegConfig(kind="pi", weight=1.0), INFO)
    term.bind(model, None)
    snapshots = [start]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    omega = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for it in range(3):
        opt.zero_grad()
        _loss(model, it).backward()
        g = {n: p.grad.clone() for n, p in model.named_parameters()}
        term.after_backward(model)
        opt.step()
        term.after_step(model)
        now = {n: p.detach().clone() for n, p in model.named_parameters()}
        for n in omega:
            omega[n] -= g[n] * (now[n] - snapshots[-1][n])
        snapshots.append(now)
    carry = term.carry_state()
    for n, p in model.named_parameters():
        want = (omega[n] / ((p.detach() - start[n]) ** 2 + 1e-20)).clamp(min=0)
        assert torch.allclose(carry[f"score/{n}"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["ewc", "pi", "rw"])
def test_importance_is_non_negative_and_the_penalty_is_zero_at_the_teacher(kind: str) -> None:
    model = _model()
    term = ImportanceTerm(RegConfig(kind=kind, weight=5.0, iterations=2), INFO)
    term.bind(model, None)
    _train(term, model, 5)
    carry = term.carry_state()
    assert carry and all(bool((v >= 0).all()) for v in carry.values())
    student = copy.deepcopy(model)
    nxt = ImportanceTerm(RegConfig(kind=kind, weight=5.0), INFO)
    nxt.bind(student, model)
    nxt.load_carried(carry)
    assert float(nxt(_ctx())["reg"]) == 0.0
    assert all(bool((w >= 0).all()) for w in nxt.prior.values())


@pytest.mark.parametrize("kind", ["ewc", "pi", "rw"])
def test_resume_state_round_trip_continues_identically(kind: str) -> None:
    cfg = RegConfig(kind=kind, weight=1.0, iterations=2)
    a_model = _model()
    a = ImportanceTerm(cfg, INFO)
    a.bind(a_model, None)
    _train(a, a_model, 3)
    b_model = copy.deepcopy(a_model)
    b = ImportanceTerm(cfg, INFO)
    b.bind(b_model, None)
    b.load_state_tensors({k: v.clone() for k, v in a.state_tensors().items()})
    for term, model in ((a, a_model), (b, b_model)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        opt.zero_grad()
        _loss(model, 9).backward()
        term.after_backward(model)
        opt.step()
        term.after_step(model)
    ca, cb = a.carry_state(), b.carry_state()
    assert ca.keys() == cb.keys() and all(torch.equal(ca[k], cb[k]) for k in ca)


def test_rw_score_uses_the_gradient_at_each_window_end_and_the_window_displacement() -> None:
    model = _model()
    term = ImportanceTerm(RegConfig(kind="rw", weight=1.0, alpha=0.9, iterations=2), INFO)
    term.bind(model, None)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    score = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for it in range(4):
        opt.zero_grad()
        _loss(model, it).backward()
        if (it + 1) % 2 == 0:
            for n, p in model.named_parameters():
                d = p.detach() - start[n]
                score[n] += -p.grad * d / (0.5 * fisher[n] * d * d + 1e-8)
                start[n] = p.detach().clone()
        for n, p in model.named_parameters():
            fisher[n] = 0.9 * p.grad**2 + 0.1 * fisher[n]
        term.after_backward(model)
        opt.step()
        term.after_step(model)
    carry = term.carry_state()
    for n, _ in model.named_parameters():
        assert torch.allclose(carry[f"score/{n}"], score[n].clamp(min=0), rtol=1e-5, atol=1e-6)
        assert torch.allclose(carry[f"fisher/{n}"], fisher[n], rtol=1e-6, atol=1e-7)
