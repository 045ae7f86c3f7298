"""ISPRS Potsdam / Vaihingen facts: classes, label colours, official scene ids and file names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdseg.data.definition import DatasetDefinition
from cdseg.errors import DataError

#: Raw class names; the index is the raw class index stored in a prepared dataset.
CLASSES: tuple[str, ...] = ("impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter")
#: Ground-truth colour (R, G, B) of each raw class.
COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0),
)
IGNORE_INDEX = 255
#: Boundary pixels of the `_noBoundary` labels are black and become IGNORE_INDEX.
IGNORE_COLOUR = (0, 0, 0)
CITIES = ("potsdam", "vaihingen")

POTSDAM_TRAIN: tuple[str, ...] = (
    "2_10", "3_10", "3_11", "3_12", "4_11", "4_12", "5_10", "5_12", "6_10", "6_11", "6_12", "6_8",
    "6_9", "7_11", "7_12", "7_7", "7_9", "2_11", "2_12", "4_10", "5_11", "6_7", "7_10", "7_8",
)
POTSDAM_TEST: tuple[str, ...] = (
    "2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15", "6_13", "6_14", "6_15", "7_13",
)
VAIHINGEN_TRAIN: tuple[str, ...] = tuple(f"area{i}" for i in (1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37))
VAIHINGEN_TEST: tuple[str, ...] = tuple(
    f"area{i}" for i in (2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38)
)
OFFICIAL_SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "potsdam": {"train": POTSDAM_TRAIN, "test": POTSDAM_TEST},
    "vaihingen": {"train": VAIHINGEN_TRAIN, "test": VAIHINGEN_TEST},
}

#: Potsdam image products: folder (= zip stem), file suffix, band names in file order.
POTSDAM_PRODUCTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "RGB": ("2_Ortho_RGB", ("R", "G", "B")),
    "IRRG": ("3_Ortho_IRRG", ("IR", "R", "G")),
    "RGBIR": ("4_Ortho_RGBIR", ("R", "G", "B", "IR")),
}
POTSDAM_LABELS = "5_Labels_all"
POTSDAM_LABELS_NOB = "5_Labels_all_noBoundary"
POTSDAM_DSM = "1_DSM_normalisation"
VAIHINGEN_TOP = "top"
VAIHINGEN_GT = "gts_for_participants"
VAIHINGEN_GT_NOB = "gts_eroded_for_participants"
VAIHINGEN_DSM = "dsm"
#: Band names per `channels` choice.
CHANNEL_BANDS: dict[str, tuple[str, ...]] = {"RGB": ("R", "G", "B"), "RGBIR": ("R", "G", "B", "IR"), "IRRG": ("IR", "R", "G")}
#: Ground sample distance (m/px) and a UTM CRS for each city (used by synth; read from files by prepare).
GSD = {"potsdam": 0.05, "vaihingen": 0.09}
CRS = {"potsdam": "EPSG:32633", "vaihingen": "EPSG:32632"}
#: DSM value range mapped to 0..255 (Potsdam's normalised DSM is already 8-bit; Vaihingen's is metres).
DSM_RANGE = {"potsdam": (0.0, 255.0), "vaihingen": (240.0, 361.0)}


#: The original project's ISPRS tasks (seed-spec 3.1), as class names per step.
TASKS: dict[str, tuple[tuple[str, ...], ...]] = {
    "offline": (CLASSES,),
    "222a": (("impervious_surfaces", "low_vegetation"), ("building", "tree"), ("car", "clutter")),
    "321": (("building", "tree", "clutter"), ("impervious_surfaces", "low_vegetation"), ("car",)),
    "6s": (("building",), ("tree",), ("impervious_surfaces",), ("low_vegetation",), ("car",), ("clutter",)),
}


def definition(city: str, bands: tuple[str, ...] = ("R", "G", "B", "IR")) -> DatasetDefinition:
    """The definition of Potsdam or Vaihingen: six colour classes, black = ignore, no background class."""
    return DatasetDefinition(city, CLASSES, colours=COLOURS, ignore_colours=(IGNORE_COLOUR,), bands=bands,
                             splits=OFFICIAL_SPLITS[city], tasks=TASKS)


POTSDAM = definition("potsdam")
VAIHINGEN = definition("vaihingen", ("IR", "R", "G"))


def potsdam_xy(scene_id: str) -> tuple[int, int]:
    """`"2_10"` -> (2, 10)."""
    x, y = scene_id.split("_")
    return int(x), int(y)


def image_name(city: str, scene_id: str, product: str = "RGBIR") -> str:
    """File name of a scene's image in the release (`top_potsdam_2_10_RGBIR.tif`, `top_mosaic_09cm_area1.tif`)."""
    if city == "potsdam":
        return f"top_potsdam_{scene_id}_{product}.tif"
    return f"top_mosaic_09cm_{scene_id}.tif"


def label_name(city: str, scene_id: str, boundary: bool = True) -> str:
    """File name of a scene's ground truth (with boundary, or the eroded `_noBoundary` one)."""
    if city == "potsdam":
        return f"top_potsdam_{scene_id}_label{'' if boundary else '_noBoundary'}.tif"
    return f"top_mosaic_09cm_{scene_id}{'' if boundary else '_noBoundary'}.tif"


def dsm_name(city: str, scene_id: str) -> str:
    """File name of a scene's DSM (`dsm_potsdam_02_10_normalized_lastools.jpg`, `dsm_09cm_matching_area1.tif`)."""
    if city == "potsdam":
        x, y = potsdam_xy(scene_id)
        return f"dsm_potsdam_{x:02d}_{y:02d}_normalized_lastools.jpg"
    return f"dsm_09cm_matching_{scene_id}.tif"


def _bit_lut() -> np.ndarray:
    # index by (r & 1) | (g & 1) << 1 | (b & 1) << 2 for pixels whose channels are all 0 or 255
    lut = np.full(8, 254, dtype=np.uint8)  # 254 marks "not an ISPRS colour"
    for index, (r, g, b) in enumerate(COLOURS):
        lut[(r & 1) | (g & 1) << 1 | (b & 1) << 2] = index
    lut[0] = IGNORE_INDEX
    return lut


_BIT_LUT = _bit_lut()
_STRIP = 64  # rows per conversion strip


def _convert(rgb: np.ndarray, out: np.ndarray) -> bool:
    """Convert into `out`; False if some pixel is not an ISPRS colour."""
    r, g, b = rgb[0], rgb[1], rgb[2]
    # every ISPRS colour has channels of 0 or 255 only: x + 1 (mod 256) is then 1 or 0
    odd = np.add(r, 1, dtype=np.uint8)
    odd |= np.add(g, 1, dtype=np.uint8)
    odd |= np.add(b, 1, dtype=np.uint8)
    code = r & 1
    code |= (g & 1) << 1
    code |= (b & 1) << 2
    np.take(_BIT_LUT, code, out=out)
    return not ((odd > 1).any() or (out == 254).any())


def colours_to_index(rgb: np.ndarray, source: str | Path = "label", tolerance: int = 0,
                     out: np.ndarray | None = None) -> np.ndarray:
    """Map a 3xHxW uint8 ground-truth image to HxW raw class indices (black -> 255).

    An unknown colour is a `DataError` naming the file, the colour and its pixel count: it is never
    silently turned into class 0, as the original project did. With `tolerance` > 0, channel values
    within that distance of 0 or 255 are snapped to it first (labels with compression noise).
    `out` (HxW uint8) receives the result if given.
    """
    if rgb.ndim != 3 or rgb.shape[0] < 3 or rgb.dtype != np.uint8:
        raise DataError(f"{source}: a label must be an 8-bit RGB image with 3 bands, got {rgb.dtype} {rgb.shape}; "
                        "use the colour ground truth of the ISPRS release")
    if tolerance > 0:
        snap = np.arange(256, dtype=np.int32)
        snap[: tolerance + 1], snap[255 - tolerance :] = 0, 255
        rgb = snap.astype(np.uint8)[rgb[:3]]
    if out is None:
        out = np.empty(rgb.shape[1:], np.uint8)
    ok = True
    for y in range(0, rgb.shape[1], _STRIP):  # cache-sized strips: about 1.7x faster than whole arrays
        ok &= _convert(rgb[:3, y : y + _STRIP], out[y : y + _STRIP])
    if not ok:
        r, g, b = rgb[0], rgb[1], rgb[2]
        bad = (out == 254) | (np.add(r, 1, dtype=np.uint8) > 1) | (np.add(g, 1, dtype=np.uint8) > 1) | \
              (np.add(b, 1, dtype=np.uint8) > 1)
        packed = (r[bad].astype(np.uint32) << 16) | (g[bad].astype(np.uint32) << 8) | b[bad]
        colours, counts = np.unique(packed, return_counts=True)
        top = np.argsort(-counts)[:3]
        shown = ", ".join(f"({c >> 16},{(c >> 8) & 255},{c & 255}) x{n}" for c, n in zip(colours[top], counts[top], strict=True))
        raise DataError(f"{source}: {int(bad.sum())} pixels have a colour that is not an ISPRS class colour "
                        f"({shown}); allowed colours are {dict(zip(CLASSES, COLOURS, strict=True))} and black (ignore); "
                        "fix or replace the label file")
    return out


def index_to_colours(label: np.ndarray) -> np.ndarray:
    """HxW raw indices -> 3xHxW uint8 ground-truth colours (255 -> black)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(COLOURS)] = np.asarray(COLOURS, dtype=np.uint8)
    return np.moveaxis(table[label], -1, 0)
