"""Label colours <-> class indices, official scene ids and file names."""

from __future__ import annotations

import numpy as np
import pytest

from cdseg.data import isprs
from cdseg.errors import DataError


def test_colours_round_trip_and_black_is_ignore():
    label = np.array([[0, 1, 2, 3], [4, 5, 255, 0]], np.uint8)
    rgb = isprs.index_to_colours(label)
    assert rgb.shape == (3, 2, 4) and tuple(rgb[:, 0, 1]) == (0, 0, 255)
    np.testing.assert_array_equal(isprs.colours_to_index(rgb), label)


@pytest.mark.parametrize("colour", [(255, 0, 255), (0, 0, 254), (128, 128, 128)])
def test_unknown_colour_is_an_error_not_class_0(colour):
    rgb = isprs.index_to_colours(np.zeros((4, 4), np.uint8))
    rgb[:, 1, :2] = np.array(colour, np.uint8)[:, None]
    with pytest.raises(DataError, match=rf"x.tif: 2 pixels .*\({colour[0]},{colour[1]},{colour[2]}\) x2"):
        isprs.colours_to_index(rgb, "x.tif")


def test_official_splits_and_names():
    assert len(isprs.POTSDAM_TRAIN) == 24 and len(isprs.POTSDAM_TEST) == 14
    assert len(isprs.VAIHINGEN_TRAIN) == 16 and len(isprs.VAIHINGEN_TEST) == 17
    assert not set(isprs.POTSDAM_TRAIN) & set(isprs.POTSDAM_TEST)
    assert isprs.image_name("potsdam", "2_10", "RGBIR") == "top_potsdam_2_10_RGBIR.tif"
    assert isprs.label_name("potsdam", "2_10", boundary=False) == "top_potsdam_2_10_label_noBoundary.tif"
    assert isprs.dsm_name("potsdam", "2_10") == "dsm_potsdam_02_10_normalized_lastools.jpg"
    assert isprs.image_name("vaihingen", "area3") == "top_mosaic_09cm_area3.tif"
    assert isprs.dsm_name("vaihingen", "area3") == "dsm_09cm_matching_area3.tif"


def test_colour_tolerance_snaps_near_colours_only():
    rgb = isprs.index_to_colours(np.array([[1, 4]], np.uint8))
    rgb[:, 0, 0] = (3, 2, 250)  # near blue (building)
    rgb[:, 0, 1] = (252, 255, 1)  # near yellow (car)
    np.testing.assert_array_equal(isprs.colours_to_index(rgb, tolerance=5), [[1, 4]])
    with pytest.raises(DataError):
        isprs.colours_to_index(rgb)
    rgb[:, 0, 0] = (128, 0, 255)
    with pytest.raises(DataError, match=r"\(128,0,255\)"):
        isprs.colours_to_index(rgb, tolerance=5)
