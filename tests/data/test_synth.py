"""`cdseg synth`: layout and names of the real release, georeference, zips, determinism, plausibility."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cdseg.cli.main import main
from cdseg.data import isprs
from cdseg.data.synth import generate_scene


def test_potsdam_layout(synth_release: Path):
    names = sorted(p.relative_to(synth_release).as_posix() for p in synth_release.rglob("*") if p.is_file())
    for sid in ("2_10", "3_10", "3_11", "3_12", "2_13", "2_14"):
        x, y = sid.split("_")
        assert f"2_Ortho_RGB/top_potsdam_{sid}_RGB.tif" in names
        assert f"3_Ortho_IRRG/top_potsdam_{sid}_IRRG.tif" in names
        assert f"4_Ortho_RGBIR/top_potsdam_{sid}_RGBIR.tif" in names
        assert f"5_Labels_all/top_potsdam_{sid}_label.tif" in names
        assert f"5_Labels_all_noBoundary/top_potsdam_{sid}_label_noBoundary.tif" in names
        assert f"1_DSM_normalisation/dsm_potsdam_{int(x):02d}_{int(y):02d}_normalized_lastools.jpg" in names
    assert len([n for n in names if n.endswith("_RGBIR.tif")]) == 6


def test_georeferenced_and_bands_consistent(synth_release: Path):
    with rasterio.open(synth_release / "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif") as src:
        assert src.count == 4 and src.dtypes[0] == "uint8" and src.crs.to_epsg() == 32633
        rgbir, transform = src.read(), src.transform
    with rasterio.open(synth_release / "3_Ortho_IRRG/top_potsdam_2_10_IRRG.tif") as src:
        irrg = src.read()
        assert src.transform == transform
    with rasterio.open(synth_release / "5_Labels_all/top_potsdam_2_10_label.tif") as src:
        assert src.count == 3 and src.crs.to_epsg() == 32633
        label = isprs.colours_to_index(src.read())
    np.testing.assert_array_equal(irrg, rgbir[[3, 0, 1]])
    assert set(np.unique(label)) <= set(range(6))
    with rasterio.open(synth_release / "5_Labels_all_noBoundary/top_potsdam_2_10_label_noBoundary.tif") as src:
        eroded = isprs.colours_to_index(src.read())
    assert (eroded == 255).any() and ((eroded == label) | (eroded == 255)).all()


def test_deterministic_and_seed_dependent():
    a, b, c = generate_scene(128, [1, 2]), generate_scene(128, [1, 2]), generate_scene(128, [1, 3])
    np.testing.assert_array_equal(a.label, b.label)
    for band in "RGB":
        np.testing.assert_array_equal(a.bands[band], b.bands[band])
    assert not np.array_equal(a.label, c.label)


def test_class_frequencies_are_aerial_like():
    freq = np.zeros(6)
    for seed in range(3):
        scene = generate_scene(512, [seed])
        freq += np.bincount(scene.label.ravel(), minlength=6) / scene.label.size / 3
    imp, bld, low, tree, car, clutter = freq
    assert 0.15 < imp < 0.45 and 0.15 < bld < 0.40 and 0.10 < low < 0.40 and 0.07 < tree < 0.25
    assert 0.003 < car < 0.04  # cars are rare
    assert 0.01 < clutter < 0.08
    assert car < min(imp, bld, low, tree)


def _blur(a: np.ndarray, k: int = 7, passes: int = 3) -> np.ndarray:
    """Three box-filter passes (about a Gaussian), so edge orientations are not snapped to the pixel grid."""
    for _ in range(passes):
        for axis in (0, 1):
            pad = [(k // 2 + 1, k // 2) if i == axis else (0, 0) for i in range(2)]
            c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis)
            n = c.shape[axis]
            a = (np.take(c, range(k, n), axis=axis) - np.take(c, range(0, n - k), axis=axis)) / k
    return a


def _grid_angle(label: np.ndarray) -> float:
    """Dominant orientation (degrees, modulo 90) of the edges of the impervious map: the street grid."""
    f = _blur((label == 0).astype(np.float64))
    gy, gx = np.gradient(f)
    theta, weight = np.arctan2(gy, gx), gy * gy + gx * gx
    # 4-fold symmetric orientation: average the angle x 4 (a grid and its 90-degree turn are the same)
    c, s = float((weight * np.cos(4 * theta)).sum()), float((weight * np.sin(4 * theta)).sum())
    return float(np.degrees(np.arctan2(s, c) / 4) % 90)


def test_scenes_have_no_canonical_orientation():
    # MiB-CD's premise: a top-down tile has no preferred orientation. The street grid (and the buildings and
    # cars aligned with it) of generated scenes must point anywhere, not only along the image axes.
    angles = np.sort([_grid_angle(generate_scene(256, [seed]).label) for seed in range(16)])
    uniform = (np.arange(1, 17) - 0.5) / 16 * 90
    ks = float(np.max(np.abs(angles - uniform))) / 90  # Kolmogorov-Smirnov distance to U(0, 90)
    assert ks < 0.39, f"grid angles {angles.round()} are not spread over 0-90 degrees (KS {ks:.2f}, 1% level 0.39)"
    axis_aligned = np.sum((angles < 5) | (angles > 85))
    assert axis_aligned <= 4, f"{axis_aligned} of 16 scenes have an axis-aligned grid: {angles.round()}"


def test_classes_are_separable_by_colour():
    """A trivial per-pixel nearest-mean classifier on (R, G, B, IR) beats chance by far: learnable."""
    train, test = generate_scene(384, [10]), generate_scene(384, [11])
    def feats(s):
        return np.stack([s.bands[b].ravel() for b in ("R", "G", "B", "IR")], 1).astype(np.float32)
    x, y = feats(train), train.label.ravel()
    means = np.stack([x[y == c].mean(0) for c in range(6)])
    pred = np.argmin(((feats(test)[:, None, :] - means[None]) ** 2).sum(-1), 1)
    truth = test.label.ravel()
    ious = [((pred == c) & (truth == c)).sum() / max(((pred == c) | (truth == c)).sum(), 1) for c in range(6)]
    assert np.mean(ious) > 0.25, ious
    assert ious[3] > 0.3  # trees vs low vegetation differ in IR and texture


def test_zip_option_and_vaihingen(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "pz"
    assert main(["synth", "--output", str(out), "--size", "96", "--train-scenes", "1", "--test-scenes", "1",
                 "--zip", "--products", "RGBIR,labels"]) == 0
    zips = sorted(p.name for p in out.glob("*.zip"))
    assert zips == ["4_Ortho_RGBIR.zip", "5_Labels_all.zip"]
    with zipfile.ZipFile(out / "5_Labels_all.zip") as zf:  # the release's label zip has no folder inside
        assert sorted(zf.namelist()) == ["top_potsdam_2_10_label.tif", "top_potsdam_2_13_label.tif"]
    with zipfile.ZipFile(out / "4_Ortho_RGBIR.zip") as zf:
        assert "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif" in zf.namelist()
    again = tmp_path / "pz2"
    main(["synth", "--output", str(again), "--size", "96", "--train-scenes", "1", "--test-scenes", "1",
          "--zip", "--products", "RGBIR,labels"])
    assert (out / "4_Ortho_RGBIR.zip").read_bytes() == (again / "4_Ortho_RGBIR.zip").read_bytes()

    vh = tmp_path / "vh"
    assert main(["synth", "--output", str(vh), "--city", "vaihingen", "--size", "96", "--train-scenes", "2",
                 "--test-scenes", "1"]) == 0
    assert (vh / "top/top_mosaic_09cm_area1.tif").is_file()
    assert (vh / "gts_for_participants/top_mosaic_09cm_area3.tif").is_file()
    assert (vh / "dsm/dsm_09cm_matching_area2.tif").is_file()
    with rasterio.open(vh / "top/top_mosaic_09cm_area1.tif") as src:
        assert src.count == 3 and src.crs is not None and src.height > src.width


def test_existing_output_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("keep")
    assert main(["synth", "--output", str(tmp_path / "x"), "--size", "64", "--train-scenes", "1",
                 "--test-scenes", "0"]) == 2
    assert "already exists" in capsys.readouterr().err
