"""Each dataset end to end through the CLI: synth -> prepare -> train steps 0 and 1 -> test -> report.

Tiny scenes (128 px), 64 px patches, a tiny encoder and one iteration per step: seconds per dataset.
The classes every stage uses come from the prepared manifest (nothing outside cdseg/data names them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from train._util import TINY, cli_args

from cdseg.cli.main import main

pytestmark = pytest.mark.usefixtures("clean_env")

#: dataset -> (a task of two or more steps, its step-0 and step-1 classes, background excluded)
CASES = {
    "potsdam": ("222a", ["impervious_surfaces", "low_vegetation"], ["building", "tree"]),
    "vaihingen": ("321", ["building", "tree", "clutter"], ["impervious_surfaces", "low_vegetation"]),
    "loveda": ("4-3", ["building", "road", "water"], ["barren", "forest", "agriculture"]),
    "isaid": ("4s", ["baseball_diamond", "tennis_court", "basketball_court", "ground_track_field", "swimming_pool",
                     "soccer_ball_field"], ["bridge", "large_vehicle", "small_vehicle", "roundabout"]),
}
USER_DEF = """\
name: fields
classes:            # label value of each class (or [R, G, B] colours)
  other: 1
  crop: 2
  meadow: 3
ignore: [0]
background: other
bands: [R, G, B]
images: img         # folders under --input; a label has its image's file name (a suffix may differ)
labels: lbl
label_suffix: _mask
splits:
  test: [s3]
tasks:
  2-1: [[other, crop], [meadow]]
"""

TRAIN = {**TINY, "model.encoder": "resnet10t", "data.crop_size": 64, "trainer.epochs": 1, "trainer.limit_batches": 1,
         "trainer.limit_val_batches": 1, "trainer.batch_size": 2}


def train_test_report(prepared: Path, run: Path, task: str) -> dict:
    for step in (0, 1):
        cli = {**TRAIN, "task.name": task, "task.step": step, "data.dataset": str(prepared), "output": str(run),
               "method": "mib"}
        if step:
            cli["prev_checkpoint"] = str(run / "step-0" / "model")
        assert main(["train", *cli_args(cli)]) == 0
        assert main(["test", "--checkpoint", str(run / f"step-{step}" / "model"), "--dataset", str(prepared),
                     "--output", str(run), "--eval.window", "64", "--eval.overlap", "0", "--eval.previews", "1"]) == 0
    assert main(["report", "--inputs", str(run), "--output", str(run / "report")]) == 0
    assert (run / "report" / "report.html").is_file()
    return json.loads((run / "step-1" / "eval" / "metrics.json").read_text())


@pytest.mark.parametrize("dataset", sorted(CASES))
def test_dataset_end_to_end(dataset: str, tmp_path: Path) -> None:
    task, new0, new1 = CASES[dataset]
    rel, prepared = tmp_path / "release", tmp_path / "prepared"
    assert main(["synth", "--output", str(rel), "--dataset", dataset, "--size", "128", "--train-scenes", "3",
                 "--test-scenes", "1"]) == 0
    assert main(["prepare", "--input", str(rel), "--output", str(prepared), "--patch-size", "64", "--overlap", "0",
                 "--val-count", "1"]) == 0
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["dataset"] == dataset and task in manifest["tasks"]
    metrics = train_test_report(prepared, tmp_path / "run", task)
    # output 0 is background: MiB's for ISPRS, the dataset's own class for LoveDA and iSAID (listed in step 0)
    assert metrics["classes"] == ["background", *new0, *new1]
    isprs = dataset in ("potsdam", "vaihingen")
    # one prepared ISPRS dataset holds the full and the eroded labels; test scores the eroded ones by default
    assert manifest["label_sets"] == (["eroded", "full"] if isprs else ["full"])
    assert metrics["dataset"]["labels"] == ("eroded" if isprs else "full")
    if dataset == "potsdam":
        assert main(["test", "--checkpoint", str(tmp_path / "run" / "step-1" / "model"), "--dataset", str(prepared),
                     "--output", str(tmp_path / "full"), "--labels", "full", "--eval.window", "64",
                     "--eval.overlap", "0", "--eval.previews", "0"]) == 0
        full = json.loads((tmp_path / "full" / "step-1" / "eval" / "metrics.json").read_text())
        scored = [int(np.sum(m["confusion_matrix"])) for m in (metrics, full)]
        assert full["dataset"]["labels"] == "full" and scored[0] < scored[1]  # boundaries are not scored
    assert (metrics["old_classes"], metrics["new_classes"]) == (new0, new1)
    assert set(metrics["per_class"]) >= {*new0, *new1}


def test_user_dataset_end_to_end(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "mine"
    rng = np.random.default_rng(0)
    for sid in ("s1", "s2", "s3", "s4"):
        label = np.ones((128, 128), np.uint8)
        label[:64, :64], label[64:, 64:], label[:4] = 2, 3, 0
        image = (np.stack([label * 60, 255 - label * 50, label * 30], -1) + rng.integers(0, 20, (128, 128, 3)))
        (root / "img").mkdir(parents=True, exist_ok=True)
        (root / "lbl").mkdir(exist_ok=True)
        Image.fromarray(image.astype(np.uint8)).save(root / "img" / f"{sid}.png")
        Image.fromarray(label).save(root / "lbl" / f"{sid}_mask.png")
    definition = tmp_path / "fields.yaml"
    definition.write_text(USER_DEF)
    prepared = tmp_path / "prepared"
    assert main(["prepare", "--src", str(root), "--dst", str(prepared), "--dataset-def", str(definition),
                 "--patch-size", "64", "--overlap", "0", "--val-count", "1"]) == 0
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["classes"] == ["other", "crop", "meadow"] and manifest["splits"]["test"] == ["s3"]
    metrics = train_test_report(prepared, tmp_path / "run", "2-1")
    assert metrics["classes"] == ["other", "crop", "meadow"]
    assert main(["test", "--checkpoint", str(tmp_path / "run" / "step-1" / "model"), "--dataset", str(prepared),
                 "--output", str(tmp_path / "eroded"), "--labels", "eroded"]) == 2
    assert not (tmp_path / "eroded" / "step-1" / "eval").exists()
    assert (metrics["old_classes"], metrics["new_classes"]) == (["crop"], ["meadow"])
