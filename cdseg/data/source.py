"""A dataset's release as `cdseg prepare` and `cdseg synth` see it: one `Source` per dataset, and the registry.

A `Source` holds the dataset's `DatasetDefinition` and knows the release's layout: which files are a
scene's image, label (and eroded label, DSM), the official split of its scenes, and how to write
generated scenes in that layout. Adding a dataset is one module under `cdseg/data/` that defines a
`Source`, plus its name in `_MODULES` below (docs/data.md lists the files of the LoveDA change).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdseg.data.definition import DatasetDefinition
from cdseg.data.release import Entry, SceneFiles
from cdseg.errors import DataError

if TYPE_CHECKING:
    from cdseg.data.config import PrepareConfig, SynthConfig

#: dataset name -> module that defines its Source as SOURCES[name]
_MODULES: dict[str, str] = {
    "potsdam": "cdseg.data.isprs_source",
    "vaihingen": "cdseg.data.isprs_source",
    "loveda": "cdseg.data.loveda",
    "isaid": "cdseg.data.isaid",
}
DATASETS: tuple[str, ...] = tuple(_MODULES)


class Source:
    """How one dataset's release is read and generated. Subclasses override what differs."""

    name: str = ""
    definition: DatasetDefinition
    #: image products: product -> band names in file order
    products: dict[str, tuple[str, ...]] = {"RGB": ("R", "G", "B")}
    #: the release's usual patch overlap (px), used when --overlap is not given (None: prepare's default)
    overlap: int | None = None
    #: images of varied size: one smaller than a patch is kept (evaluated whole, no training patch), not refused
    small_scenes: bool = False

    def detect(self, entries: list[Entry]) -> bool:
        """Whether these files look like this dataset's release."""
        return False

    def scenes(self, entries: list[Entry]) -> dict[str, SceneFiles]:
        """Scene id -> its files, for every scene that has at least an image."""
        raise NotImplementedError

    def official_splits(self, found: dict[str, SceneFiles]) -> dict[str, list[str]]:
        """The release's own `train` and `test` scene ids, in order (a scene in neither is left out)."""
        split = {s: f.split or "train" for s, f in found.items()}
        return {k: sorted(s for s, v in split.items() if v == k) for k in ("train", "test")}

    def channels(self, cfg: PrepareConfig) -> tuple[str, ...]:
        """The bands to keep for `--channels` (auto: the definition's)."""
        if cfg.channels not in ("auto", "".join(self.definition.bands)):
            raise DataError(f"--channels {cfg.channels}: {self.name} images have bands "
                            f"{','.join(self.definition.bands)} only; use --channels auto")
        return self.definition.bands

    def label_of(self, scene: SceneFiles, cfg: PrepareConfig) -> Entry:
        """The label file a scene is prepared with; a DataError saying what is missing otherwise."""
        if scene.label is None:
            image = next(iter(scene.images.values()))
            raise DataError(f"image {image} has no label in {cfg.input}; add its label file or leave the scene "
                            "out with --scenes")
        return scene.label

    def label_sets(self, scene: SceneFiles) -> dict[str, Entry | None]:
        """Every label set the release has for a scene: `full`, and `eroded` (boundaries ignored) where shipped."""
        return {"full": scene.label}

    def dsm_range(self) -> tuple[float, float]:
        """DSM values mapped to 0..255."""
        return (0.0, 255.0)

    def max_scenes(self, split: str) -> int | None:
        """How many scenes `cdseg synth` can write for a split (None: any number)."""
        return None

    def synth(self, root: Path, cfg: SynthConfig) -> list[str]:
        """Write generated scenes in the release layout under `root`; returns the scene ids."""
        raise DataError(f"cdseg synth cannot generate {self.name} scenes; choose another --dataset")

    def no_products(self, cfg: SynthConfig) -> None:
        """A release without separate products refuses --products (rather than ignoring it)."""
        if cfg.products:
            raise DataError(f"--products {','.join(cfg.products)}: the {self.name} release ships images and labels "
                            "together, with no products to choose; leave --products out")


def get_source(name: str, definition_file: str | None = None) -> Source:
    """The Source of a shipped dataset, or of a user's YAML definition."""
    if definition_file:
        from cdseg.data.user import UserSource

        return UserSource.from_file(definition_file)
    if name not in _MODULES:
        raise DataError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)} or --dataset-def my.yaml")
    module = importlib.import_module(_MODULES[name])
    source: Source = module.SOURCES[name]
    return source


def definition_fields(name: str) -> dict[str, Any]:
    """A shipped dataset's manifest fields (classes, background, tasks), before anything is prepared."""
    return get_source(name).definition.manifest_fields()


def detect_source(entries: list[Entry], where: str) -> Source:
    """The shipped dataset whose release these files are."""
    nested = [e for e in entries if e.archive and e.path.lower().endswith(".zip")]
    hits = [s for s in (get_source(n) for n in DATASETS) if s.detect(entries)]
    if not hits and nested:
        raise DataError(f"{nested[0].archive} holds zip files (e.g. {nested[0].path}), not images: extract it once and "
                        "pass the folder of the release's zips; cdseg reads zips in place but not a zip of zips")
    names = sorted({s.name for s in hits})
    if len(names) != 1:
        found = f"files of {' and '.join(names)}" if names else "no file of a known release"
        raise DataError(f"{where}: found {found}; expected e.g. 4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif, "
                        "top/top_mosaic_09cm_area1.tif, Train/Urban/images_png/1366.png or train/images/P0001.png; "
                        "pass the release folder, set --dataset, or describe your data with --dataset-def")
    return hits[0]
