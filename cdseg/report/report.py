"""`build_report` (metrics dicts -> report folder) and `run_report` (inputs from URIs, staged output)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from cdseg import storage as store
from cdseg.errors import DataError
from cdseg.report import plots
from cdseg.report.config import ReportConfig
from cdseg.report.tables import Table, class_iou_table, forgetting_table, group_runs, summary_table

log = logging.getLogger(__name__)


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{100 * value:.2f}"
    return str(value)


def table_markdown(t: Table) -> str:
    """A `Table` as a Markdown section."""
    lines = [f"## {t.title}", "", "| " + " | ".join(t.headers) + " |",
             "| " + " | ".join("---:" if i >= 2 else "---" for i in range(len(t.headers))) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in t.rows]
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines) + "\n"


def table_html(t: Table) -> str:
    """A `Table` as an HTML section."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    body = "".join("<tr>" + "".join(
        f'<td class="{"num" if isinstance(v, (int, float)) or v is None else "txt"}">{html.escape(_cell(v))}</td>'
        for v in row) + "</tr>\n" for row in t.rows)
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    return f"<h2>{html.escape(t.title)}</h2>\n<table><tr>{head}</tr>\n{body}</table>\n{note}\n"


def build_report(metrics: Sequence[dict[str, Any]], out_dir: str | Path, title: str = "cdseg report") -> Path:
    """Write report.md, report.html (self-contained), report.json and plots/*.png into `out_dir`; returns it."""
    out = Path(out_dir)
    if not metrics:
        raise DataError("no evaluations to report on; pass metrics.json files or folders holding them")
    runs = group_runs(metrics)
    tables = [summary_table(runs)]
    tables += [t for (task, method), steps in runs.items() if (t := forgetting_table(task, method, steps)) is not None]
    tables.append(class_iou_table(runs))
    (out / "plots").mkdir(parents=True, exist_ok=True)
    figures = {"miou_per_step.png": "mIoU per step and method", "class_iou.png": "IoU per class and step"}
    plots.miou_per_step(out / "plots" / "miou_per_step.png", runs)
    plots.class_heatmap(out / "plots" / "class_iou.png", runs)
    if plots.forgetting_bars(out / "plots" / "forgetting.png", runs):
        figures["forgetting.png"] = "forgetting per old class at the last step"
    sources = [_source_line(m) for m in metrics]
    intro = (f"{len(metrics)} evaluations of {len(runs)} run(s). Whole test scenes; background is excluded from "
             "every mean and forgetting average. Generated " + dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") + ".")
    md = [f"# {title}", "", intro, ""] + [table_markdown(t) for t in tables]
    md += ["## Plots", ""] + [f"![{cap}](plots/{name})" for name, cap in figures.items()] + ["", "## Inputs", "", *sources, ""]
    (out / "report.md").write_text("\n".join(md))
    body = [f"<p>{html.escape(intro)}</p>"] + [table_html(t) for t in tables] + ["<h2>Plots</h2>"]
    for name, cap in figures.items():
        data = base64.b64encode((out / "plots" / name).read_bytes()).decode("ascii")
        body.append(f'<figure><img alt="{html.escape(cap)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(cap)}</figcaption></figure>')
    body.append("<h2>Inputs</h2><ul>" + "".join(f"<li>{html.escape(s[2:])}</li>" for s in sources) + "</ul>")
    template = Template(resources.files("cdseg.report").joinpath("template.html").read_text())
    (out / "report.html").write_text(template.substitute(title=html.escape(title), body="\n".join(body)))
    (out / "report.json").write_text(json.dumps(
        {"title": title, "tables": [{"title": t.title, "headers": t.headers, "rows": t.rows, "note": t.note} for t in tables]},
        indent=2) + "\n")
    return out


def _candidates(uri: str) -> list[str]:
    """metrics.json URIs behind one input: the file itself, an eval folder, or a root searched recursively."""
    if uri.endswith(".json"):
        if not store.exists(uri):
            raise DataError(f"{uri} does not exist; pass an existing metrics.json")
        return [uri]
    direct = store.join(uri, "metrics.json")
    if store.exists(direct):
        return [direct]
    if not store.is_remote(uri) and not store.exists(uri):  # a remote prefix "exists" only when committed
        raise DataError(f"{uri} does not exist; pass metrics.json files, eval folders or a run folder")
    if not store.is_remote(uri):
        root = store.local_path(uri)
        found = [str(p) for p in sorted(root.rglob("metrics.json"))
                 if not any(part.startswith(".") for part in p.relative_to(root).parts)]  # skip staging folders
    else:
        found = _search_remote(uri, depth=6)
    if not found:
        raise DataError(f"no metrics.json under {uri}; run cdseg test first or pass the eval folders")
    return found


def _search_remote(uri: str, depth: int) -> list[str]:
    """metrics.json objects under a remote prefix, at most `depth` levels down."""
    names = store.list_dir(uri)
    if "metrics.json" in names:
        return [store.join(uri, "metrics.json")]
    if depth == 0:
        return []
    return [f for name in names if not name.startswith((".", "_")) and "." not in name
            for f in _search_remote(store.join(uri, name), depth - 1)]


def _source_line(m: dict[str, Any]) -> str:
    """Where an evaluation came from: its metrics.json when it was read from one (`_source`; a pipeline's report
    gets the metrics through its history and has none) and the checkpoint it scored, with the checksum."""
    ckpt = m.get("checkpoint") or {}
    where = f"metrics `{m['_source']}`, " if m.get("_source") else ""
    return (f"- task {m['task']}, method {m.get('method')}, step {m['step']}: {where}checkpoint "
            f"`{ckpt.get('uri', '?')}` (sha256 {str(ckpt.get('sha256'))[:12]})")


def load_metrics(inputs: Sequence[str]) -> list[dict[str, Any]]:
    """Read every evaluation named by `inputs` (deduplicated), each tagged with its `_source`."""
    seen: set[str] = set()
    out = []
    for uri in inputs:
        for candidate in _candidates(uri):
            if candidate in seen:
                continue
            seen.add(candidate)
            try:
                m = json.loads(store.read_text(candidate))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DataError(f"{candidate} is not valid JSON ({exc}); re-run cdseg test for it") from exc
            if not isinstance(m, dict) or m.get("kind") != "cdseg-eval":
                if uri.endswith(".json"):
                    raise DataError(f"{candidate} is not a cdseg evaluation (metrics.json of cdseg test)")
                continue  # other JSON files named metrics.json under a root are not ours
            m["_source"] = candidate
            out.append(m)
    if not out:
        raise DataError(f"no cdseg evaluations found in {list(inputs)}; run cdseg test first")
    return out


def run_report(cfg: ReportConfig) -> str:
    """Build the report from `cfg.inputs` into `cfg.output` (replaced atomically); returns its URI."""
    store.configure(cfg.storage)
    metrics = load_metrics(cfg.inputs)
    with store.staged_dir(cfg.output, replace=True) as tmp:
        build_report(metrics, tmp, cfg.title)
        from cdseg.config import dump_config

        (Path(tmp) / "config.yaml").write_text(dump_config(cfg))
    log.info("report of %d evaluations -> %s", len(metrics), cfg.output)
    return cfg.output
