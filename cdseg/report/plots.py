"""Report figures as PNG: mIoU per step per method, a per-class IoU heatmap, per-class forgetting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cdseg.report.tables import class_order, forgetting, iou


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _pct(v: float | None) -> float:
    return np.nan if v is None else 100.0 * v


def miou_per_step(path: Path, runs: dict[tuple[str, str], dict[int, dict[str, Any]]]) -> None:
    """Three panels (old, new, all classes): mIoU against step, one line per (task, method)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100, sharey=True)
    for ax, group in zip(axes, ("old", "new", "all"), strict=True):
        for (task, method), steps in runs.items():
            xs = list(steps)
            ax.plot(xs, [_pct(steps[s]["mean"][group]["miou"]) for s in xs], marker="o", label=f"{method} ({task})")
        ax.set_title(f"{group} classes")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted({s for steps in runs.values() for s in steps}))
    axes[0].set_ylabel("mIoU % (background excluded)")
    axes[0].set_ylim(0, 100)
    axes[-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def class_heatmap(path: Path, runs: dict[tuple[str, str], dict[int, dict[str, Any]]]) -> None:
    """Rows (method, step), columns classes, cells IoU % (blank where the class is not seen yet)."""
    plt = _pyplot()
    names = class_order(runs)
    labels = [f"{method} ({task}) s{step}" for (task, method), steps in runs.items() for step in steps]
    data = np.array([[_pct(iou(m, c)) for c in names] for steps in runs.values() for m in steps.values()], dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 3, 0.45 * len(labels) + 2), dpi=100)
    im = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if not np.isnan(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="black" if data[i, j] > 60 else "white")
    fig.colorbar(im, ax=ax, label="IoU %")
    ax.set_title("IoU per class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def forgetting_bars(path: Path, runs: dict[tuple[str, str], dict[int, dict[str, Any]]]) -> bool:
    """Grouped bars: per old class at each run's last step, IoU when it was learned minus IoU now (points),
    one bar per (task, method). Returns False (and writes nothing) when no run has old classes yet."""
    drops = {key: forgetting(steps, max(steps)) for key, steps in runs.items()}
    drops = {key: d for key, d in drops.items() if d}
    if not drops:
        return False
    names = [c for c in class_order(runs) if any(c in d for d in drops.values())]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(names) * max(1, len(drops)) / 2 + 3, 3.8), dpi=100)
    width = 0.8 / len(drops)
    for i, ((task, method), d) in enumerate(drops.items()):
        xs = np.arange(len(names)) + (i - (len(drops) - 1) / 2) * width
        ax.bar(xs, [_pct(d.get(c)) for c in names], width=width, label=f"{method} ({task}, step {max(runs[(task, method)])})")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax.set_ylabel("forgetting (IoU points)")
    ax.set_title("Forgetting per old class at the last step (IoU when learned - IoU now; higher is worse)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
