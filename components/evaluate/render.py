"""Turn `cdseg.evaluate.run_test`'s result into what the KFP UI shows (imports no kfp).

Metrics (old / new / all mIoU and mF1, in %), a ClassificationMetrics confusion matrix with class
names, the per-class Markdown table and an HTML page with the prediction previews.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

GROUPS = ("old", "new", "all")


def percent(value: float | None) -> float:
    """A [0, 1] score as a percentage rounded to 2 decimals; NaN-free (undefined -> 0.0 is never shown as a score)."""
    return 0.0 if value is None else round(100.0 * float(value), 2)


def find_eval_dir(output: str, result: dict[str, Any]) -> Path:
    """`<output>/step-<k>/eval/`, where `cdseg test` writes one evaluation."""
    candidate = Path(output) / f"step-{result['step']}" / "eval"
    if candidate.is_dir():
        return candidate
    found = sorted(Path(output).rglob("metrics.json"))
    if not found:
        raise FileNotFoundError(f"cdseg test wrote no metrics.json under {output}")
    return found[0].parent


def relabel(result: dict[str, Any], method: str, eval_dir: str) -> None:
    """Label the evaluation with the run's method (metrics.json too); keep the checkpoint's in `checkpoint_method`."""
    if not method or result.get("method") == method:
        return
    result["checkpoint_method"] = result.get("method")
    result["method"] = method
    path = Path(eval_dir) / "metrics.json"
    if path.is_file():
        path.write_text(json.dumps(result, indent=2) + "\n")


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Small metadata for the results artifact: task, step, method, old/new/all mIoU (%)."""
    out: dict[str, Any] = {k: result.get(k) for k in ("task", "step", "method") if result.get(k) is not None}
    for group in GROUPS:
        mean = result["mean"].get(group, {})
        if mean.get("classes"):  # step 0 has no old classes
            out[f"{group}_miou"] = percent(mean.get("miou"))
    return out


def log_metrics(result: dict[str, Any], metrics: Any) -> None:
    """Scalar metrics: `<group>_miou`, `<group>_mf1` (%) for old / new / all, and pixel accuracy."""
    for group in GROUPS:
        mean = result["mean"].get(group, {})
        if not mean.get("classes"):
            continue  # step 0 has no old classes: say nothing rather than a fake 0
        metrics.log_metric(f"{group}_miou", percent(mean.get("miou")))
        metrics.log_metric(f"{group}_mf1", percent(mean.get("mf1")))
    if result.get("pixel_accuracy") is not None:
        metrics.log_metric("pixel_accuracy", percent(result["pixel_accuracy"]))
    metrics.metadata.update({k: result[k] for k in ("task", "step", "method") if result.get(k) is not None})


def confusion_matrix(result: dict[str, Any], eval_dir: str) -> tuple[list[str], list[list[int]]] | None:
    """Class names and the confusion matrix (rows = true class), from the result or the results folder."""
    for key in ("confusion_matrix", "confusion"):
        value = result.get(key)
        if isinstance(value, dict) and "matrix" in value:
            return list(value.get("classes") or value.get("class_names") or _names(result)), _ints(value["matrix"])
        if isinstance(value, list):
            return _names(result), _ints(value)
    for name in ("confusion.json", "confusion_matrix.json"):
        path = Path(eval_dir) / name
        if path.is_file():
            value = json.loads(path.read_text())
            if isinstance(value, dict):
                return list(value.get("classes") or value.get("class_names") or _names(result)), _ints(value["matrix"])
            return _names(result), _ints(value)
    return None


def _names(result: dict[str, Any]) -> list[str]:
    per_class = result.get("per_class", {})
    return [name for name, _ in sorted(per_class.items(), key=lambda kv: kv[1].get("index", 0))]


def _ints(matrix: list[list[Any]]) -> list[list[int]]:
    return [[int(v) for v in row] for row in matrix]


def markdown(result: dict[str, Any], eval_dir: str) -> str:
    """The per-class table `cdseg test` wrote (metrics.md), else one built from the result."""
    for name in ("metrics.md", "table.md", "summary.md"):
        path = Path(eval_dir) / name
        if path.is_file():
            return path.read_text()
    from cdseg.evaluate.outputs import markdown_table

    return markdown_table(result)


def previews_html(result: dict[str, Any], eval_dir: str) -> str:
    """A self-contained page: the old/new/all summary, the confusion-matrix image and prediction previews."""
    title = f"cdseg evaluation: task {result.get('task')}, step {result.get('step')}, method {result.get('method') or 'n/a'}"
    rows = "".join(f"<tr><td>{g}</td><td>{percent(result['mean'][g].get('miou')):.2f}</td>"
                   f"<td>{percent(result['mean'][g].get('mf1')):.2f}</td></tr>"
                   for g in GROUPS if result["mean"].get(g, {}).get("classes"))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1em}img{max-width:100%;border:1px solid #ccc}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style>",
             f"</head><body><h2>{html.escape(title)}</h2>",
             f"<table><tr><th>classes</th><th>mIoU %</th><th>mF1 %</th></tr>{rows}</table>"]
    for png in sorted(Path(eval_dir).rglob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<h3>{html.escape(png.stem)}</h3><img alt='{html.escape(png.name)}' "
                     f"src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def fill(result: dict[str, Any], eval_dir: str, *, metrics: Any, confusion: Any, per_class: Any, samples: Any) -> None:
    """Write every UI artifact of one evaluation."""
    log_metrics(result, metrics)
    cm = confusion_matrix(result, eval_dir)
    if cm is not None:
        names, matrix = cm
        confusion.log_confusion_matrix(names, matrix)
    Path(per_class.path).write_text(markdown(result, eval_dir))
    Path(samples.path).write_text(previews_html(result, eval_dir))


def extend_history(earlier: str | None, eval_dir: str, history: str, result: dict[str, Any]) -> None:
    """`history` = `earlier`'s step folders plus this step's metrics.json as `step_<k>/` (k = the evaluated step)."""
    import shutil

    out = Path(history)
    out.mkdir(parents=True, exist_ok=True)
    if earlier is not None:
        for step in sorted(Path(earlier).glob("step_*")):
            if (step / "metrics.json").is_file():
                (out / step.name).mkdir(exist_ok=True)
                shutil.copyfile(step / "metrics.json", out / step.name / "metrics.json")
    mine = out / f"step_{int(result['step'])}"
    mine.mkdir(exist_ok=True)
    shutil.copyfile(Path(eval_dir) / "metrics.json", mine / "metrics.json")
