"""The method step: terms per method, frozen teacher, one concatenated forward for contrastive methods."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cdseg.losses import AugConfig, CEConfig, KDConfig
from cdseg.losses.ce import SegTerm, build_seg_loss
from cdseg.losses.contrastive import CDTerm
from cdseg.losses.kd import KDTerm, build_kd_loss
from cdseg.train.step import MethodStep

torch.set_num_threads(1)


class _Tiny(nn.Module):
    """Conv features (no norm, no dropout) + a 1x1 head: enough to check the step's arithmetic."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, outputs, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.body(x))
        return self.head(f), f


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 8, 8, generator=g), torch.randint(0, 5, (2, 8, 8), generator=g)


def _step(single: bool = True, teacher: bool = True) -> MethodStep:
    torch.manual_seed(0)
    student, old = _Tiny(5), _Tiny(3) if teacher else None
    aug = AugConfig(factor=0.1, factor_icl=0.1)
    kd = build_kd_loss(KDConfig(unbiased=True, weight=10.0))
    assert kd is not None
    terms = [SegTerm(build_seg_loss(CEConfig(unbiased=True), 3 if teacher else 0)), KDTerm(kd, 10.0), CDTerm(aug)]
    return MethodStep(student, old, terms, aug, seed=7, single_forward=single)


def test_mib_cd_terms_and_total() -> None:
    step = _step()
    x, y = _batch()
    terms = step(x, y, iteration=0)
    assert set(terms) == {"seg", "kd", "cd", "cd_self", "cd_old", "loss"}
    assert torch.allclose(terms["loss"], terms["seg"] + terms["kd"] + terms["cd"])
    assert torch.allclose(terms["cd"], 0.1 * terms["cd_self"] + 0.1 * terms["cd_old"])


def test_teacher_is_frozen_and_not_a_submodule() -> None:
    step = _step()
    assert step.teacher is not None and not step.teacher.training
    assert all(not p.requires_grad for p in step.teacher.parameters())
    names = [n for n, _ in step.named_parameters()]
    assert names and all(n.startswith("student.") for n in names)
    x, y = _batch()
    step(x, y, 0)["loss"].backward()
    assert all(p.grad is None for p in step.teacher.parameters())


def test_single_concatenated_forward_equals_two_forwards() -> None:
    """Without batch statistics or dropout the 2B forward gives the same terms and gradients as two forwards."""
    x, y = _batch()
    a, b = _step(single=True), _step(single=False)
    ta, tb = a(x, y, 5), b(x, y, 5)
    for k in ta:
        assert torch.allclose(ta[k], tb[k], atol=1e-6), k
    ta["loss"].backward()
    tb["loss"].backward()
    for pa, pb in zip(a.student.parameters(), b.student.parameters(), strict=True):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6)


def test_transform_is_a_function_of_the_iteration() -> None:
    step = _step()
    assert step.draw(3)[0] == step.draw(3)[0]
    assert len({repr(step.draw(i)[0]) for i in range(40)}) > 1


@pytest.mark.parametrize("teacher", [False, True])
def test_plain_methods_have_seg_only_or_kd(teacher: bool) -> None:
    torch.manual_seed(0)
    kd = build_kd_loss(KDConfig(weight=10.0))
    assert kd is not None
    terms = [SegTerm(build_seg_loss(CEConfig(), 0))] + ([KDTerm(kd, 10.0)] if teacher else [])
    step = MethodStep(_Tiny(5), _Tiny(3) if teacher else None, terms, AugConfig(), seed=0)
    x, y = _batch()
    assert set(step(x, y, 0)) == ({"seg", "kd", "loss"} if teacher else {"seg", "loss"})


@pytest.mark.parametrize("method", ["plop", "plop-cd", "ilt", "mib"])
def test_the_teacher_runs_once_per_batch_however_many_terms_read_it(method: str) -> None:
    from cdseg.config import load_config
    from cdseg.losses.registry import build_terms
    from cdseg.losses.term import StepInfo
    from cdseg.models import ModelConfig, build_segmenter
    from cdseg.train.config import TrainConfig

    cfg = load_config(TrainConfig, cli={"method": method}, environ={})
    mcfg = ModelConfig(encoder="test_resnet", pretrained=False, norm="bn")
    torch.manual_seed(0)
    student = build_segmenter(mcfg, [3, 2], ["R", "G", "B"])
    teacher = build_segmenter(mcfg, [3], ["R", "G", "B"]).freeze()
    calls: list[frozenset[str]] = []
    teacher.register_forward_pre_hook(lambda _m, args, kwargs: calls.append(frozenset(kwargs.get("need") or ())),
                                      with_kwargs=True)
    terms = build_terms(cfg, StepInfo(step=1, old_classes=3, num_outputs=5, has_teacher=True))
    assert sum(bool(t.teacher_needs) for t in terms) >= 1
    step = MethodStep(student, teacher, terms, cfg.aug, seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32, generator=g), torch.randint(0, 5, (2, 32, 32), generator=g)
    step(x, y, 0)["loss"].backward()
    assert len(calls) == 1
    assert calls[0] == frozenset().union(*(t.teacher_needs for t in terms))
