"""Generated releases match the real ones (Vaihingen's three zips, LoveDA, iSAID), and what prepare says
when a part is missing; the original project's option spellings; a bad user dataset definition."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from cdseg.cli.main import main


def synth(out: Path, *args: str) -> None:
    assert main(["synth", "--output", str(out), "--size", "96", "--train-scenes", "2", "--test-scenes", "1",
                 *args]) == 0


def test_vaihingen_zips_are_the_releases(tmp_path: Path) -> None:
    synth(tmp_path / "vh", "--dataset", "vaihingen", "--zip")
    assert sorted(p.name for p in (tmp_path / "vh").glob("*.zip")) == [
        "ISPRS_semantic_labeling_Vaihingen.zip", "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip",
        "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip"]
    with zipfile.ZipFile(tmp_path / "vh" / "ISPRS_semantic_labeling_Vaihingen.zip") as zf:
        names = set(zf.namelist())
    # the main zip has the training labels only; the test scene (area2) is labelled in the COMPLETE zips
    assert "gts_for_participants/top_mosaic_09cm_area1.tif" in names and "top/top_mosaic_09cm_area2.tif" in names
    assert not any("area2" in n and n.startswith("gts") for n in names)
    with zipfile.ZipFile(tmp_path / "vh" / "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip") as zf:
        assert "top_mosaic_09cm_area2.tif" in zf.namelist()


def test_prepare_with_only_the_main_zip_names_the_missing_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    synth(tmp_path / "vh", "--dataset", "vaihingen", "--zip")
    (tmp_path / "vh" / "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip").unlink()
    assert main(["prepare", "--input", str(tmp_path / "vh"), "--output", str(tmp_path / "out"),
                 "--patch-size", "64"]) == 2
    err = capsys.readouterr().err
    assert "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip" in err and "area2" in err
    assert not (tmp_path / "out").exists()


def test_vaihingen_honours_products(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synth(tmp_path / "vh", "--dataset", "vaihingen", "--products", "IRRG,labels")
    files = sorted(p.relative_to(tmp_path / "vh").as_posix() for p in (tmp_path / "vh").rglob("*.tif"))
    assert files and not any(f.startswith(("dsm/", "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded"))
                             for f in files)
    assert main(["synth", "--output", str(tmp_path / "x"), "--dataset", "vaihingen", "--products", "RGB"]) == 2
    assert "the Vaihingen release has only" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("dataset", "wanted"), [
    ("loveda", ["Train/Urban/images_png/1366.png", "Train/Urban/masks_png/1366.png", "Train/Rural/masks_png/0.png",
                "Val/Urban/images_png/3514.png"]),
    ("isaid", ["train/images/P0000.png", "train/Semantic_masks/images/P0000_instance_color_RGB.png",
               "val/images/P0002.png"]),
])
def test_layout_of_other_releases(tmp_path: Path, dataset: str, wanted: list[str]) -> None:
    synth(tmp_path / dataset, "--dataset", dataset)
    names = {p.relative_to(tmp_path / dataset).as_posix() for p in (tmp_path / dataset).rglob("*.png")}
    assert set(wanted) <= names


def test_products_are_refused_where_a_release_has_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["synth", "--output", str(tmp_path / "l"), "--dataset", "loveda", "--products", "RGB"]) == 2
    assert "leave --products out" in capsys.readouterr().err and not (tmp_path / "l").exists()


def test_original_prepare_spellings(synth_release: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    assert main(["prepare", "--src", str(synth_release), "--dst", str(out), "--dataset", "potsdam",
                 "--target-size", "128", "--no-use-boundary", "--overlap", "0", "--scenes", "2_10,2_13",
                 "--channels", "rgbir"]) == 0
    from cdseg.data.prepared import PreparedDataset

    ds = PreparedDataset.open(str(out))
    assert ds.patch_size == 128 and ds.manifest["boundary"] is False and ds.bands == ["R", "G", "B", "IR"]
    assert ds.label_sets == ["eroded", "full"]  # trained on the eroded labels, the full ones kept beside


@pytest.mark.parametrize(("body", "match"), [
    ("classes: {a: 1, b: 1}", "two classes share a label value"),
    ("classes: {a: 1, b: [0, 0, 255]}", "must all be label values 0..255 or all"),
    ("classes: {a: 1}\ncolour: x", "unknown key"),
    ("classes: {a: 1, b: 2}\ntasks: {t: [[a], [c]]}", "unknown class 'c'"),
    ("classes: {a: 1, b: 2}\nbackground: z", "background 'z' is not one of its classes"),
])
def test_bad_dataset_definition_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str,
                                            match: str) -> None:
    (tmp_path / "in" / "images").mkdir(parents=True)
    (tmp_path / "def.yaml").write_text(body)
    assert main(["prepare", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--dataset-def", str(tmp_path / "def.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and not (tmp_path / "out").exists()


def test_unknown_label_value_of_a_user_dataset_is_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    import numpy as np
    from PIL import Image

    (tmp_path / "in" / "images").mkdir(parents=True)
    (tmp_path / "in" / "labels").mkdir()
    label = np.ones((64, 64), np.uint8)
    label[:3, :5] = 9
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "in" / "images" / "a.png")
    Image.fromarray(label).save(tmp_path / "in" / "labels" / "a.png")
    (tmp_path / "def.yaml").write_text("classes: {a: 1, b: 2}\n")
    assert main(["prepare", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--dataset-def", str(tmp_path / "def.yaml"), "--patch-size", "32", "--val-count", "0"]) == 2
    err = capsys.readouterr().err
    assert "15 pixels have a value that is not a" in err and "9 x15" in err
    assert not (tmp_path / "out").exists()
