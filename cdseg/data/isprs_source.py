"""The ISPRS Potsdam and Vaihingen releases as `Source`s (file names and zips in `release`, facts in `isprs`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cdseg.data import isprs
from cdseg.data.release import _POTSDAM_IMAGE, _POTSDAM_LABEL, _VAIHINGEN_TOP, Entry, SceneFiles, group_scenes
from cdseg.data.source import Source
from cdseg.errors import DataError

if TYPE_CHECKING:
    from cdseg.data.config import PrepareConfig, SynthConfig

VAIHINGEN_ZIP = "ISPRS_semantic_labeling_Vaihingen"
VAIHINGEN_GT_ZIP = "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE"
VAIHINGEN_NOB_ZIP = "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE"


class IsprsSource(Source):
    """Potsdam or Vaihingen: colour labels, full and eroded (`_noBoundary`) ground truth, DSM."""

    def __init__(self, city: str) -> None:
        self.name = city
        self.definition = isprs.POTSDAM if city == "potsdam" else isprs.VAIHINGEN
        self.products = ({p: b for p, (_, b) in isprs.POTSDAM_PRODUCTS.items()} if city == "potsdam"
                         else {"IRRG": ("IR", "R", "G")})

    def detect(self, entries: list[Entry]) -> bool:
        if self.name == "potsdam":
            return any(_POTSDAM_IMAGE.match(e.name) or _POTSDAM_LABEL.match(e.name) for e in entries)
        return any(_VAIHINGEN_TOP.match(e.name) for e in entries)

    def scenes(self, entries: list[Entry]) -> dict[str, SceneFiles]:
        return group_scenes(entries, self.name)

    def official_splits(self, found: dict[str, SceneFiles]) -> dict[str, list[str]]:
        return {k: list(v) for k, v in isprs.OFFICIAL_SPLITS[self.name].items()}

    def channels(self, cfg: PrepareConfig) -> tuple[str, ...]:
        channels = cfg.channels if cfg.channels != "auto" else ("RGBIR" if self.name == "potsdam" else "IRRG")
        if self.name == "vaihingen" and channels != "IRRG":
            raise DataError(f"--channels {channels}: the Vaihingen release has only IRRG images; use --channels IRRG")
        return isprs.CHANNEL_BANDS[channels]

    def _missing(self, sid: str, image: Entry, cfg: PrepareConfig, boundary: bool) -> DataError:
        want = isprs.label_name(self.name, sid, boundary)
        if self.name == "potsdam":
            product = isprs.POTSDAM_LABELS if boundary else isprs.POTSDAM_LABELS_NOB
            return DataError(f"image {image} has no label {want} in {cfg.input}; add {product}.zip (or its "
                             "files) or leave the scene out with --scenes")
        zip_name = VAIHINGEN_GT_ZIP if boundary else VAIHINGEN_NOB_ZIP
        return DataError(f"image {image} has no label {want} in {cfg.input}: the test scenes' labels are in "
                         f"{zip_name}.zip, not in the main zip; add it next to {VAIHINGEN_ZIP}.zip or leave "
                         "the scene out with --scenes")

    def label_of(self, scene: SceneFiles, cfg: PrepareConfig) -> Entry:
        label = scene.label if cfg.boundary else scene.label_nob
        if label is None:
            raise self._missing(scene.scene_id, next(iter(scene.images.values())), cfg, cfg.boundary)
        return label

    def label_sets(self, scene: SceneFiles) -> dict[str, Entry | None]:
        return {"full": scene.label, "eroded": scene.label_nob}

    def dsm_range(self) -> tuple[float, float]:
        return isprs.DSM_RANGE[self.name]

    def max_scenes(self, split: str) -> int | None:
        return len(isprs.OFFICIAL_SPLITS[self.name][split])

    def synth(self, root: Path, cfg: SynthConfig) -> list[str]:
        from cdseg.data.synth_release import write_isprs

        return write_isprs(root, cfg)


SOURCES = {"potsdam": IsprsSource("potsdam"), "vaihingen": IsprsSource("vaihingen")}
