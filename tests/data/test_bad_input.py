"""Bad input: exit code 2, one line naming the file or option and the fix, and no output left behind."""

from __future__ import annotations

import importlib.util
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cdseg.cli.main import main
from cdseg.data.prepared import PreparedDataset
from cdseg.errors import DataError

RGBIR = "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif"
LABEL = "5_Labels_all/top_potsdam_2_10_label.tif"


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bad") / "rel"
    assert main(["synth", "--output", str(out), "--size", "64", "--train-scenes", "1", "--test-scenes", "1",
                 "--products", "RGBIR,labels"]) == 0
    return out


@pytest.fixture
def release(tiny_release: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "rel"
    shutil.copytree(tiny_release, dst)
    return dst


def prepare(release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    out = tmp_path / "out"
    rc = main(["prepare", "--input", str(release), "--output", str(out), "--patch-size", "32", *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["rel"]  # no staging folder left either
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def rewrite(path: Path, data: np.ndarray) -> None:
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(count=data.shape[0], height=data.shape[1], width=data.shape[2])
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_missing_label(release, tmp_path, capsys):
    (release / LABEL).unlink()
    err = prepare(release, tmp_path, capsys)
    assert "top_potsdam_2_10_RGBIR.tif has no label top_potsdam_2_10_label.tif" in err and "--scenes" in err


# with 2 workers the first scene (2_10) is prepared in this process and the second (2_13) in a pool process
@pytest.mark.parametrize(("workers", "scene"), [("1", "2_10"), ("2", "2_10"), ("2", "2_13")])
def test_unknown_colour(release, tmp_path, capsys, workers, scene):
    label = release / LABEL.replace("2_10", scene)
    with rasterio.open(label) as src:
        rgb = src.read()
    rgb[:, :3, :4] = np.array([255, 0, 255], np.uint8)[:, None, None]
    rewrite(label, rgb)
    err = prepare(release, tmp_path, capsys, "--workers", workers)
    assert f"top_potsdam_{scene}_label.tif" in err and "(255,0,255) x12" in err and "12 pixels" in err


def test_size_mismatch(release, tmp_path, capsys):
    with rasterio.open(release / LABEL) as src:
        rgb = src.read()
    rewrite(release / LABEL, rgb[:, :48, :])
    err = prepare(release, tmp_path, capsys)
    assert "label" in err and "64x48 px but image" in err and "64x64" in err


def test_georeference_mismatch(release, tmp_path, capsys):
    with rasterio.open(release / LABEL, "r+") as dst:
        t = dst.transform
        dst.transform = rasterio.Affine(t.a, t.b, t.c + 100, t.d, t.e, t.f)
    err = prepare(release, tmp_path, capsys)
    assert "georeferenced differently" in err


def test_wrong_band_count(release, tmp_path, capsys):
    with rasterio.open(release / RGBIR) as src:
        data = src.read()
    rewrite(release / RGBIR, data[:3])
    err = prepare(release, tmp_path, capsys)
    assert "top_potsdam_2_10_RGBIR.tif has 3 bands, a RGBIR image must have 4" in err


@pytest.mark.parametrize("content", [b"", b"II*\x00garbage"])
def test_empty_or_unreadable_tiff(release, tmp_path, capsys, content):
    (release / RGBIR).write_bytes(content)
    err = prepare(release, tmp_path, capsys)
    assert "top_potsdam_2_10_RGBIR.tif is not a readable image" in err and "download it again" in err


def test_truncated_zip(tmp_path, capsys):
    rel = tmp_path / "rel"
    main(["synth", "--output", str(rel), "--size", "64", "--train-scenes", "1", "--test-scenes", "0",
          "--products", "RGBIR,labels", "--zip"])
    capsys.readouterr()
    z = rel / "4_Ortho_RGBIR.zip"
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    err = prepare(rel, tmp_path, capsys)
    assert "4_Ortho_RGBIR.zip is not a readable zip file" in err and "truncated" in err


def test_zip_slip(release, tmp_path, capsys):
    with zipfile.ZipFile(release / "evil.zip", "w") as zf:
        zf.writestr("../../etc/top_potsdam_9_9_RGBIR.tif", b"x")
    err = prepare(release, tmp_path, capsys)
    assert "evil.zip: zip entry '../../etc/top_potsdam_9_9_RGBIR.tif' escapes its folder" in err


def test_no_release_files(tmp_path, capsys):
    (tmp_path / "rel").mkdir()
    err = prepare(tmp_path / "rel", tmp_path, capsys)
    assert "found no file of a known release" in err and "--dataset-def" in err


def test_bad_option_value(release, tmp_path, capsys):
    err = prepare(release, tmp_path, capsys, "--overlap", "40")
    assert "overlap=40 px must be smaller than patch_size=32 px" in err


def test_older_or_other_format(prepared_dataset: Path, tmp_path: Path):
    old = tmp_path / "old"
    shutil.copytree(prepared_dataset, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 0
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="format version 0, this cdseg reads version 2; run cdseg prepare again"):
        PreparedDataset.open(old)
    (old / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DataError, match="not a cdseg prepared dataset"):
        PreparedDataset.open(old)
    (old / "manifest.json").unlink()
    with pytest.raises(DataError, match="not a prepared dataset .no manifest.json.; run cdseg prepare"):
        PreparedDataset.open(old)


def test_older_format_output_is_not_silently_reused(prepared_dataset, synth_release, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(prepared_dataset, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 0
    (old / "manifest.json").write_text(json.dumps(manifest))
    rc = main(["prepare", "--input", str(synth_release), "--output", str(old), "--patch-size", "128",
               "--overlap", "0", "--val-count", "1"])
    assert rc == 2 and "pass --overwrite" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("cdseg.cli.train") is None, reason="cdseg train is not in this tree")
@pytest.mark.parametrize(("args", "match"), [
    (["--task.name", "7s"], "unknown task '7s'"),
    (["--task.name", "6s", "--task.step", "6"], "out of range"),
])
def test_unknown_task_or_step_through_cli(args, match, capsys, prepared_dataset):
    # tasks are the prepared dataset's: the name and step are checked against its manifest
    assert main(["train", "--data.dataset", str(prepared_dataset), "--output", "unused", *args]) == 2
    assert match in capsys.readouterr().err


def test_unknown_task_step_and_class_in_dataset(prepared_dataset, tmp_path):
    from cdseg.data.dataset import IncrementalDataset
    from cdseg.errors import UserError
    from cdseg.tasks import get_task

    ds = PreparedDataset.open(str(prepared_dataset))
    with pytest.raises(UserError, match="unknown task '7s'; use one of the tasks of dataset 'potsdam': offline"):
        get_task("7s", ds.manifest)
    with pytest.raises(UserError, match=r"step 3 is out of range for task '222a', which has steps 0\.\.2"):
        IncrementalDataset(ds, get_task("222a", ds.manifest), 3, "train")
    with pytest.raises(UserError, match="band.s. NIR are not in"):
        IncrementalDataset(ds, get_task("222a", ds.manifest), 0, "train", bands=["R", "NIR"])
    bad = tmp_path / "t.yaml"
    bad.write_text("steps: [[roads]]")
    with pytest.raises(UserError, match="unknown class 'roads'; valid names are"):
        get_task(str(bad), ds.manifest)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_zip_member_with_a_bad_crc(release, tmp_path, capsys, workers):
    # a stored (uncompressed) member with one pixel byte flipped: GDAL's /vsizip/ reads it without error
    folder = release / "4_Ortho_RGBIR"
    with zipfile.ZipFile(release / "4_Ortho_RGBIR.zip", "w", zipfile.ZIP_STORED) as zf:
        for tif in sorted(folder.glob("*.tif")):
            zf.write(tif, f"4_Ortho_RGBIR/{tif.name}")
    shutil.rmtree(folder)
    z = release / "4_Ortho_RGBIR.zip"
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo("4_Ortho_RGBIR/top_potsdam_2_13_RGBIR.tif")
    data = bytearray(z.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.compress_size - 200] ^= 0x5A  # inside the pixels, far from the TIFF header
    z.write_bytes(bytes(data))
    err = prepare(release, tmp_path, capsys, "--workers", workers)
    assert "4_Ortho_RGBIR.zip!4_Ortho_RGBIR/top_potsdam_2_13_RGBIR.tif is corrupt" in err
    assert "Bad CRC-32" in err and "download 4_Ortho_RGBIR.zip again" in err


@pytest.mark.parametrize("key", ["patches", "checksums", "splits"])
def test_manifest_missing_a_field(prepared_dataset: Path, tmp_path: Path, key: str):
    old = tmp_path / "old"
    shutil.copytree(prepared_dataset, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest[key]
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=rf"manifest.json has no valid '{key}' \(damaged or edited\); run cdseg prepare"):
        PreparedDataset.open(old)


def test_nested_zip_is_named(tmp_path, capsys):
    rel = tmp_path / "rel"
    main(["synth", "--output", str(rel), "--size", "64", "--train-scenes", "1", "--test-scenes", "0",
          "--products", "RGBIR,labels", "--zip"])
    capsys.readouterr()
    outer = tmp_path / "Potsdam.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        for inner in sorted(rel.glob("*.zip")):
            zf.write(inner, f"Potsdam/{inner.name}")
    shutil.rmtree(rel)
    rc = main(["prepare", "--input", str(outer), "--output", str(tmp_path / "out"), "--patch-size", "32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "Potsdam.zip holds zip files (e.g. Potsdam/4_Ortho_RGBIR.zip)" in err[0] and "extract it once" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Potsdam.zip"]
