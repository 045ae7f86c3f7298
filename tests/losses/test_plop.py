"""PLOP's terms against straightforward computations: Local POD (loops over regions) and the entropy pseudo-labels
(per-pixel loops), plus invariants: POD is 0 for equal maps, pseudo-labels only replace background pixels."""

from __future__ import annotations

import math

import torch

from cdseg.losses.pod import PODConfig, PODTerm, collapse_new, local_pod_distance
from cdseg.losses.pseudo import BINS, entropy_histogram, histogram_medians, normalised_entropy, pseudo_label
from cdseg.losses.term import StepContext, StepInfo
from cdseg.models.segmenter import SegOutputs


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _embedding(x: torch.Tensor, scales: list[int]) -> list[list[float]]:
    """PLOP's Local POD embedding, one list per image, by explicit loops over regions, rows and columns."""
    x = x.double() ** 2
    out = []
    for b in range(x.shape[0]):
        emb: list[float] = []
        for s in scales:
            kh, kw = x.shape[2] // s, x.shape[3] // s
            for i in range(s):
                for j in range(s):
                    r = x[b, :, i * kh:(i + 1) * kh, j * kw:(j + 1) * kw]
                    for c in range(r.shape[0]):
                        emb += [float(r[c, h, :].mean()) for h in range(kh)]  # pooled over the width
                        emb += [float(r[c, :, w].mean()) for w in range(kw)]  # pooled over the height
        out.append(emb)
    return out


def _distance(a: torch.Tensor, b: torch.Tensor, scales: list[int]) -> float:
    ea, eb = _embedding(a, scales), _embedding(b, scales)
    return sum(math.sqrt(sum((u - v) ** 2 for u, v in zip(p, q, strict=True))) for p, q in zip(ea, eb, strict=True)) / len(ea)


def test_local_pod_distance_matches_the_loops() -> None:
    a, b = _rand(2, 3, 8, 12), _rand(2, 3, 8, 12, seed=1)
    ref = _distance(a, b, [1, 2, 4])
    assert abs(float(local_pod_distance(a, b, [1, 2, 4]).mean()) - ref) < 1e-6 * max(1.0, ref)


def test_local_pod_is_zero_for_equal_maps() -> None:
    a = _rand(2, 3, 8, 8)
    assert float(local_pod_distance(a, a.clone(), [1, 2, 4]).max()) == 0.0


def test_pod_term_matches_the_formula() -> None:
    info = StepInfo(step=1, old_classes=3, num_outputs=5, has_teacher=True)
    cfg = PODConfig(weight=0.01, logits_weight=0.0005)
    stages_s, stages_t = [_rand(2, 4, 8, 8, seed=i) for i in range(2)], [_rand(2, 4, 8, 8, seed=10 + i) for i in range(2)]
    dec_s, dec_t = _rand(2, 6, 8, 8, seed=20), _rand(2, 6, 8, 8, seed=21)
    log_s, log_t = _rand(2, 5, 8, 8, seed=30), _rand(2, 3, 8, 8, seed=31)
    ctx = StepContext(x=torch.zeros(2, 3, 8, 8), target=torch.zeros(2, 8, 8, dtype=torch.long), iteration=0,
                      student=SegOutputs(stages=stages_s, decoded=dec_s, head_logits=log_s),
                      teacher=SegOutputs(stages=stages_t, decoded=dec_t, head_logits=log_t))
    got = float(PODTerm(cfg, info)(ctx)["pod"])
    collapsed = torch.cat([log_s[:, :1] + log_s[:, 3:].sum(1, keepdim=True), log_s[:, 1:3]], 1)
    layers = [0.01 * _distance(a, b, [1, 2, 4]) for a, b in [*zip(stages_s, stages_t, strict=True), (dec_s, dec_t)]]
    layers.append(0.0005 * _distance(collapsed, log_t, [1, 2, 4]))
    ref = math.sqrt(5 / 2) * sum(layers) / len(layers)
    assert abs(got - ref) < 1e-6 * max(1.0, ref)
    same = StepContext(x=ctx.x, target=ctx.target, iteration=0, student=ctx.teacher, teacher=ctx.teacher)
    same.student = SegOutputs(stages=stages_t, decoded=dec_t, head_logits=torch.cat([log_t, torch.zeros(2, 2, 8, 8)], 1))
    assert float(PODTerm(cfg, info)(same)["pod"]) == 0.0


def test_collapse_sums_new_outputs_into_background() -> None:
    z = _rand(1, 5, 2, 2)
    c = collapse_new(z, 3)
    assert torch.allclose(c[:, 0], z[:, 0] + z[:, 3] + z[:, 4]) and torch.equal(c[:, 1:], z[:, 1:3])


def test_pseudo_labels_match_the_per_pixel_rule_and_only_replace_background() -> None:
    q = _rand(2, 3, 6, 6, seed=3) * 3
    y = torch.randint(0, 5, (2, 6, 6), generator=torch.Generator().manual_seed(4))
    y[0, 0, 0] = 255
    thr = torch.tensor([0.5, 0.3, 0.7])
    new, bg, kept = pseudo_label(y, q, thr, 3)
    for b in range(2):
        for i in range(6):
            for j in range(6):
                label = int(y[b, i, j])
                p = torch.softmax(q[b, :, i, j].double(), 0)
                u = float(-(p * p.log()).sum()) / math.log(3)
                c = int(p.argmax())
                want = (c if u < float(thr[c]) else 255) if label < 3 else label
                assert int(new[b, i, j]) == want
    assert torch.equal(new[y >= 3], y[y >= 3])  # labelled new classes and ignored pixels are never touched
    assert bool(((new != y) <= (y < 3)).all())


def test_entropy_is_normalised_and_medians_follow_the_histogram() -> None:
    q = _rand(4, 3, 16, 16, seed=5) * 2
    u = normalised_entropy(q)
    assert float(u.min()) >= 0.0 and float(u.max()) <= 1.0 + 1e-6
    y = torch.zeros(4, 16, 16, dtype=torch.long)
    hist = entropy_histogram(q, y, 3)
    med = histogram_medians(hist, 0.0)
    pred = q.argmax(1)
    for c in range(3):
        values = u[pred == c]
        if values.numel() > 10:
            assert abs(float(med[c]) - float(values.median())) <= 1.5 / BINS
    assert torch.equal(histogram_medians(torch.zeros(2, BINS), 0.25), torch.tensor([0.25, 0.25]))
