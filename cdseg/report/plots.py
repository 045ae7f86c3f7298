"""Report figures as PNG: mIoU per step per method, and a per-class IoU heatmap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cdseg.report.tables import class_order, iou


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
