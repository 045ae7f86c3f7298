"""What an evaluation writes: metrics.json, a Markdown table, the confusion-matrix image, scene previews and
georeferenced prediction GeoTIFFs. Every writer takes a local folder (the staged output)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

IGNORE_COLOUR = (128, 128, 128)
_FALLBACK = ((141, 211, 199), (190, 186, 218), (251, 128, 114), (128, 177, 211), (253, 180, 98), (179, 222, 105))


def class_colours(class_names: Sequence[str], palette: Mapping[str, Sequence[int]] | None = None
                  ) -> list[tuple[int, int, int]]:
    """RGB of each model output index: its class's colour in `palette` (the dataset's, from its manifest), black
    for MiB's background, a fixed fallback colour otherwise."""
    known = dict(palette or {})
    out: list[tuple[int, int, int]] = []
    for i, name in enumerate(class_names):
        if name in known:
            r, g, b = (int(v) for v in known[name])
            out.append((r, g, b))
        elif name == "background":
            out.append((0, 0, 0))
        else:
            out.append(_FALLBACK[i % len(_FALLBACK)])
    return out


def colourise(indices: np.ndarray, colours: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """H x W class indices (255 = ignore, grey) -> H x W x 3 uint8."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(colours)] = np.asarray(colours, dtype=np.uint8)
    table[255] = IGNORE_COLOUR
    return table[indices]


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Pretty, stable JSON (NaN is never written: undefined scores are null)."""
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")


def _fmt(value: float | None, scale: float = 100.0) -> str:
    return "n/a" if value is None else f"{value * scale:.2f}"


def markdown_table(metrics: dict[str, Any]) -> str:
    """Human-readable summary: old / new / all means, then one row per class (scores in %)."""
    lines = [f"# Evaluation: task {metrics['task']}, step {metrics['step']}, method {metrics.get('method') or 'n/a'}", "",
             f"Checkpoint sha256 `{str(metrics['checkpoint'].get('sha256'))[:16]}`, split `{metrics['dataset']['split']}`, "
             f"{len(metrics['dataset']['scenes'])} whole scenes, {metrics['pixels']} labelled pixels, "
             f"window {metrics['options']['window']} / overlap {metrics['options']['overlap']}, "
             f"TTA {'on (D4, 8x)' if metrics['options']['tta'] else 'off'}.", "",
             "| classes | mIoU % | mF1 % | n |", "| --- | ---: | ---: | ---: |"]
    for group in ("old", "new", "all"):
        m = metrics["mean"][group]
        lines.append(f"| {group} | {_fmt(m['miou'])} | {_fmt(m['mf1'])} | {len(m['classes'])} |")
    lines += ["", f"Pixel accuracy: {_fmt(metrics['pixel_accuracy'])} %. Background is excluded from the means "
              "(reported per class below).", "",
              "| # | class | group | IoU % | F1 % | precision % | recall % | true pixels |",
              "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, c in metrics["per_class"].items():
        lines.append(f"| {c['index']} | {name} | {c['group']} | {_fmt(c['iou'])} | {_fmt(c['f1'])} | "
                     f"{_fmt(c['precision'])} | {_fmt(c['recall'])} | {c['support']} |")
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def confusion_png(path: Path, cm: np.ndarray, class_names: Sequence[str], title: str = "") -> None:
    """Row-normalised confusion matrix (rows = true class) with class names and percentages."""
    plt = _pyplot()
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.1 * k + 2.5, 1.0 * k + 2.0), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            if rows[i, 0] > 0:
                ax.text(j, i, f"{100 * norm[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _rgb_view(image: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """C x H x W scene -> H x W x 3 uint8 for display (R, G, B bands if present, else the first three)."""
    idx = [bands.index(b) for b in ("R", "G", "B")] if all(b in bands for b in ("R", "G", "B")) else [0, 1, 2]
    idx = [min(i, image.shape[0] - 1) for i in idx]
    rgb = np.moveaxis(np.asarray(image)[idx], 0, -1)
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb * (255.0 if rgb.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return rgb


def preview_png(path: Path, image: np.ndarray, bands: Sequence[str], target: np.ndarray, pred: np.ndarray,
                class_names: Sequence[str], title: str = "", max_side: int = 1024,
                palette: Mapping[str, Sequence[int]] | None = None) -> None:
    """Input | ground truth | prediction side by side, with a class legend (large scenes are subsampled)."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    step = max(1, int(np.ceil(max(pred.shape) / max_side)))
    colours = class_colours(class_names, palette)
    panels = [(_rgb_view(image, bands)[::step, ::step], "input"),
              (colourise(target[::step, ::step], colours), "ground truth (grey: ignored)"),
              (colourise(pred[::step, ::step].astype(np.uint8), colours), "prediction")]
    h, w = panels[0][0].shape[:2]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.0 * h / max(w, 1) + 1.2), dpi=100)
    for ax, (arr, label) in zip(axes, panels, strict=True):
        ax.imshow(arr, interpolation="nearest")
        ax.set_title(label)
        ax.axis("off")
    handles = [Patch(facecolor=(c[0] / 255, c[1] / 255, c[2] / 255), edgecolor="black", label=n) for n, c in zip(class_names, colours, strict=True)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def prediction_geotiff(path: Path, pred: np.ndarray, crs: Any, transform: Any, class_names: Sequence[str],
                       palette: Mapping[str, Sequence[int]] | None = None) -> None:
    """Write H x W class indices as a uint8 GeoTIFF with the scene's CRS/transform and a colour table."""
    import rasterio

    pred = np.asarray(pred)
    if pred.max(initial=0) > 254:
        raise ValueError("class indices must be < 255 (255 is reserved for ignore/nodata)")
    profile = {"driver": "GTiff", "height": pred.shape[0], "width": pred.shape[1], "count": 1, "dtype": "uint8",
               "crs": crs, "transform": transform, "compress": "deflate", "tiled": pred.shape[0] >= 256 and pred.shape[1] >= 256,
               "photometric": "palette", "nodata": 255}
    if profile["tiled"]:
        profile.update(blockxsize=256, blockysize=256)
    colours = class_colours(class_names, palette)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pred.astype(np.uint8), 1)
        dst.write_colormap(1, {i: (*c, 255) for i, c in enumerate(colours)})
        dst.set_band_description(1, "predicted class index")
        dst.update_tags(1, **{f"class_{i}": name for i, name in enumerate(class_names)})
