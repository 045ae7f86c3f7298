"""The recipe-built methods compute exactly what the fixed-flag MethodStep of release 0 computed.

`_legacy_terms` is the previous `MethodStep.forward` (teacher forward, one 2B student forward with CD, seg /
kd / cd terms) written out against the public losses; the new step builds the same method from its recipe's
terms. Same seed, same batch, real segmenter with dropout and batch norm: terms and gradients are equal
bitwise.
"""

from __future__ import annotations

import pytest
import torch

from cdseg.config import load_config
from cdseg.losses import ContrastiveDistillation, build_kd_loss, build_seg_loss, sample_transform, transform_batch
from cdseg.losses.registry import build_terms
from cdseg.losses.term import StepInfo
from cdseg.models import ModelConfig, build_segmenter
from cdseg.train.config import TrainConfig
from cdseg.train.data import mix_seed
from cdseg.train.step import MethodStep

STATS = {b: {"mean": 0.25, "std": 0.5} for b in ("R", "G", "B")}


def _models() -> tuple[torch.nn.Module, torch.nn.Module]:
    cfg = ModelConfig(encoder="test_resnet", pretrained=False, norm="bn", dropout=0.2)
    torch.manual_seed(0)
    student = build_segmenter(cfg, [3, 2], ["R", "G", "B"], STATS)
    teacher = build_segmenter(cfg, [3], ["R", "G", "B"], STATS).freeze()
    return student, teacher


def _legacy_terms(cfg: TrainConfig, student: torch.nn.Module, teacher: torch.nn.Module, x: torch.Tensor,
                  y: torch.Tensor, it: int) -> dict[str, torch.Tensor]:
    seg_loss, kd_loss = build_seg_loss(cfg.ce, 3), build_kd_loss(cfg.kd)
    aug = cfg.aug
    cd = ContrastiveDistillation(aug) if aug.apply else None
    terms: dict[str, torch.Tensor] = {}
    q = f_old = None
    if kd_loss is not None or aug.factor_icl > 0:
        with torch.no_grad():
            q, f_old = teacher(x)
    if cd is None:
        z, _ = student(x)
        terms["seg"] = seg_loss(z, y)
    else:
        b = x.shape[0]
        gen = torch.Generator().manual_seed(mix_seed(cfg.seed, it, 0xD4))
        g = sample_transform(aug, gen)
        xg, yg = transform_batch(g, x, y, aug, gen)
        z2, f2 = student(torch.cat([x, xg]))
        z, f, f_of_xg = z2[:b], f2[:b], f2[b:]
        terms["seg"] = seg_loss(z2, torch.cat([y, yg]))
        out = cd(f, f_of_xg, f_old if aug.factor_icl > 0 else None, g)
        terms["cd"] = out["cd"]
        terms.update({k: v.detach() for k, v in out.items() if k != "cd"})
    if kd_loss is not None and q is not None:
        terms["kd"] = cfg.kd.weight * kd_loss(z, q)
    terms["loss"] = terms["seg"] + terms.get("kd", 0.0) + terms.get("cd", 0.0)
    return terms


@pytest.mark.parametrize("method", ["ft", "uft", "mib", "mib-cd", "ft-cd"])
def test_recipe_step_equals_the_legacy_step(method: str) -> None:
    cfg = load_config(TrainConfig, cli={"method": method}, environ={})
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 32, 32, generator=g), torch.randint(0, 5, (2, 32, 32), generator=g)

    student, teacher = _models()
    torch.manual_seed(5)
    old = _legacy_terms(cfg, student, teacher, x, y, 3)
    old["loss"].backward()
    old_grads = [p.grad.clone() for p in student.parameters() if p.grad is not None]

    student, teacher = _models()
    info = StepInfo(step=1, old_classes=3, num_outputs=5, has_teacher=True, seed=cfg.seed)
    step = MethodStep(student, teacher, build_terms(cfg, info), cfg.aug, cfg.seed)
    torch.manual_seed(5)
    new = step(x, y, 3)
    new["loss"].backward()
    new_grads = [p.grad.clone() for p in student.parameters() if p.grad is not None]

    assert set(new) == set(old)
    for k in old:
        assert torch.equal(new[k], old[k]), (k, new[k], old[k])
    assert len(new_grads) == len(old_grads)
    assert all(torch.equal(a, b) for a, b in zip(new_grads, old_grads, strict=True))
