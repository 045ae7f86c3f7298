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
    # old AND new classes only: background's IoU of 1.0 is scored per class, not averaged in
    assert math.isclose(s["iou"][0], 1.0)
    assert math.isclose(s["miou"], (0.5 + 0.5) / 2)
    assert math.isclose(s["miou_old"], 0.5) and math.isclose(s["miou_new"], 0.5)
    assert math.isclose(s["acc"], 8 / 10) and s["f1"] == s["acc"]


def test_scores_without_groups_average_every_present_class() -> None:
    cm = torch.tensor([[4, 0, 0], [0, 2, 2], [0, 0, 2]])
    assert math.isclose(scores(cm)["miou"], (1 + 0.5 + 0.5) / 3)


def test_validation_uses_the_logits_only_path() -> None:
    from cdseg.models import ModelConfig, build_segmenter
    from cdseg.train.distributed import DistInfo
    from cdseg.train.validate import evaluate

    torch.manual_seed(0)
    model = build_segmenter(ModelConfig(encoder="test_resnet", pretrained=False, norm="bn"), [3, 2], ["R", "G", "B"],
                            {b: {"mean": 0.3, "std": 0.2} for b in "RGB"})
    batches = [{"image": torch.rand(2, 3, 32, 32), "mask": torch.randint(0, 5, (2, 32, 32))}]
    forwards: list[int] = []
    handle = model.register_forward_hook(lambda m, i, o: forwards.append(1))
    cm, loss, count = evaluate(model, batches, 5, DistInfo(), torch.no_grad)
    assert forwards == [] and int(cm.sum()) == count == 2 * 32 * 32
    handle.remove()
    model.eval()
    with torch.no_grad():
        logits = model(batches[0]["image"])[0]
    expected = torch.nn.functional.cross_entropy(logits, batches[0]["mask"], reduction="sum")
    assert math.isclose(loss, float(expected), rel_tol=1e-5)
