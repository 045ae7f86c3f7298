"""A report from two fake runs (two methods, two steps) has the right numbers in the right cells."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cdseg.cli.main import main
from cdseg.report import build_report

STEPS = [["building", "tree"], ["car"]]


def fake_metrics(method: str, step: int, ious: dict[str, float]) -> dict[str, Any]:
    """A metrics.json as cdseg test writes it, with chosen IoUs (F1 = IoU here, enough for the report)."""
    old = [c for s in STEPS[:step] for c in s]
    new = STEPS[step]
    classes = ["background", *old, *new]
    per_class = {c: {"index": i, "group": "background" if i == 0 else ("old" if c in old else "new"),
                     "iou": ious.get(c), "f1": ious.get(c), "precision": None, "recall": None, "support": 10}
                 for i, c in enumerate(classes)}
    def mean(cs: list[str]) -> float | None:
        return sum(ious[c] for c in cs) / len(cs) if cs else None
    return {"kind": "cdseg-eval", "format_version": 1, "task": "t21", "step": step, "method": method,
            "checkpoint": {"uri": f"/ck/{method}/{step}", "sha256": f"{method}{step}" * 8},
            "dataset": {"uri": "/d", "split": "test", "scenes": ["a"]}, "options": {"window": 64, "overlap": 16, "tta": False},
            "classes": classes, "old_classes": old, "new_classes": new, "per_class": per_class,
            "mean": {g: {"miou": mean(cs), "mf1": mean(cs), "classes": cs} for g, cs in
                     (("old", old), ("new", new), ("all", old + new))},
            "pixel_accuracy": 0.5, "pixels": 100, "confusion_matrix": []}


RUNS = [
    fake_metrics("ft", 0, {"background": 0.9, "building": 0.8, "tree": 0.6}),
    fake_metrics("ft", 1, {"background": 0.9, "building": 0.2, "tree": 0.1, "car": 0.7}),
    fake_metrics("mib-cd", 0, {"background": 0.9, "building": 0.82, "tree": 0.64}),
    fake_metrics("mib-cd", 1, {"background": 0.9, "building": 0.72, "tree": 0.54, "car": 0.4}),
]


def _rows(report: dict[str, Any], title_start: str) -> list[list[Any]]:
    table = next(t for t in report["tables"] if t["title"].startswith(title_start))
    return table["rows"]


def test_report_numbers_land_in_the_right_cells(tmp_path: Path) -> None:
    out = build_report(list(reversed(RUNS)), tmp_path / "r")  # input order must not matter
    report = json.loads((out / "report.json").read_text())
    summary = {(r[1], r[2]): r for r in _rows(report, "mIoU per step")}
    assert summary[("ft", 1)][3:6] == pytest.approx([0.15, 0.7, (0.2 + 0.1 + 0.7) / 3])
    assert summary[("mib-cd", 1)][3:6] == pytest.approx([0.63, 0.4, (0.72 + 0.54 + 0.4) / 3])
    assert summary[("ft", 0)][3] is None and summary[("ft", 0)][8] is None  # no old classes at step 0
    assert summary[("ft", 1)][8] == pytest.approx(((0.8 - 0.2) + (0.6 - 0.1)) / 2)  # average forgetting
    assert summary[("mib-cd", 1)][8] == pytest.approx(0.1)
    ft = {r[0]: r for r in _rows(report, "Forgetting at step 1: task t21, method ft")}
    assert ft["building"][1:] == pytest.approx([0, 0.8, 0.2, 0.6])
    assert ft["tree"][4] == pytest.approx(0.5) and ft["average"][4] == pytest.approx(0.55)
    per_class = {(r[1], r[2]): r for r in _rows(report, "IoU per class")}
    assert per_class[("mib-cd", 0)][3:] == [0.82, 0.64, None]  # car not seen at step 0
    md = (out / "report.md").read_text()
    assert "| t21 | ft | 1 | 15.00 | 70.00 | 33.33 |" in md
    # metrics handed over in memory (a pipeline's history) name the checkpoint they scored, not a "?"
    assert "- task t21, method ft, step 1: checkpoint `/ck/ft/1` (sha256 ft1ft1ft1ft1)" in md and "`?`" not in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<td class=\"num\">63.00</td>" in html
    assert (out / "plots" / "miou_per_step.png").stat().st_size > 1000
    assert (out / "plots" / "forgetting.png").stat().st_size > 1000 and "plots/forgetting.png" in md


def test_no_forgetting_plot_before_any_class_is_old(tmp_path: Path) -> None:
    out = build_report([m for m in RUNS if m["step"] == 0], tmp_path / "r")
    assert not (out / "plots" / "forgetting.png").exists()
    assert "forgetting.png" not in (out / "report.md").read_text()


def test_cli_report_discovers_a_root_and_refuses_duplicates(tmp_path: Path) -> None:
    for m in RUNS:
        folder = tmp_path / "runs" / m["method"] / f"step-{m['step']}" / "eval"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(m))
    assert main(["report", "--inputs", str(tmp_path / "runs"), "--output", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").is_file()
    source = tmp_path / "runs" / "ft" / "step-1" / "eval" / "metrics.json"
    assert f"step 1: metrics `{source}`, checkpoint `/ck/ft/1`" in (tmp_path / "rep" / "report.md").read_text()
    # the same root again replaces the report (it is a pure function of its inputs)
    assert main(["report", "--inputs", str(tmp_path / "runs"), "--output", str(tmp_path / "rep")]) == 0
    dup = tmp_path / "copy" / "metrics.json"
    dup.parent.mkdir()
    dup.write_text(json.dumps(RUNS[0]))
    assert main(["report", "--inputs", f"{tmp_path / 'runs'},{dup}", "--output", str(tmp_path / "rep2")]) == 2
    assert not (tmp_path / "rep2").exists()
    assert main(["report", "--inputs", str(tmp_path / "nowhere"), "--output", str(tmp_path / "rep3")]) == 2
