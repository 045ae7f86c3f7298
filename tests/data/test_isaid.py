"""iSAID: the original project's classes, colours and tasks; which release files are read."""

from __future__ import annotations

import numpy as np

from cdseg.data import isaid
from cdseg.data.release import Entry


def test_4s_is_the_originals_by_index() -> None:
    steps = [[isaid.CLASSES.index(c) for c in s] for s in isaid.TASKS["4s"]]
    assert steps == [[0, 3, 4, 5, 6, 11, 13], [7, 8, 9, 12], [1, 2, 15], [10, 14]]
    assert len(isaid.CLASSES) == len(set(isaid.COLOURS)) == 16 and isaid.DEFINITION.background == "background"


def test_colours_round_trip() -> None:
    index = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_array_equal(isaid.DEFINITION.to_index(isaid.DEFINITION.to_label(index)), index)


def test_scenes_skip_excluded_images_instance_masks_and_test() -> None:
    names = ["train/images/P0001.png", "train/Semantic_masks/images/P0001_instance_color_RGB.png",
             "train/Instance_masks/images/P0001_instance_id_RGB.png", "train/images/P1527.png",
             "train/Semantic_masks/images/P1527_instance_color_RGB.png", "val/images/P0003.png",
             "val/Semantic_masks/images/P0003_instance_color_RGB.png", "test/images/P0004.png"]
    found = isaid.SOURCES["isaid"].scenes([Entry(n, "isaid.zip") for n in names])
    assert sorted(found) == ["P0001", "P0003"]
    assert found["P0001"].label.path.endswith("P0001_instance_color_RGB.png") and found["P0003"].split == "test"


def test_prepare_tiles_with_the_originals_overlap_and_keeps_small_images(tmp_path) -> None:
    import json

    from PIL import Image

    from cdseg.cli.main import main

    rel = tmp_path / "rel"
    assert main(["synth", "--output", str(rel), "--dataset", "isaid", "--size", "160", "--train-scenes", "2",
                 "--test-scenes", "1"]) == 0
    for path in (rel / "val/images/P0002.png", rel / "val/Semantic_masks/images/P0002_instance_color_RGB.png"):
        Image.open(path).crop((0, 0, 100, 60)).save(path)  # smaller than a patch
    assert main(["prepare", "--input", str(rel), "--output", str(tmp_path / "p"), "--patch-size", "96",
                 "--val-count", "0"]) == 0
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert m["overlap"] == 64 and m["stride"] == 32  # no --overlap: the original's 64 px
    assert m["scenes"]["P0002"]["height"] == 60 and not [r for r in m["patches"]["rows"] if r[0] == "P0002"]
    assert len([r for r in m["patches"]["rows"] if r[0] == "P0000"]) == 9  # starts 0, 32, 64 per axis
