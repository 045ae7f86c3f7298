"""Confusion matrix and the scores derived from it."""

from __future__ import annotations

import math

import torch

from cdseg.train.validate import confusion, scores


def test_confusion_ignores_255() -> None:
    target = torch.tensor([[0, 1, 2, 255]])
    pred = torch.tensor([[0, 2, 2, 1]])
    cm = confusion(pred, target, 3)
    assert cm.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]


def test_scores_old_new_and_absent_classes() -> None:
    cm = torch.tensor([[4, 0, 0, 0], [0, 2, 2, 0], [0, 0, 2, 0], [0, 0, 0, 0]])
    s = scores(cm, old=[1], new=[2, 3])
    assert math.isclose(s["iou"][1], 0.5) and math.isclose(s["iou"][2], 0.5)
    assert s["iou"][3] is None  # absent from target and prediction: not averaged
    assert math.isclose(s["miou"], (1 + 0.5 + 0.5) / 3)
    assert math.isclose(s["miou_old"], 0.5) and math.isclose(s["miou_new"], 0.5)
    assert math.isclose(s["acc"], 8 / 10) and s["f1"] == s["acc"]
