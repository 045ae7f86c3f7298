"""The experiment report's forgetting figures from hand-made rows: per-class drops, their mean, and the paired
differences of the drops over the seeds both methods finished."""

from __future__ import annotations

from typing import Any

import pytest

from cdseg.experiment.report import MEAN, forgetting, forgetting_by_seed, forgetting_comparisons, markdown


def _row(name: str, seed: int, step: int, iou: dict[str, float]) -> dict[str, Any]:
    new = ["building", "tree"] if step == 0 else ["car"]
    old = [] if step == 0 else ["building", "tree"]
    return {"task": "21", "name": name, "seed": seed, "step": step, "step0_from": name, "split": "test",
            "old": None, "new": 0.5, "all": 0.5, "new_classes": new, "old_classes": old, "iou": iou}


# IoU of building and tree at step 0, then at step 1 (with car): per seed and method
RUNS = {
    ("a", 0): ({"building": 0.80, "tree": 0.60}, {"building": 0.70, "tree": 0.60, "car": 0.1}),
    ("a", 1): ({"building": 0.90, "tree": 0.50}, {"building": 0.70, "tree": 0.40, "car": 0.1}),
    ("a", 2): ({"building": 0.85, "tree": 0.55}, {"building": 0.85, "tree": 0.35, "car": 0.1}),
    ("b", 0): ({"building": 0.90, "tree": 0.60}, {"building": 0.85, "tree": 0.60, "car": 0.2}),
    ("b", 1): ({"building": 0.80, "tree": 0.50}, {"building": 0.75, "tree": 0.50, "car": 0.2}),
    # b seed 2 did not finish step 1: no drop, and the pairs use seeds 0 and 1 only
    ("b", 2): ({"building": 0.85, "tree": 0.55}, None),
}


@pytest.fixture
def rows() -> list[dict[str, Any]]:
    out = []
    for (name, seed), (step0, step1) in RUNS.items():
        out.append(_row(name, seed, 0, step0))
        if step1 is not None:
            out.append(_row(name, seed, 1, step1))
    return out


def test_drops_per_seed_and_their_mean(rows: list[dict[str, Any]]) -> None:
    drops = forgetting_by_seed(rows)
    assert drops[("21", "a", "building")] == pytest.approx({0: 0.10, 1: 0.20, 2: 0.0})
    assert drops[("21", "a", "tree")] == pytest.approx({0: 0.0, 1: 0.10, 2: 0.20})
    assert drops[("21", "a", MEAN)] == pytest.approx({0: 0.05, 1: 0.15, 2: 0.10})
    # the unfinished seed ends at step 0: it has no old class, so no drop
    assert drops[("21", "b", "building")] == pytest.approx({0: 0.05, 1: 0.05})
    assert ("21", "a", "car") not in drops  # a class learned at the last step is not forgotten yet
    assert forgetting(rows, 0.95)[("21", "a", MEAN)].mean == pytest.approx(0.10)
    assert forgetting(rows, 0.95, drops) == forgetting(rows, 0.95)  # drops derived once, handed in: the same
    assert forgetting_comparisons(rows, ["a", "b"], 0.95, drops) == forgetting_comparisons(rows, ["a", "b"], 0.95)


def test_paired_drops_use_the_seeds_both_finished(rows: list[dict[str, Any]]) -> None:
    pairs = {c["class"]: c for c in forgetting_comparisons(rows, ["a", "b"], 0.95)}
    assert list(pairs) == ["building", "tree", MEAN]  # classes sorted, the mean last
    building = pairs["building"]
    assert (building["a"], building["b"], building["n"]) == ("a", "b", 2)
    assert building["paired"].diff.mean == pytest.approx((0.05 + 0.15) / 2)
    assert (building["paired"].wins, building["paired"].losses) == (2, 0)
    # mean drops: a 0.05, 0.15; b 0.025, 0.025
    assert pairs[MEAN]["paired"].diff.mean == pytest.approx((0.025 + 0.125) / 2)


def test_the_page_has_the_paired_forgetting_table(rows: list[dict[str, Any]]) -> None:
    page = markdown(rows, ["a", "b"], 0.95)
    assert "### Paired forgetting (a's drop - b's drop, same seed), 95% interval" in page
    assert "| a - b | building | 2 | 10.0 | " in page
    assert f"| a | {MEAN} | 3 | 10.0 ± 5.0 " in page
