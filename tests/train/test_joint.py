"""`joint`: every training patch, every class seen up to the step fully labelled, step k's heads."""

from __future__ import annotations

from pathlib import Path

import torch

from cdseg.data.prepared import PreparedDataset
from cdseg.train.data import build_datasets, select_bands
from train._util import tiny_cfg


def test_joint_uses_all_patches_with_full_labels(prepared_dataset: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(prepared_dataset, tmp_path, method="joint", task__step=1, data__scale_min=1.0)
    prepared = PreparedDataset.open(str(prepared_dataset))
    task = cfg.task.task(prepared.manifest)
    train, _ = build_datasets(cfg, task, prepared, select_bands(cfg, prepared.bands))
    assert len(train) == len(prepared.patches("train"))
    assert torch.equal(train.lut, torch.from_numpy(task.label_lut(1, "val").astype("int64")))
    inc = tiny_cfg(prepared_dataset, tmp_path, method="mib", task__step=1)
    inc_train, _ = build_datasets(inc, task, prepared, select_bands(inc, prepared.bands))
    assert len(inc_train) <= len(train)
    seen = set()
    for i in range(len(train)):
        seen |= set(torch.unique(train[i]["mask"]).tolist())
    assert seen & set(range(1, 3)) and seen & set(range(3, 5))  # old AND new classes are labelled
