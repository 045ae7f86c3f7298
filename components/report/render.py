"""Publish a `cdseg report` folder as KFP artifacts (imports no kfp): the folder, one HTML page, Markdown."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path
from typing import Any

_IMG = re.compile(r"""(<img\b[^>]*?\bsrc=)(["'])(?!data:|https?:)([^"']+)\2""", re.IGNORECASE)


def inline_images(page: str, folder: Path) -> str:
    """Replace relative `<img src=...>` by data URIs, so the page stands alone in the KFP UI."""

    def repl(m: re.Match[str]) -> str:
        path = folder / m.group(3)
        if not path.is_file():
            return m.group(0)
        mime = "image/svg+xml" if path.suffix == ".svg" else f"image/{path.suffix.lstrip('.').lower() or 'png'}"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"{m.group(1)}{m.group(2)}data:{mime};base64,{data}{m.group(2)}"

    return _IMG.sub(repl, page)


def publish(folder: str, metrics_list: list[dict[str, Any]], *, report_dir: str, html_path: str, md_path: str) -> None:
    """Copy the report folder (plus the metrics it was built from, `metrics/step-<k>.json`) and write its
    HTML (images inlined) and Markdown artifacts."""
    src = Path(folder)
    shutil.copytree(src, report_dir, dirs_exist_ok=True)
    kept = Path(report_dir) / "metrics"
    kept.mkdir(parents=True, exist_ok=True)
    for m in metrics_list:
        (kept / f"step-{m.get('step')}.json").write_text(json.dumps(m, indent=2) + "\n")
    pages = sorted(src.rglob("*.html"))
    page = inline_images(pages[0].read_text(), pages[0].parent) if pages else "<p>no HTML report was written</p>"
    Path(html_path).write_text(page)
    mds = sorted(src.rglob("*.md"))
    Path(md_path).write_text(mds[0].read_text() if mds else "")


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100.0 * float(value):.2f}"


def step_table(metrics_list: list[dict[str, Any]]) -> str:
    """Markdown: one row per step, old / new / all mIoU (%)."""
    lines = ["| method | step | old mIoU % | new mIoU % | all mIoU % |", "| --- | ---: | ---: | ---: | ---: |"]
    for m in metrics_list:
        mean = m.get("mean", {})
        cells = [_pct(mean.get(g, {}).get("miou")) if mean.get(g, {}).get("classes") else "-" for g in ("old", "new", "all")]
        lines.append(f"| {m.get('method') or '-'} | {m.get('step')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def history_steps(history: str) -> list[Path]:
    """The `step_<k>` folders of an evaluate history, in step order."""
    steps = [p for p in Path(history).glob("step_*") if (p / "metrics.json").is_file()]
    return sorted(steps, key=lambda p: int(p.name.removeprefix("step_")))
