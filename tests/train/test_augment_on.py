"""--data.augment-on: where the per-pixel augmentation runs changes neither the draws nor, on CPU, the training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cdseg.cli.main import main as cli_main
from cdseg.errors import ConfigError
from cdseg.train import run_train
from cdseg.train.data import OnDevice, augment_on_device, batch_to_device
from train._util import cli_args, tiny_cfg, tiny_cli

pytestmark = pytest.mark.usefixtures("clean_env")


def test_auto_puts_the_augmentation_on_cuda_devices_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert not augment_on_device("auto", cpu) and augment_on_device("auto", cuda)
    assert augment_on_device("device", cpu) and not augment_on_device("loader", cuda)


def test_a_bad_value_is_one_readable_line(prepared_dataset: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert tiny_cfg(prepared_dataset, tmp_path / "r").data.augment_on == "auto"
    with pytest.raises(ConfigError, match="--data.augment-on=gpu") as err:
        tiny_cfg(prepared_dataset, tmp_path / "r", data__augment_on="gpu")
    assert "auto" in str(err.value) and "device" in str(err.value)
    assert cli_main(["train", *cli_args(tiny_cli(prepared_dataset, tmp_path / "r", data__augment_on="gpu"))]) == 2
    err_text = capsys.readouterr().err.strip()
    assert "augment" in err_text and "Traceback" not in err_text and len(err_text.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_device_mode_on_cpu_trains_bitwise_like_the_loader(prepared_dataset: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from cdseg.data.split_augment import AugmentOnDevice

    calls: list[int] = []
    original = AugmentOnDevice.__call__

    def spy(self: AugmentOnDevice, batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(batch["image"].shape[0])
        return original(self, batch, device)

    monkeypatch.setattr(AugmentOnDevice, "__call__", spy)
    over = {"method": "ft", "task__step": 0, "trainer__epochs": 1, "trainer__limit_batches": 2}
    run_train(tiny_cfg(prepared_dataset, tmp_path / "a", data__augment_on="loader", **over))
    assert calls == []
    # a worker process too: the uint8 crops and parameters cross the DataLoader's collate and queue
    run_train(tiny_cfg(prepared_dataset, tmp_path / "b", data__augment_on="device", data__workers=1, **over))
    assert calls == [2, 2]  # two training batches of 2 finished on the device
    wa = load_file(str(tmp_path / "a" / "step-0" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "step-0" / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ha = json.loads((tmp_path / "a" / "step-0" / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / "step-0" / "history.json").read_text())
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]


def test_batches_reach_the_device_finished() -> None:
    plain = {"image": torch.rand(2, 3, 8, 8), "mask": torch.zeros(2, 8, 8, dtype=torch.int64)}
    x, y = batch_to_device(plain, torch.device("cpu"))
    assert x is plain["image"] and y is plain["mask"]
    split = {"image": torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "mask": torch.zeros(2, 8, 8, dtype=torch.uint8),
             "crop": torch.tensor([[8, 8], [4, 4]]), "d4": torch.zeros(2, 3, dtype=torch.int64),
             "jitter": torch.zeros(2, 3, dtype=torch.float64)}
    with pytest.raises(ValueError, match="device part"):
        batch_to_device(split, torch.device("cpu"))
    from cdseg.data.split_augment import AugmentOnDevice, AugmentSpec

    (batch,) = OnDevice([split], torch.device("cpu"), AugmentOnDevice(AugmentSpec(16)))  # what calibration reads
    assert batch["image"].shape == (2, 3, 16, 16) and batch["mask"].dtype == torch.int64


def test_calibration_reads_finished_batches_in_device_mode(prepared_dataset: Path, step0_run: Path,
                                                          tmp_path: Path) -> None:
    """PLOP measures per-class statistics on the training batches before step 1: the same ones in both modes."""
    import shutil

    weights = []
    for mode in ("loader", "device"):
        out = tmp_path / mode
        shutil.copytree(step0_run / "step-0", out / "step-0")
        run_train(tiny_cfg(prepared_dataset, out, method="plop", task__step=1, trainer__epochs=1,
                           data__augment_on=mode))
        weights.append(load_file(str(out / "step-1" / "model" / "model.safetensors")))
    a, b = weights
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
