"""End to end on tiny generated data: steps 0 -> 1 -> 2, every method, resume, refusal of a wrong checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cdseg.cli.main import main as cli_main
from cdseg.train import run_train
from cdseg.train.config import METHODS
from train._util import cli_args, tiny_cfg, tiny_cli

pytestmark = pytest.mark.usefixtures("clean_env")


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_steps_0_1_2_chain(prepared_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    for step in (0, 1, 2):
        uri = run_train(tiny_cfg(prepared_dataset, out, method="mib-cd", task__step=step))
        assert uri == str(out / f"step-{step}" / "model")
        card = json.loads((out / f"step-{step}" / "model" / "model.json").read_text())
        assert card["task"] == "222a" and card["step"] == step and card["method"] == "mib-cd"
        assert len(card["classes"]) == step + 1 and card["heads"] == [3] + [2] * step
        folder = out / f"step-{step}"
        assert (folder / "config.yaml").is_file() and (folder / "best" / "model.json").is_file()
        history = json.loads((folder / "history.json").read_text())
        assert [r["epoch"] for r in history] == [0, 1]
        assert all("val_miou" in r and "val_miou_old" in r for r in history)
        assert len(list((folder / "resume").iterdir())) == 1  # older resume states are dropped
    best_epoch = json.loads((out / "step-2" / "best" / "model.json").read_text())["epoch"]
    assert card["selected"] == "best" and card["epoch"] == best_epoch
    assert _same(_weights(out / "step-2" / "model"), _weights(out / "step-2" / "best"))


#: new methods whose step 1 runs end to end elsewhere in the default tier (tests/train/test_methods.py chains
#: plop-cd and rw; lwf is mib's KD without the unbiased parts) or in the slow tier (test_every_task.py)
_COVERED = ("lwf", "rw", "plop", "plop-cd")


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m in _COVERED else m for m in METHODS])
def test_every_method_at_step_1(method: str, prepared_dataset: Path, step0_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(step0_run / "step-0", out / "step-0")
    cfg = tiny_cfg(prepared_dataset, out, method=method, task__step=1, trainer__epochs=1)
    uri = run_train(cfg)
    card = json.loads((Path(uri) / "model.json").read_text())
    assert card["method"] == method and card["step"] == 1
    history = json.loads((out / "step-1" / "history.json").read_text())
    terms = {k for k in history[0] if k.startswith("train_")}
    if method in ("mib", "mib-cd"):
        assert "train_kd" in terms
    if method in ("mib-cd", "ft-cd"):
        assert {"train_cd", "train_cd_old", "train_cd_self"} <= terms
    if method in ("ft", "uft", "joint"):
        assert terms == {"train_seg", "train_loss"}
    expected = {"lwf": {"train_kd"}, "lwf-mc": {"train_mcd"}, "ilt": {"train_kd", "train_fd"},
                "ewc": {"train_reg"}, "pi": {"train_reg"}, "rw": {"train_reg"},
                "plop": {"train_pod", "train_pseudo_kept"}, "plop-cd": {"train_pod", "train_cd"}}
    assert expected.get(method, set()) <= terms


def test_mib_head_init_and_previous_weights_loaded(prepared_dataset: Path, step0_run: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(prepared_dataset, tmp_path / "x", method="mib", task__step=1, trainer__max_iters=1,
                   prev_checkpoint=str(step0_run / "step-0" / "model"), optimizer__lr=1e-12)
    run_train(cfg)
    prev, new = _weights(step0_run / "step-0" / "model"), _weights(tmp_path / "x" / "step-1" / "model")
    w_bg = prev["heads.0.weight"][0]
    assert torch.allclose(new["heads.1.weight"][0], w_bg, atol=1e-6)
    assert torch.allclose(new["heads.0.weight"][1:], prev["heads.0.weight"][1:], atol=1e-6)


def test_wrong_previous_checkpoint_is_refused(prepared_dataset: Path, step0_run: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", *cli_args(tiny_cli(prepared_dataset, tmp_path / "r", task__step=2,
                                        prev_checkpoint=str(step0_run / "step-0" / "model")))]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "field 'step' is 0, expected 1" in err and "Traceback" not in err
    other = tmp_path / "other"
    shutil.copytree(step0_run / "step-0" / "model", other)
    card = json.loads((other / "model.json").read_text())
    card["task"] = "321"
    (other / "model.json").write_text(json.dumps(card))
    args = ["train", *cli_args(tiny_cli(prepared_dataset, tmp_path / "r", task__step=1, prev_checkpoint=str(other)))]
    assert cli_main(args) == 2
    assert "field 'task' is '321', expected '222a'" in capsys.readouterr().err
    assert not (tmp_path / "r" / "step-1" / "model").exists()


def test_missing_previous_checkpoint_is_a_usage_error(prepared_dataset: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train", *cli_args(tiny_cli(prepared_dataset, tmp_path / "r", task__step=1))]) == 2
    assert "step-0/model" in capsys.readouterr().err


def test_in_channels_larger_than_the_dataset(prepared_dataset: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train", *cli_args(tiny_cli(prepared_dataset, tmp_path / "r", in_channels=7))]) == 2
    err = capsys.readouterr().err
    assert "--in-channels 7" in err and "R,G,B,IR" in err


class _Crash(Exception):
    pass


def test_crash_mid_epoch_then_resume_equals_uninterrupted(prepared_dataset: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    over = {"method": "mib-cd", "task__step": 0, "trainer__epochs": 2, "trainer__limit_batches": 3,
            "trainer__checkpoint_every_iters": 1}
    run_train(tiny_cfg(prepared_dataset, tmp_path / "a", **over))

    from cdseg.train.trainer import Trainer

    original = Trainer._report

    def crash(self: Trainer, *args: object) -> bool:
        if self.progress.iteration == 5:
            raise _Crash
        return original(self, *args)

    monkeypatch.setattr(Trainer, "_report", crash)
    with pytest.raises(_Crash):
        run_train(tiny_cfg(prepared_dataset, tmp_path / "b", **over))
    assert [p.name for p in (tmp_path / "b" / "step-0" / "resume").iterdir()] == ["it-000000004"]  # mid-epoch 1
    monkeypatch.setattr(Trainer, "_report", original)
    run_train(tiny_cfg(prepared_dataset, tmp_path / "b", **over))
    for sub in ("model", "best"):
        assert _same(_weights(tmp_path / "a" / "step-0" / sub), _weights(tmp_path / "b" / "step-0" / sub)), sub
    ha = json.loads((tmp_path / "a" / "step-0" / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / "step-0" / "history.json").read_text())
    assert ha == hb


@pytest.mark.slow
@pytest.mark.parametrize(("method", "step"), [("rw", 0), ("pi", 0), ("plop", 1)])
def test_terms_state_resumes_bitwise(method: str, step: int, prepared_dataset: Path, step0_run: Path,
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Importance (rw, pi) and PLOP's measured thresholds survive a crash: the resumed step ends bitwise equal."""
    over = {"method": method, "task__step": step, "trainer__epochs": 2, "trainer__limit_batches": 3,
            "trainer__checkpoint_every_iters": 1, "reg__iterations": 2}
    for run in ("a", "b"):
        if step:
            shutil.copytree(step0_run / "step-0", tmp_path / run / "step-0")
    run_train(tiny_cfg(prepared_dataset, tmp_path / "a", **over))

    from cdseg.train.trainer import Trainer

    original = Trainer._report

    def crash(self: Trainer, *args: object) -> bool:
        if self.progress.iteration == 5:
            raise _Crash
        return original(self, *args)

    monkeypatch.setattr(Trainer, "_report", crash)
    with pytest.raises(_Crash):
        run_train(tiny_cfg(prepared_dataset, tmp_path / "b", **over))
    monkeypatch.setattr(Trainer, "_report", original)
    run_train(tiny_cfg(prepared_dataset, tmp_path / "b", **over))
    folder = f"step-{step}"
    assert _same(_weights(tmp_path / "a" / folder / "model"), _weights(tmp_path / "b" / folder / "model"))
    if method != "plop":
        from safetensors.torch import load_file

        ta = load_file(str(tmp_path / "a" / folder / "model" / "terms.safetensors"))
        tb = load_file(str(tmp_path / "b" / folder / "model" / "terms.safetensors"))
        assert ta and _same(ta, tb)
    ha = json.loads((tmp_path / "a" / folder / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / folder / "history.json").read_text())
    assert ha == hb


def test_finished_step_rerun_returns_without_training(prepared_dataset: Path, step0_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(step0_run / "step-0", out / "step-0")
    before = _weights(out / "step-0" / "model")
    run_train(tiny_cfg(prepared_dataset, out, method="mib", task__step=0))
    # tensors, not bytes: safetensors writes its metadata map in no fixed order
    assert _same(_weights(out / "step-0" / "model"), before)
    history = json.loads((out / "step-0" / "history.json").read_text())
    assert len(history) == 2


def test_nan_loss_stops_and_writes_no_model(prepared_dataset: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import cdseg.losses.ce
    from cdseg.train.run import TrainingDiverged

    real = cdseg.losses.ce.build_seg_loss

    class _Nan(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.inner(z, y) * float("nan")

    monkeypatch.setattr(cdseg.losses.ce, "build_seg_loss", lambda *a, **k: _Nan(real(*a, **k)))
    with pytest.raises(TrainingDiverged, match="not finite"):
        run_train(tiny_cfg(prepared_dataset, tmp_path / "r", task__step=0))
    assert not (tmp_path / "r" / "step-0" / "model").exists()


def test_resume_refuses_other_settings_but_allows_a_longer_run(prepared_dataset: Path, step0_run: Path,
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    shutil.copytree(step0_run / "step-0", out / "step-0")
    assert cli_main(["train", *cli_args(tiny_cli(prepared_dataset, out, method="ft", task__step=0))]) == 2
    assert "--method='mib'" in capsys.readouterr().err
    run_train(tiny_cfg(prepared_dataset, out, method="mib", task__step=0, trainer__epochs=3))
    history = json.loads((out / "step-0" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1, 2]


def test_no_resume_starts_over(prepared_dataset: Path, step0_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(step0_run / "step-0", out / "step-0")
    run_train(tiny_cfg(prepared_dataset, out, method="ft", task__step=0, trainer__resume=False,
                       trainer__limit_batches=1))
    assert [p.name for p in (out / "step-0" / "resume").iterdir()] == ["it-000000002"]
    assert json.loads((out / "step-0" / "model" / "model.json").read_text())["method"] == "ft"


def test_epoch_means_count_every_iteration(prepared_dataset: Path, tmp_path: Path) -> None:
    """With a log interval longer than the epoch, the epoch's train terms still cover all its iterations."""
    a = tiny_cfg(prepared_dataset, tmp_path / "a", method="ft", trainer__epochs=1, trainer__limit_batches=3,
                 trainer__log_every=1)
    b = tiny_cfg(prepared_dataset, tmp_path / "b", method="ft", trainer__epochs=1, trainer__limit_batches=3,
                 trainer__log_every=100)
    run_train(a)
    run_train(b)
    ha = json.loads((tmp_path / "a" / "step-0" / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / "step-0" / "history.json").read_text())
    assert ha[0]["train_loss"] == pytest.approx(hb[0]["train_loss"], rel=1e-6)


@pytest.mark.slow
def test_torch_compile_path(prepared_dataset: Path, tmp_path: Path) -> None:
    """--trainer.compile (inductor on CPU needs a C++ compiler and about a minute): same checkpoint layout."""
    uri = run_train(tiny_cfg(prepared_dataset, tmp_path / "c", method="mib-cd", trainer__epochs=1,
                             trainer__compile=True))
    assert not any(k.startswith("_orig_mod") for k in _weights(Path(uri)))


@pytest.mark.parametrize(("by_step", "expected"), [({1: 3}, 3), ({2: 3}, 1)])
def test_a_step_trains_its_own_budget(prepared_dataset: Path, step0_run: Path, tmp_path: Path,
                                      by_step: dict[int, int], expected: int) -> None:
    # trainer.max_iters_by_step overrides max_iters for the listed steps only (a last step with rare classes)
    cfg = tiny_cfg(prepared_dataset, tmp_path / "x", method="mib", task__step=1, trainer__max_iters=1,
                   trainer__max_iters_by_step=by_step, prev_checkpoint=str(step0_run / "step-0" / "model"))
    run_train(cfg)
    card = json.loads((tmp_path / "x" / "step-1" / "model" / "model.json").read_text())
    assert card["iteration"] == expected


def test_a_later_step_budget_keeps_step0_shared() -> None:
    from cdseg.config import load_config
    from cdseg.train.config import TrainConfig, step0_fingerprint

    def fp(**over: object) -> str:
        cli = {"task.name": "222a", "task.step": 0, "trainer.max_iters": 80, **over}
        return step0_fingerprint(load_config(TrainConfig, cli=cli, environ={}))

    assert fp(**{"trainer.max_iters_by_step": {"2": 320}}) == fp()  # step 0 trains the same
    assert fp(**{"trainer.max_iters_by_step": {"0": 320}}) != fp()
    assert fp(**{"trainer.max_iters_by_step": {"0": 320}}) == fp(**{"trainer.max_iters": 320})


def test_cd_from_step_1_shares_mibs_step0() -> None:
    """mib-cd with `aug.from_step=1` trains step 0 as mib does (no self term), so the grid shares mib's step 0;
    from step 0 it does not, whatever its other aug options."""
    from cdseg.config import load_config
    from cdseg.train.config import TrainConfig, step0_fingerprint

    def fp(method: str, **over: object) -> str:
        cli = {"task.name": "222a", "task.step": 0, "method": method, **over}
        return step0_fingerprint(load_config(TrainConfig, cli=cli, environ={}))

    assert fp("mib-cd", **{"aug.from_step": 1}) == fp("mib") == fp("ft")
    assert fp("mib-cd", **{"aug.from_step": 1, "aug.factor": 1.0}) == fp("mib")
    assert fp("mib-cd") != fp("mib")
    assert fp("mib-cd", **{"aug.factor": 1.0}) != fp("mib-cd")
