"""Scores from one confusion matrix, checked against an independent per-pixel loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdseg.evaluate.confusion import confusion_matrix, summarise


def _loop_scores(target: np.ndarray, pred: np.ndarray, k: int) -> dict[str, list[float | None]]:
    """Per class, counting pixel by pixel in plain Python (no bincount, no matrix)."""
    tp = [0] * k
    fp = [0] * k
    fn = [0] * k
    for t, p in zip(target.ravel().tolist(), pred.ravel().tolist(), strict=True):
        if t == 255:
            continue
        if t == p:
            tp[t] += 1
        else:
            fp[p] += 1
            fn[t] += 1
    def div(a: float, b: float) -> float | None:
        return None if b == 0 else a / b
    return {"iou": [div(tp[c], tp[c] + fp[c] + fn[c]) for c in range(k)],
            "f1": [div(2 * tp[c], 2 * tp[c] + fp[c] + fn[c]) for c in range(k)],
            "precision": [div(tp[c], tp[c] + fp[c]) for c in range(k)],
            "recall": [div(tp[c], tp[c] + fn[c]) for c in range(k)],
            "acc": [div(sum(tp), sum(tp) + sum(fn))]}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_an_independent_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 6
    target = rng.integers(0, k, size=(37, 41))
    target[rng.random(target.shape) < 0.1] = 255
    target[target == 4] = 3  # class 4 never in the ground truth: IoU 0 where predicted, recall undefined
    pred = rng.integers(0, k, size=target.shape)
    pred[pred == 5] = 0  # class 5 never predicted
    cm = confusion_matrix(torch.from_numpy(target), torch.from_numpy(pred), k).numpy()
    assert cm.dtype == np.int64
    assert cm.sum() == int((target != 255).sum())  # every labelled pixel counted exactly once
    names = ["background", "a", "b", "c", "d", "e"]
    out = summarise(cm, names, old=["a", "b"], new=["c", "d", "e"])
    ref = _loop_scores(target, pred, k)
    for metric in ("iou", "f1", "precision", "recall"):
        got = [out["per_class"][n][metric] for n in names]
        for g, r in zip(got, ref[metric], strict=True):
            assert (g is None and r is None) or g == pytest.approx(r, abs=1e-12)
    assert out["pixel_accuracy"] == pytest.approx(ref["acc"][0])
    old = [ref["iou"][1], ref["iou"][2]]
    new = [v for v in ref["iou"][3:] if v is not None]
    assert out["mean"]["old"]["miou"] == pytest.approx(np.mean(old))
    assert out["mean"]["new"]["miou"] == pytest.approx(np.mean(new))
    assert out["mean"]["all"]["miou"] == pytest.approx(np.mean(old + new))  # background excluded
    assert out["background_in_averages"] is False
    assert out["per_class"]["d"]["recall"] is None and out["per_class"]["d"]["iou"] == 0.0


def test_undefined_class_is_null_and_left_out_of_means() -> None:
    target = torch.tensor([[1, 1, 2, 255]])
    pred = torch.tensor([[1, 2, 2, 0]])
    out = summarise(confusion_matrix(target, pred, 4).numpy(), ["background", "x", "y", "z"], old=[], new=["x", "y", "z"])
    assert out["per_class"]["z"]["iou"] is None
    assert out["mean"]["new"]["miou"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert out["mean"]["old"]["miou"] is None  # step 0 has no old classes
    assert out["pixels"] == 3


def test_out_of_range_targets_are_an_error_not_dropped() -> None:
    with pytest.raises(ValueError, match="target values"):
        confusion_matrix(torch.tensor([7]), torch.tensor([0]), 4)
