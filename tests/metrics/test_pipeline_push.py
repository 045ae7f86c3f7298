"""The task pipeline, compiled from the factory and run by KFP's local runner, pushes its evaluation to a
real Pushgateway under the run's id, and its report step deletes the run's groups."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cdseg.evaluate.run import PUSH_JOB
from cdseg.metrics import list_groups
from cdseg.metrics.config import MetricsConfig

from .conftest import http_get

TINY = {
    "epochs": 1, "batch_size": 2,
    "config": {"prepare_options": {"patch_size": 128, "overlap": 0, "val_count": 1}},
    "train_options": {"model.encoder": "resnet10t", "model.pretrained": False, "model.norm": "bn", "data.crop_size": 64,
                      "trainer.limit_batches": 1, "trainer.limit_val_batches": 1, "data.workers": 0},
    "test_options": {"eval.window": 128, "eval.overlap": 0, "eval.previews": 0, "scenes": ["2_13"]},
}


def _requests(gateway: str, handler: str) -> float:
    """The Pushgateway's own count of successful requests to `handler` (push / delete)."""
    text = http_get(gateway + "/metrics").decode()
    return sum(float(m.group(1)) for m in re.finditer(
        r'^pushgateway_http_requests_total\{[^}]*code="20\d"[^}]*handler="' + handler + r'"[^}]*\} (\S+)$', text, re.M))


def _groups(gateway: str) -> list[dict[str, str]]:
    return [g for g in list_groups(MetricsConfig(pushgateway=gateway)) if g.get("job") == PUSH_JOB]


# "deleted" (the default) runs in the default tier; "kept" is a second pipeline run, behind -m slow
@pytest.mark.parametrize("keep", [pytest.param(True, marks=pytest.mark.slow), False], ids=["kept", "deleted"])
def test_local_pipeline_pushes_under_the_run_id_and_the_report_deletes(
        keep: bool, pushgateway: str, synth_release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.local import run_local

    monkeypatch.setenv("CDSEG_METRICS__PUSHGATEWAY", pushgateway)  # as the ConfigMap gives every task
    pushes, deletes = _requests(pushgateway, "push"), _requests(pushgateway, "delete")
    before = _groups(pushgateway)
    config = {**TINY["config"], "keep_pushed_metrics": keep}
    run = run_local("222a", arguments={"source": str(synth_release), "method": "mib", **TINY, "config": config},
                    num_steps=1, output=tmp_path / "p", caching=False)
    assert [m["step"] for m in run.metrics] == [0]
    assert _requests(pushgateway, "push") > pushes, "the evaluate task pushed nothing"
    groups = [g for g in _groups(pushgateway) if g not in before]  # the module's gateway is shared
    if keep:
        (group,) = groups
        assert group["step"] == "0"
        run_id = group["run"]
        assert run_id and "{{" not in run_id and run_id != "eval", "grouped by the run's id, not a folder name"
    else:
        assert groups == [], f"the report left {groups}"
        assert _requests(pushgateway, "delete") > deletes
