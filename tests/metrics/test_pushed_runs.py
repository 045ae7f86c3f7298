"""Evaluation metrics pushed under the pipeline run's id and deleted by its report step (real Pushgateway)."""

from __future__ import annotations

from pathlib import Path

import yaml

from cdseg.evaluate.config import TestConfig
from cdseg.evaluate.run import PUSH_JOB, _push, delete_pushed
from cdseg.metrics import list_groups
from cdseg.metrics.config import MetricsConfig
from pipelines.compile import COMPILED_DIR

from .conftest import http_get


def _metrics(step: int) -> dict:
    mean = {g: {"miou": 0.5} for g in ("old", "new", "all")}
    return {"step": step, "task": "222a", "method": "mib-cd", "mean": mean, "pixel_accuracy": 0.8,
            "work": {"seconds": 3.0}}


def test_groups_are_keyed_by_the_run_and_the_report_deletes_only_its_own(pushgateway: str, tmp_path: Path) -> None:
    for run, step in (("kfp-run-a", 0), ("kfp-run-a", 1), ("kfp-run-b", 0)):
        cfg = TestConfig(checkpoint="c", dataset="d", output=str(tmp_path / "work-tmp-folder"), push_run=run,
                         metrics=MetricsConfig(pushgateway=pushgateway))
        _push(cfg, _metrics(step))
    groups = [(g["run"], g["step"]) for g in list_groups(MetricsConfig(pushgateway=pushgateway))
              if g.get("job") == PUSH_JOB]
    assert sorted(groups) == [("kfp-run-a", "0"), ("kfp-run-a", "1"), ("kfp-run-b", "0")], (
        "grouped by the run id, not the basename of a temporary folder")
    assert delete_pushed("kfp-run-a", pushgateway) == 2
    exposed = http_get(pushgateway + "/metrics").decode()
    assert 'run="kfp-run-a"' not in exposed and 'run="kfp-run-b"' in exposed
    assert delete_pushed("", pushgateway) == 0  # no run id: nothing is deleted
    assert delete_pushed("kfp-run-b", pushgateway) == 1


def test_default_run_key_is_the_output_folder_name(pushgateway: str, tmp_path: Path) -> None:
    cfg = TestConfig(checkpoint="c", dataset="d", output=str(tmp_path / "my-run"),
                     metrics=MetricsConfig(pushgateway=pushgateway))
    _push(cfg, _metrics(0))
    assert delete_pushed("my-run", pushgateway) == 1


def test_compiled_pipeline_wires_the_run_id_and_the_gateway_url() -> None:
    docs = list(yaml.safe_load_all((COMPILED_DIR / "321.yaml").read_text()))
    spec, platform = docs[0], docs[1]
    tasks = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]  # every task runs inside the exit handler
    wired = {name: t["inputs"]["parameters"]["run_id"] for name, t in tasks.items()
             if name.startswith(("evaluate", "report"))}
    assert len(wired) == 4, "three evaluate tasks and the report"  # 321 has three steps
    assert all(v == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}} for v in wired.values()), wired
    # keep_pushed_metrics is a config key: the report reads the value the configure task validated
    assert tasks["report"]["inputs"]["parameters"]["keep_pushed_metrics"] == {
        "taskOutputParameter": {"outputParameterKey": "keep_pushed_metrics", "producerTask": "configure"}}
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        keys = {k["configMapKey"] for cm in executor.get("configMapAsEnv", []) for k in cm["keyToEnv"]}
        assert "CDSEG_METRICS__PUSHGATEWAY" in keys, f"{name} does not see the Pushgateway URL"
