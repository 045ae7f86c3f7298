"""The numbers of a report, computed from evaluations' metrics.json: per-step means, IoU per class, forgetting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cdseg.errors import DataError


@dataclass
class Table:
    """A titled table; cells are strings, numbers (fractions shown as %) or None (n/a)."""

    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""


def run_key(m: dict[str, Any]) -> tuple[str, str]:
    """(task, method) identifies one incremental run."""
    return str(m.get("task")), str(m.get("method") or "unknown")


def group_runs(metrics: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """{(task, method): {step: metrics}}; two evaluations of the same run and step are an error."""
    runs: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for m in metrics:
        if m.get("kind") != "cdseg-eval" or "per_class" not in m:
            raise DataError(f"{m.get('_source', 'an input')} is not a cdseg evaluation (metrics.json of cdseg test)")
        steps = runs.setdefault(run_key(m), {})
        step = int(m["step"])
        if step in steps:
            raise DataError(f"two evaluations of task {m['task']} method {run_key(m)[1]} step {step}: "
                            f"{steps[step].get('_source')} and {m.get('_source')}; pass only one of them")
        steps[step] = m
    return {k: dict(sorted(v.items())) for k, v in sorted(runs.items())}


def learned_at(steps: dict[int, dict[str, Any]]) -> dict[str, int]:
    """Class name -> the step at which it was new."""
    out: dict[str, int] = {}
    for step, m in steps.items():
        for c in m.get("new_classes", []):
            out.setdefault(c, step)
    return out


def iou(m: dict[str, Any], cls: str) -> float | None:
    """IoU of `cls` in one evaluation (None when undefined or not a class of that step)."""
    entry = m["per_class"].get(cls)
    return None if entry is None else entry.get("iou")


def forgetting(steps: dict[int, dict[str, Any]], at: int) -> dict[str, float | None]:
    """Per old class of step `at`: IoU at the step it was learned minus IoU at step `at` (None if either is missing)."""
    learned = learned_at(steps)
    now = steps[at]
    out: dict[str, float | None] = {}
    for cls in now.get("old_classes", []):
        s = learned.get(cls)
        before = iou(steps[s], cls) if s is not None and s in steps else None
        after = iou(now, cls)
        out[cls] = None if before is None or after is None else before - after
    return out


def mean_defined(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values (None if there are none)."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def summary_table(runs: dict[tuple[str, str], dict[int, dict[str, Any]]]) -> Table:
    """One row per (task, method, step): old / new / all mIoU, all mF1, pixel accuracy, average forgetting."""
    table = Table("mIoU per step (background excluded)",
                  ["task", "method", "step", "old mIoU", "new mIoU", "all mIoU", "all mF1", "pixel acc.", "avg forgetting"],
                  note="Scores in %. Forgetting of a class = its IoU at the step it was learned minus its IoU now; "
                       "the average is over the step's old classes.")
    for (task, method), steps in runs.items():
        for step, m in steps.items():
            table.rows.append([task, method, step, m["mean"]["old"]["miou"], m["mean"]["new"]["miou"],
                               m["mean"]["all"]["miou"], m["mean"]["all"]["mf1"], m.get("pixel_accuracy"),
                               mean_defined(list(forgetting(steps, step).values())) if step > 0 else None])
    return table


def forgetting_table(task: str, method: str, steps: dict[int, dict[str, Any]]) -> Table | None:
    """Per old class at the run's last step: learned at, IoU then, IoU now, forgetting."""
    last = max(steps)
    if not steps[last].get("old_classes"):
        return None
    learned = learned_at(steps)
    table = Table(f"Forgetting at step {last}: task {task}, method {method}",
                  ["class", "learned at step", "IoU then", f"IoU at step {last}", "forgetting"],
                  note="Scores in %; n/a where the step the class was learned at was not evaluated.")
    values = forgetting(steps, last)
    for cls, f in values.items():
        s = learned.get(cls)
        then = iou(steps[s], cls) if s is not None and s in steps else None
        table.rows.append([cls, "n/a" if s is None else s, then, iou(steps[last], cls), f])
    table.rows.append(["average", "", "", "", mean_defined(list(values.values()))])
    return table


def class_order(runs: dict[tuple[str, str], dict[int, dict[str, Any]]]) -> list[str]:
    """Every non-background class, in order of first appearance."""
    names: list[str] = []
    for steps in runs.values():
        for m in steps.values():
            for c in m["classes"]:
                if c != "background" and c not in names:
                    names.append(c)
    return names


def class_iou_table(runs: dict[tuple[str, str], dict[int, dict[str, Any]]]) -> Table:
    """IoU per class, one row per (method, step); classes not yet seen are n/a."""
    names = class_order(runs)
    table = Table("IoU per class", ["task", "method", "step", *names], note="Scores in %.")
    for (task, method), steps in runs.items():
        for step, m in steps.items():
            table.rows.append([task, method, step, *[iou(m, c) for c in names]])
    return table
