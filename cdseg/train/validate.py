"""Validation: a confusion matrix summed over ranks (never gathered logits), then scores from it.

Validation labels follow the task's `val` LUT (every seen class fully labelled), so old AND new
classes are scored; the original scored new-class pixels only (seed-spec §9, bug 2).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from cdseg.models.segmenter import predict_logits
from cdseg.train import distributed as D


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """num_classes x num_classes int64 counts, rows = target, columns = prediction (on pred's device)."""
    keep = target != ignore_index
    idx = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(cm: torch.Tensor, old: Sequence[int] = (), new: Sequence[int] = ()) -> dict[str, Any]:
    """mIoU over the old and new classes, micro-F1 (= pixel accuracy), macro-F1, per class, old/new.

    `miou` averages the classes of `old` and `new` present in target or prediction; background (and any
    class outside both) is scored per class but left out of the mean, as the test-time "all" group is.
    With neither given, every present class counts.
    """
    cm = cm.double().cpu()
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    union = tp + fp + fn
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    f1 = torch.where(present, 2 * tp / (2 * tp + fp + fn).clamp(min=1), torch.full_like(tp, float("nan")))
    total = cm.sum()

    def _mean(values: torch.Tensor, classes: Sequence[int] | None = None) -> float:
        sel = values if classes is None else values[list(classes)] if len(classes) else values[:0]
        sel = sel[~sel.isnan()]
        return float(sel.mean()) if sel.numel() else float("nan")

    scored = sorted(set(old) | set(new))
    return {
        "miou": _mean(iou, scored) if scored else _mean(iou),
        "f1": float(tp.sum() / total) if total > 0 else float("nan"),
        "macro_f1": _mean(f1),
        "acc": float(tp.sum() / total) if total > 0 else float("nan"),
        "miou_old": _mean(iou, old),
        "miou_new": _mean(iou, new),
        "iou": [None if v != v else float(v) for v in iou.tolist()],
        "class_f1": [None if v != v else float(v) for v in f1.tolist()],
    }


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict[str, Any]], num_classes: int, info: D.DistInfo,
             autocast: Any, channels_last: bool = False, limit: int = 0) -> tuple[torch.Tensor, float, float]:
    """Run `model` (unwrapped) in eval mode over this rank's batches; returns (summed cm, CE sum, pixel count)."""
    was_training = model.training
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=info.device)
    loss = torch.zeros(2, dtype=torch.float64, device=info.device)
    ce = nn.CrossEntropyLoss(ignore_index=255, reduction="sum")
    for i, batch in enumerate(batches):
        if limit and i >= limit:
            break
        x = batch["image"].to(info.device, non_blocking=True)
        y = batch["mask"].to(info.device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = predict_logits(model, x)  # no full-resolution decoder features
        logits = logits.float()
        cm += confusion(logits.argmax(1), y, num_classes)
        loss[0] += ce(logits, y).double()
        loss[1] += (y != 255).sum()
    model.train(was_training)
    D.all_reduce_sum(cm, info)
    D.all_reduce_sum(loss, info)
    return cm, float(loss[0]), float(loss[1])
