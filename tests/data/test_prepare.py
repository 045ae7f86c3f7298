"""`cdseg prepare`: round trip, splits, statistics, zips == folders, workers, rerun no-op, atomicity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cdseg.cli.main import main
from cdseg.data import isprs
from cdseg.data.config import PrepareConfig
from cdseg.data.prepare import draw_val, run_prepare
from cdseg.data.prepared import FORMAT_VERSION, PreparedDataset
from cdseg.data.scene_job import grid_starts
from cdseg.errors import DataError


def test_round_trip(prepared_dataset: Path, synth_release: Path):
    ds = PreparedDataset.open(prepared_dataset)
    m = ds.manifest
    assert m["format_version"] == FORMAT_VERSION and m["bands"] == ["R", "G", "B", "IR"]
    assert m["classes"] == list(isprs.CLASSES)
    assert m["splits"]["test"] == ["2_13", "2_14"]
    assert len(m["splits"]["val"]) == 1 and len(m["splits"]["train"]) == 3
    assert set(m["splits"]["val"] + m["splits"]["train"]) == {"2_10", "3_10", "3_11", "3_12"}
    assert len(ds.patches("train")) == 12 and len(ds.patches("test")) == 8  # 256 px scenes, 2x2 patches of 128
    scene = ds.read_scene("2_13")
    with rasterio.open(synth_release / "4_Ortho_RGBIR/top_potsdam_2_13_RGBIR.tif") as src:
        np.testing.assert_array_equal(scene.image, src.read())
        assert scene.crs == src.crs and scene.transform == src.transform
    with rasterio.open(synth_release / "5_Labels_all/top_potsdam_2_13_label.tif") as src:
        np.testing.assert_array_equal(scene.label, isprs.colours_to_index(src.read()))
    rec = ds.patches("test")[3]
    image, label = ds.read_patch(rec)
    np.testing.assert_array_equal(image, scene.image[:, rec.y : rec.y + 128, rec.x : rec.x + 128])
    np.testing.assert_array_equal(np.bincount(label.ravel(), minlength=7)[:6], rec.hist[:6])
    with rasterio.open(prepared_dataset / "images/2_13.tif") as src:
        assert src.block_shapes[0] == (256, 256) and src.crs.to_epsg() == 32633


def test_stats_from_training_scenes_only(prepared_dataset: Path):
    ds = PreparedDataset.open(prepared_dataset)
    pixels = np.concatenate([ds.read_scene(s).image.reshape(4, -1) for s in ds.scenes("train")], axis=1) / 255.0
    for i, band in enumerate(ds.bands):
        assert ds.manifest["stats"][band]["mean"] == pytest.approx(pixels[i].mean(), abs=1e-6)
        assert ds.manifest["stats"][band]["std"] == pytest.approx(pixels[i].std(), abs=1e-6)


def test_checksums_match(prepared_dataset: Path):
    import hashlib

    m = json.loads((prepared_dataset / "manifest.json").read_text())
    assert len(m["checksums"]) == 18  # 6 scenes: image, full label and eroded label (the release has both)
    assert m["label_sets"] == ["eroded", "full"] and m["scenes"]["2_13"]["labels"] == {
        "full": "labels/2_13.tif", "eroded": "labels_eroded/2_13.tif"}
    for rel, digest in m["checksums"].items():
        assert hashlib.sha256((prepared_dataset / rel).read_bytes()).hexdigest() == digest


def test_grid_and_val_draw():
    assert grid_starts(6000, 512, 500) == [*range(0, 5001, 500), 5488]  # the original's 12 x 12
    assert grid_starts(256, 128, 128) == [0, 128]
    assert grid_starts(100, 128, 116) == []
    train = [f"s{i}" for i in range(24)]
    val = draw_val(train, 0.15, None, 0)
    assert len(val) == 4 and val == draw_val(train, 0.15, None, 0) and val != draw_val(train, 0.15, None, 1)
    assert draw_val(train, 0.15, 2, 0).__len__() == 2
    assert draw_val(["a"], 0.5, None, 0) == []


def test_rerun_is_a_noop_and_options_change_it(prepared_dataset: Path, synth_release: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "p"
    shutil.copytree(prepared_dataset, out)
    before = (out / "manifest.json").stat().st_mtime_ns
    args = ["prepare", "--input", str(synth_release), "--output", str(out), "--patch-size", "128", "--overlap", "0",
            "--val-count", "1"]
    assert main(args) == 0
    assert (out / "manifest.json").stat().st_mtime_ns == before
    assert main([*args[:-2], "--val-count", "2"]) == 2  # other options: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args[:-2], "--val-count", "2", "--overwrite"]) == 0
    assert len(PreparedDataset.open(out).scenes("val")) == 2


def test_zips_and_two_workers_give_the_same_dataset(tmp_path: Path):
    rel = tmp_path / "rel"
    assert main(["synth", "--output", str(rel), "--size", "128", "--train-scenes", "2", "--test-scenes", "1",
                 "--zip", "--seed", "5"]) == 0
    flat = tmp_path / "flat"
    main(["synth", "--output", str(flat), "--size", "128", "--train-scenes", "2", "--test-scenes", "1", "--seed", "5"])
    a = run_prepare(PrepareConfig(input=str(rel), output=str(tmp_path / "a"), patch_size=64, dsm=True, workers=2))
    b = run_prepare(PrepareConfig(input=str(flat), output=str(tmp_path / "b"), patch_size=64, dsm=True))
    ma, mb = (PreparedDataset.open(x).manifest for x in (a, b))
    assert ma["bands"] == ["R", "G", "B", "IR", "DSM"]
    assert ma["checksums"] == mb["checksums"] and ma["patches"] == mb["patches"] and ma["stats"] == mb["stats"]


def test_workers_share_scenes_with_this_process(prepared_dataset: Path, synth_release: Path, tmp_path: Path):
    # 6 scenes, 2 workers: one pool process kept two scenes deep, this process taking the rest
    out = run_prepare(PrepareConfig(input=str(synth_release), output=str(tmp_path / "w2"), patch_size=128, overlap=0,
                                    val_count=1, seed=0, workers=2))
    a, b = (json.loads((p / "manifest.json").read_text()) for p in (prepared_dataset, Path(out)))
    for key in ("splits", "stats", "class_pixels", "checksums", "patches", "scenes"):
        assert a[key] == b[key], key


def test_scene_buffers_are_reused_per_role_and_size():
    from cdseg.data.scene_job import _buffers, release_buffers

    release_buffers()
    image = _buffers.get("image", (4, 8, 8))
    assert _buffers.get("image", (4, 8, 8)) is image and _buffers.get("label", (4, 8, 8)) is not image
    assert _buffers.get("image", (4, 16, 16)).shape == (4, 16, 16) and len(_buffers.arrays) == 2  # replaced
    release_buffers()
    assert _buffers.arrays == {}


def test_channels_from_other_products_and_noboundary(synth_release: Path, tmp_path: Path):
    out = run_prepare(PrepareConfig(input=str(synth_release), output=str(tmp_path / "irrg"), channels="IRRG",
                                    patch_size=128, boundary=False))
    ds = PreparedDataset.open(out)
    assert ds.bands == ["IR", "R", "G"]
    scene = ds.read_scene("2_10")
    with rasterio.open(synth_release / "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif") as src:
        np.testing.assert_array_equal(scene.image, src.read()[[3, 0, 1]])
    assert (scene.label == 255).any()
    assert sum(r.hist[6] for r in ds.patches("train")) > 0


def test_vaihingen(tmp_path: Path):
    rel = tmp_path / "vh"
    main(["synth", "--output", str(rel), "--city", "vaihingen", "--size", "160", "--train-scenes", "2",
          "--test-scenes", "1", "--zip"])
    ds = PreparedDataset.open(run_prepare(PrepareConfig(input=str(rel), output=str(tmp_path / "pv"), patch_size=64,
                                                        dsm=True)))
    assert ds.manifest["city"] == "vaihingen" and ds.bands == ["IR", "R", "G", "DSM"]
    assert ds.scenes("test") == ["area2"] and len(ds.scenes("train")) + len(ds.scenes("val")) == 2
    assert ds.read_scene("area2").image.shape == (4, 160, 128)


def test_exception_mid_prepare_leaves_nothing(synth_release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import cdseg.data.prepare as prep

    calls = []
    real = prep.run_scene_job

    def flaky(job):
        calls.append(job.scene_id)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle
        return real(job)

    monkeypatch.setattr(prep, "run_scene_job", flaky)
    out = tmp_path / "p"
    with pytest.raises(KeyboardInterrupt):
        run_prepare(PrepareConfig(input=str(synth_release), output=str(out), patch_size=128))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_extracted_files_win_over_the_same_files_in_zips(tmp_path: Path):
    from cdseg.data.release import group_scenes, index_files

    rel = tmp_path / "rel"
    main(["synth", "--output", str(rel), "--size", "64", "--train-scenes", "1", "--test-scenes", "0",
          "--products", "RGB,RGBIR,labels", "--zip"])
    import zipfile

    with zipfile.ZipFile(rel / "4_Ortho_RGBIR.zip") as zf:
        zf.extractall(rel)
    scene = group_scenes(index_files(rel), "potsdam")["2_10"]
    assert scene.images["RGBIR"].archive is None and scene.images["RGB"].archive is not None
    assert scene.label is not None and scene.label.archive is not None


def test_empty_existing_output_folder_is_used(synth_release: Path, tmp_path: Path):
    out = tmp_path / "artifact"
    out.mkdir()  # e.g. a KFP output artifact path created in advance
    run_prepare(PrepareConfig(input=str(synth_release), output=str(out), patch_size=128))
    assert (out / "manifest.json").is_file()


def test_rgbir_assembled_from_rgb_and_irrg(tmp_path: Path):
    args = ["--size", "64", "--train-scenes", "1", "--test-scenes", "1", "--seed", "3"]
    main(["synth", "--output", str(tmp_path / "two"), "--products", "RGB,IRRG,labels", *args])
    main(["synth", "--output", str(tmp_path / "one"), "--products", "RGBIR,labels", *args])
    a = PreparedDataset.open(run_prepare(PrepareConfig(input=str(tmp_path / "two"), output=str(tmp_path / "a"),
                                                       patch_size=32)))
    b = PreparedDataset.open(run_prepare(PrepareConfig(input=str(tmp_path / "one"), output=str(tmp_path / "b"),
                                                       patch_size=32)))
    assert a.bands == b.bands == ["R", "G", "B", "IR"]
    np.testing.assert_array_equal(a.read_scene("2_13").image, b.read_scene("2_13").image)
    assert a.manifest["scenes"]["2_13"]["sources"][0].endswith("top_potsdam_2_13_RGB.tif")


def test_georeference_is_read_scene_without_pixels(prepared_dataset: Path) -> None:
    from cdseg.data.prepared import PreparedDataset

    ds = PreparedDataset.open(prepared_dataset)
    for scene_id in ds.scenes("test"):
        scene = ds.read_scene(scene_id)
        assert ds.georeference(scene_id) == (scene.crs, scene.transform)
        assert scene.crs is not None


def test_rerun_notices_a_damaged_dataset(prepared_dataset: Path, synth_release: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "p"
    shutil.copytree(prepared_dataset, out)
    args = ["prepare", "--input", str(synth_release), "--output", str(out), "--patch-size", "128", "--overlap", "0",
            "--val-count", "1"]
    assert main([*args, "--verify"]) == 0  # intact: every file hashed, nothing written
    assert PreparedDataset.open(out).verify() == 18

    image = out / "images/2_13.tif"
    damaged = bytearray(image.read_bytes())
    damaged[-1] ^= 0xFF
    image.write_bytes(bytes(damaged))
    manifest_before = (out / "manifest.json").read_bytes()
    assert main(args) == 2  # without --verify a rerun hashes the files changed since they were verified
    assert "images/2_13.tif (sha256 differs)" in capsys.readouterr().err
    assert main([*args, "--verify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "images/2_13.tif (sha256 differs)" in err[0] and "--overwrite" in err[0]
    assert image.read_bytes() == bytes(damaged) and (out / "manifest.json").read_bytes() == manifest_before
    with pytest.raises(DataError, match=r"images/2_13.tif \(sha256 differs\) of 18 files"):
        PreparedDataset.open(out).verify()

    (out / "labels/3_10.tif").unlink()
    assert main(args) == 2
    assert "labels/3_10.tif (missing)" in capsys.readouterr().err
    assert main([*args, "--verify", "--overwrite"]) == 0  # prepared again, whole
    assert PreparedDataset.open(out).verify() == 18
    assert json.loads((out / "manifest.json").read_text())["checksums"] == json.loads(manifest_before)["checksums"]


@pytest.mark.parametrize("compress", ["deflate", "zstd"])
def test_compressed_output_holds_the_same_pixels(prepared_dataset: Path, synth_release: Path, tmp_path: Path,
                                                 compress: str):
    out = run_prepare(PrepareConfig(input=str(synth_release), output=str(tmp_path / compress), patch_size=128,
                                    overlap=0, val_count=1, seed=0, compress=compress, block_size=128))
    plain, packed = PreparedDataset.open(prepared_dataset), PreparedDataset.open(out)
    assert packed.manifest["patches"] == plain.manifest["patches"] and packed.manifest["stats"] == plain.manifest["stats"]
    for sid in plain.manifest["scenes"]:
        a, b = plain.read_scene(sid), packed.read_scene(sid)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
    with rasterio.open(Path(out) / "images/2_13.tif") as src:
        assert src.compression.name.lower() == compress and src.block_shapes[0] == (128, 128)
    assert packed.verify() == 18
