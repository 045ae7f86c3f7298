"""`cdseg pipeline compile | run | submit` and `cdseg demo`'s options: exit codes, outputs, the submit call.

The local run itself is covered by test_pipeline_local.py; submit is tested against a stand-in for
kfp.Client (no KFP endpoint here), checking what would be sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cdseg.cli.main import main
from pipelines.compile import COMPILED_DIR, pipeline_structure


def test_compile_one_task_matches_the_checked_in_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", "compile", "--task", "321", "--output", str(tmp_path)]) == 0
    out = Path(capsys.readouterr().out.strip())
    assert out == tmp_path / "321.yaml"
    assert pipeline_structure(out.read_text()) == pipeline_structure((COMPILED_DIR / "321.yaml").read_text())


@pytest.mark.parametrize("argv", [
    ["pipeline", "compile"],                                         # neither --task nor --all
    ["pipeline", "compile", "--all", "--task", "6s"],                # both
    ["pipeline", "run", "--task", "222a", "--source", "x"],          # without --local
    ["pipeline", "run", "--local", "--task", "222a"],                # without --source
    ["pipeline", "submit", "--task", "222a", "--source", "s3://b/r"],  # without --host
    ["pipeline", "run", "--local", "--source", "x", "--params", '{"launch_mode": "pytorchjob"}'],
    ["demo", "--compare", "ft,sgd"],
    ["demo", "--compare", "ft,ft"],
])
def test_bad_usage_exits_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and len(err.splitlines()) == 1 and "Traceback" not in err


class FakeClient:
    """Records what `cdseg pipeline submit` sends to kfp.Client."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def create_run_from_pipeline_package(self, package: str, **kwargs: Any) -> Any:
        self.calls.append({"package": package, **kwargs})
        return type("Result", (), {"run_id": "run-42"})()


def test_submit_sends_the_compiled_package_and_arguments() -> None:
    from pipelines.submit import kfp_cli_equivalent, submit

    client = FakeClient()
    args = {"source": "s3://b/potsdam", "method": "mib", "train_options": {"trainer.amp": True}}
    result = submit(COMPILED_DIR / "222a.yaml", host="http://kfp", arguments=args, experiment="cdseg", run_name="r1",
                    client=client)
    assert result.run_id == "run-42"
    (call,) = client.calls
    assert call["package"] == str(COMPILED_DIR / "222a.yaml")
    assert call["arguments"] == args and call["run_name"] == "r1" and call["experiment_name"] == "cdseg"
    line = kfp_cli_equivalent(COMPILED_DIR / "222a.yaml", host="http://kfp", arguments=args, experiment="cdseg",
                              run_name="r1")
    assert line.startswith("kfp --endpoint http://kfp run create --experiment-name cdseg --run-name r1 --package-file ")
    assert "source=s3://b/potsdam method=mib 'train_options={\"trainer.amp\": true}'" in line


def test_submit_cli_uses_the_checked_in_yaml(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import pipelines.submit as sub

    seen: dict[str, Any] = {}

    def fake_submit(package: Any, **kwargs: Any) -> Any:
        seen.update(package=package, **kwargs)
        return sub.Submitted(run_id="run-7")

    monkeypatch.setattr(sub, "submit", fake_submit)
    rc = main(["pipeline", "submit", "--host", "http://kfp:8080", "--task", "6s", "--method", "ft", "--source",
               "s3://b/r", "--params", '{"epochs": 3}', "--run-name", "x"])
    assert rc == 0
    assert seen["package"] == COMPILED_DIR / "6s.yaml"
    assert seen["arguments"] == {"source": "s3://b/r", "method": "ft", "epochs": 3}
    assert '"run_id": "run-7"' in capsys.readouterr().out


def test_demo_shares_step0_only_between_identical_recipes() -> None:
    from cdseg.demo import DemoConfig, step0_key

    cfg = DemoConfig()
    keys = {m: step0_key(cfg.arguments("src", m), "222a") for m in ("ft", "uft", "mib", "mib-cd", "ft-cd")}
    assert keys["ft"] == keys["mib"] == keys["uft"], "their recipes differ only from step 1 on"
    assert keys["mib-cd"] != keys["ft"], "mib-cd trains step 0 with the invariance term"
    assert keys["ft-cd"] != keys["ft"]


def test_demo_gives_its_last_step_its_own_budget() -> None:
    from cdseg.config import load_config
    from cdseg.demo import DemoConfig, step0_key
    from cdseg.train.config import TrainConfig

    cfg = DemoConfig()
    options = cfg.arguments("src", "mib")["train_options"]
    trainer = load_config(TrainConfig, cli=options, environ={}).trainer
    assert [trainer.iters_at(k) for k in range(3)] == [cfg.iterations, cfg.iterations, 640]
    flat = DemoConfig(iterations_by_step={})  # one budget everywhere: step 0 is the same training
    assert step0_key(flat.arguments("src", "mib"), "222a") == step0_key(cfg.arguments("src", "mib"), "222a")


def test_demo_table() -> None:
    from cdseg.demo import format_table

    mean = {"old": {"miou": None, "classes": []}, "new": {"miou": 0.5, "classes": ["a"]},
            "all": {"miou": 0.5, "classes": ["a"]}}
    mean1 = {"old": {"miou": 0.25, "classes": ["a"]}, "new": {"miou": 0.75, "classes": ["b"]},
             "all": {"miou": 0.5, "classes": ["a", "b"]}}
    table = format_table([{"method": "mib", "step": 1, "mean": mean1}, {"method": "mib", "step": 0, "mean": mean}])
    lines = table.splitlines()
    assert lines[0].split() == ["method", "step", "old", "mIoU", "new", "mIoU", "all", "mIoU", "classes", "seen"]
    assert lines[2].split() == ["mib", "0", "-", "50.0", "50.0", "1"]
    assert lines[3].split() == ["mib", "1", "25.0", "75.0", "50.0", "2"]


def test_compile_of_an_unknown_task_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", "compile", "--task", "nosuchtask", "--output", str(tmp_path / "new" / "dir")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
