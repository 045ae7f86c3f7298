"""The experiment's report: per step and method, old / new / all mIoU over seeds with intervals; paired
differences between methods with the t-test and the sign test; per-class forgetting and its paired differences; a plot
with error bars."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cdseg.experiment.stats import Estimate, Paired, estimate, paired

GROUPS = ("old", "new", "all")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _cell(e: Estimate | None) -> str:
    if e is None:
        return "-"
    if e.sd is None:
        return f"{_pct(e.mean)} (n=1)"
    return f"{_pct(e.mean)} ± {_pct(e.sd)} [{_pct(e.low)}, {_pct(e.high)}]"


def summary(rows: Sequence[dict[str, Any]], confidence: float) -> dict[tuple[str, int, str], dict[str, Estimate | None]]:
    """(task, step, name) -> group -> estimate over seeds (None where no seed has a value, e.g. old at step 0)."""
    values: dict[tuple[str, int, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for g in GROUPS:
            if r[g] is not None:
                values[(r["task"], r["step"], r["name"])][g].append(float(r[g]))
    return {key: {g: estimate(v[g], confidence) if v.get(g) else None for g in GROUPS} for key, v in values.items()}


def comparisons(rows: Sequence[dict[str, Any]], names: Sequence[str], confidence: float) -> list[dict[str, Any]]:
    """Paired differences a - b of every pair of names, per task, step and group, over the seeds both finished."""
    by: dict[tuple[str, int, str, int], dict[str, Any]] = {(r["task"], r["step"], r["name"], r["seed"]): r for r in rows}
    out = []
    for task, step in sorted({(r["task"], r["step"]) for r in rows}):
        for a, b in itertools.combinations(names, 2):
            seeds = sorted(s for (t, k, n, s) in by if t == task and k == step and n == a and (t, k, b, s) in by)
            for g in GROUPS:
                pairs = [(by[(task, step, a, s)][g], by[(task, step, b, s)][g]) for s in seeds]
                pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
                if not pairs:
                    continue
                p = paired([x for x, _ in pairs], [y for _, y in pairs], confidence)
                out.append({"task": task, "step": step, "a": a, "b": b, "group": g, "n": len(pairs), "paired": p})
    return out


MEAN = "mean of old classes"
Drops = dict[tuple[str, str, str], dict[int, float]]  # `forgetting_by_seed`'s result


def forgetting_by_seed(rows: Sequence[dict[str, Any]]) -> Drops:
    """(task, name, class) -> seed -> drop of the class's IoU from the step it was learned to the run's last step
    (per seed as `cdseg report` computes it: `cdseg.report.tables.forgetting`), and under the class `MEAN` the
    seed's mean drop over the old classes (the report's average forgetting)."""
    from cdseg.report.tables import forgetting as class_drops
    from cdseg.report.tables import mean_defined

    runs: dict[tuple[str, str, int], dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in rows:  # each row as much of its metrics.json as the report's forgetting reads
        runs[(r["task"], r["name"], r["seed"])][r["step"]] = {
            "old_classes": r["old_classes"], "new_classes": r["new_classes"],
            "per_class": {c: {"iou": v} for c, v in r["iou"].items()}}
    drops: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for (task, name, seed), steps in runs.items():
        per_class = class_drops(steps, max(steps))
        for cls, drop in per_class.items():
            if drop is not None:
                drops[(task, name, cls)][seed] = drop
        mean = mean_defined(list(per_class.values()))
        if mean is not None:
            drops[(task, name, MEAN)][seed] = mean
    return dict(drops)


def forgetting(rows: Sequence[dict[str, Any]], confidence: float,
               drops: Drops | None = None) -> dict[tuple[str, str, str], Estimate]:
    """(task, name, class) -> the drop over seeds (`forgetting_by_seed`, or `drops` when already derived)."""
    drops = forgetting_by_seed(rows) if drops is None else drops
    return {k: estimate(list(v.values()), confidence) for k, v in drops.items()}


def forgetting_comparisons(rows: Sequence[dict[str, Any]], names: Sequence[str], confidence: float,
                           drops: Drops | None = None) -> list[dict[str, Any]]:
    """Paired differences of the drops, a's - b's, per task, class (and `MEAN`) and pair of names, over the seeds
    where both have the class's drop: the forgetting each method shows from its own start, so a method whose
    step 0 starts higher is not credited for it. `drops`: `forgetting_by_seed(rows)` when already derived."""
    drops = forgetting_by_seed(rows) if drops is None else drops
    out = []
    for task in sorted({t for t, _, _ in drops}):
        classes = sorted({c for t, _, c in drops if t == task and c != MEAN}) + [MEAN]
        for a, b in itertools.combinations(names, 2):
            for cls in classes:
                da, db = drops.get((task, a, cls), {}), drops.get((task, b, cls), {})
                seeds = sorted(set(da) & set(db))
                if seeds:
                    out.append({"task": task, "a": a, "b": b, "class": cls, "n": len(seeds),
                                "paired": paired([da[s] for s in seeds], [db[s] for s in seeds], confidence)})
    return out


def _p(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _paired_cells(p: Paired) -> str:
    """mean diff | interval | t-test p | sign test p (wins/losses/ties), in %."""
    interval = "-" if p.diff.low is None else f"[{_pct(p.diff.low)}, {_pct(p.diff.high)}]"
    return f"{_pct(p.diff.mean)} | {interval} | {_p(p.t_p)} | {_p(p.sign_p)} ({p.wins}/{p.losses}/{p.ties})"


def markdown(rows: Sequence[dict[str, Any]], names: Sequence[str], confidence: float, command: str = "") -> str:
    """The report page."""
    level = f"{100 * confidence:.0f}%"
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# cdseg experiment", ""]
    if command:
        lines += ["Reproduce with:", "", "```", command, "```", ""]
    splits = sorted({r.get("split", "test") for r in rows})
    lines += [f"Seeds: {', '.join(map(str, seeds))}. Scored on the {' and '.join(splits) or 'test'} scenes. mIoU "
              f"in % over the seeds that finished: mean ± sd [{level} Student-t interval]. Background is not "
              "averaged in.", ""]
    shared = sorted({(r["name"], r["step0_from"]) for r in rows if r["step"] == 0 and r["step0_from"] != r["name"]})
    if shared:
        lines += ["Step 0 shared (identical step-0 training): " + "; ".join(f"{n} uses {s}'s" for n, s in shared), ""]
    stats = summary(rows, confidence)
    by_seed = forgetting_by_seed(rows)
    drop_estimates = forgetting(rows, confidence, by_seed)
    drop_pairs = forgetting_comparisons(rows, names, confidence, by_seed)
    for task in sorted({r["task"] for r in rows}):
        lines += [f"## Task {task}", "", "| step | method | n | old | new | all |", "| --- | --- | --- | --- | --- | --- |"]
        for (t, step, name), e in sorted(stats.items(), key=lambda kv: (kv[0][1], list(names).index(kv[0][2]))):
            if t == task:
                n = max((x.n for x in e.values() if x is not None), default=0)
                lines.append(f"| {step} | {name} | {n} | {_cell(e['old'])} | {_cell(e['new'])} | {_cell(e['all'])} |")
        lines += ["", f"### Paired differences (a - b, same seed), {level} interval", "",
                  "| step | a - b | group | n | mean diff | interval | t-test p | sign test p (wins/losses/ties) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in comparisons(rows, names, confidence):
            if c["task"] != task:
                continue
            lines.append(f"| {c['step']} | {c['a']} - {c['b']} | {c['group']} | {c['n']} | {_paired_cells(c['paired'])} |")
        drops = {k: v for k, v in drop_estimates.items() if k[0] == task}
        if drops:
            lines += ["", "### Forgetting per class (IoU when learned - IoU at the last step)", "",
                      "| method | class | n | drop |", "| --- | --- | --- | --- |"]
            for (_, who, cls), drop in sorted(drops.items(), key=lambda kv: (list(names).index(kv[0][1]),
                                                                            kv[0][2] == MEAN, kv[0][2])):
                lines.append(f"| {who} | {cls} | {drop.n} | {_cell(drop)} |")
            lines += ["", f"### Paired forgetting (a's drop - b's drop, same seed), {level} interval", "",
                      "Each drop is measured from the class's IoU at the step it was learned, in the method's own "
                      "run: a method whose earlier steps start higher is not credited for that here.", "",
                      "| a - b | class | n | mean diff | interval | t-test p | sign test p (wins/losses/ties) |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for c in drop_pairs:
                if c["task"] == task:
                    lines.append(f"| {c['a']} - {c['b']} | {c['class']} | {c['n']} | {_paired_cells(c['paired'])} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], names: Sequence[str], confidence: float, path: Path) -> None:
    """mIoU (all) per step per method, one panel per task, error bars = the confidence interval."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    stats = summary(rows, confidence)
    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for name in names:
            points = sorted((k[1], e["all"]) for k, e in stats.items() if k[0] == task and k[2] == name and e["all"])
            if not points:
                continue
            steps = [s for s, _ in points]
            means = [100 * e.mean for _, e in points]
            err = [100 * (e.mean - e.low) if e.low is not None else 0.0 for _, e in points]
            ax.errorbar(steps, means, yerr=err, marker="o", capsize=3, label=name)
        ax.set(title=f"task {task}", xlabel="step", ylabel="mIoU of all seen classes (%)")
        ax.set_xticks(sorted({r["step"] for r in rows if r["task"] == task}))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(rows: Sequence[dict[str, Any]], names: Sequence[str], confidence: float, out: Path,
                 command: str = "") -> Path:
    """report.md, results.json and miou.png in `out` (a local folder, written whole)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(list(rows), indent=1) + "\n")
    (out / "report.md").write_text(markdown(rows, names, confidence, command))
    if rows:
        plot(rows, names, confidence, out / "miou.png")
    return out / "report.md"
