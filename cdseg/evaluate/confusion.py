"""The confusion matrix and every score derived from it (per class, old / new / all, pixel accuracy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

IGNORE = 255

#: How macro averages are formed; written into metrics.json and the docs.
AVERAGING = ("macro mean over the classes of each group (old, new, all seen); background (index 0) is excluded "
             "from every average and reported per class only; a class with neither ground-truth nor predicted "
             "pixels has undefined (null) scores and is left out of the averages")


def confusion_matrix(target: torch.Tensor, pred: torch.Tensor, num_classes: int, ignore: int = IGNORE) -> torch.Tensor:
    """int64 K x K counts, rows = true class, columns = predicted class; `ignore` targets are dropped.

    Targets outside 0..K-1 (other than `ignore`) are an error, never silently dropped.
    """
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).long().to(target.device)
    keep = target != ignore
    target, pred = target[keep], pred[keep]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"target values must be in 0..{num_classes - 1} or {ignore}, got {int(target.min())}..{int(target.max())}")
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"predictions must be in 0..{num_classes - 1}")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).to(torch.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> list[float | None]:
    return [None if d == 0 else float(n) / float(d) for n, d in zip(num, den, strict=True)]


def per_class_scores(cm: np.ndarray) -> dict[str, list[float | None]]:
    """IoU, F1, precision, recall per class (None where the denominator is 0) and support (true pixels)."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    return {
        "iou": _ratio(tp, tp + fp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "support": [int(v) for v in cm.sum(1)],
        "predicted": [int(v) for v in cm.sum(0)],
    }


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def summarise(cm: np.ndarray, class_names: Sequence[str], old: Sequence[str], new: Sequence[str]) -> dict[str, Any]:
    """Per-class scores, macro means over old / new / all (background excluded) and pixel accuracy."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix {cm.shape} does not match {len(class_names)} class names")
    scores = per_class_scores(cm)
    index = {name: i for i, name in enumerate(class_names)}
    groups = {"old": [index[c] for c in old], "new": [index[c] for c in new]}
    groups["all"] = groups["old"] + groups["new"]
    per_class = {}
    for i, name in enumerate(class_names):
        group = "background" if i == 0 else ("old" if i in groups["old"] else "new" if i in groups["new"] else "other")
        per_class[name] = {"index": i, "group": group, **{k: v[i] for k, v in scores.items()}}
    means = {g: {"miou": _mean([scores["iou"][i] for i in idx]), "mf1": _mean([scores["f1"][i] for i in idx]),
                 "classes": [class_names[i] for i in idx]} for g, idx in groups.items()}
    total = int(cm.sum())
    return {
        "per_class": per_class,
        "mean": means,
        "pixel_accuracy": None if total == 0 else float(np.trace(cm)) / total,
        "pixels": total,
        "averaging": AVERAGING,
        "background_in_averages": False,
    }
