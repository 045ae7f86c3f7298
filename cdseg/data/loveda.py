"""LoveDA (Wang et al., NeurIPS 2021 Datasets track): urban and rural 1024 px RGB tiles at 0.3 m, 7 classes.

Release layout (Train.zip, Val.zip, Test.zip, or their folders): `Train/Urban/images_png/1366.png` with its
label `Train/Urban/masks_png/1366.png` (one band; 0 = no data, ignored; 1..7 = the classes below), the
same under `Rural/` and `Val/`. The Test labels are not public, so the official Val scenes are the test
split here (as in the literature) and validation scenes are drawn from Train.
Background is a real class (LoveDA labels it), so it is the model's output 0 and belongs to step 0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cdseg.data.definition import DatasetDefinition
from cdseg.data.release import Entry, SceneFiles
from cdseg.data.source import Source

if TYPE_CHECKING:
    from cdseg.data.config import SynthConfig

CLASSES = ("background", "building", "road", "water", "barren", "forest", "agriculture")
#: Display colours (the release has none: labels are values 1..7).
PALETTE = ((255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0), (255, 195, 128))
NO_DATA = 0
TASKS: dict[str, tuple[tuple[str, ...], ...]] = {
    "offline": (CLASSES,),
    "4-3": (CLASSES[:4], CLASSES[4:]),
    "4-1": (CLASSES[:4], ("barren",), ("forest",), ("agriculture",)),  # then one class per step
}
DEFINITION = DatasetDefinition("loveda", CLASSES, values=(1, 2, 3, 4, 5, 6, 7), ignore_values=(NO_DATA,),
                               background="background", bands=("R", "G", "B"), palette=PALETTE, tasks=TASKS)
_FILE = re.compile(r"(?:^|/)(Train|Val|Test)/(Urban|Rural)/(images_png|masks_png)/(\d+)\.png$", re.IGNORECASE)
#: generated scenes: where each release folder's numbering starts (the real Train/Val files are numbered on)
_FIRST = {("Train", "Rural"): 0, ("Train", "Urban"): 1366, ("Val", "Rural"): 2522, ("Val", "Urban"): 3514}


def scene_id(domain: str, number: str) -> str:
    """`urban_1366`: the domain keeps urban and rural files apart."""
    return f"{domain.lower()}_{int(number)}"


class LoveDASource(Source):
    """The LoveDA release: PNG pairs under Train/ and Val/ (Test has no labels and is skipped)."""

    name = "loveda"
    definition = DEFINITION
    products = {"RGB": ("R", "G", "B")}

    def detect(self, entries: list[Entry]) -> bool:
        return any(_FILE.search(e.path.replace("\\", "/")) for e in entries)

    def scenes(self, entries: list[Entry]) -> dict[str, SceneFiles]:
        found: dict[str, SceneFiles] = {}
        for e in entries:
            m = _FILE.search(e.path.replace("\\", "/"))
            if m is None or m.group(1).lower() == "test":
                continue
            sid = scene_id(m.group(2), m.group(4))
            scene = found.setdefault(sid, SceneFiles(sid, split="train" if m.group(1).lower() == "train" else "test"))
            if m.group(3).lower() == "images_png":
                scene.images["RGB"] = e
            else:
                scene.label = e
        return {s: f for s, f in found.items() if f.images}

    def synth(self, root: Path, cfg: SynthConfig) -> list[str]:
        from cdseg.data.synth_release import run_parallel, zip_folder

        self.no_products(cfg)
        jobs = []
        for split, count in (("Train", cfg.train_scenes), ("Val", cfg.test_scenes)):
            for i in range(count):
                domain = ("Urban", "Rural")[i % 2]
                jobs.append((root, split, domain, _FIRST[(split, domain)] + i // 2, cfg.size, cfg.seed, cfg.gsd))
        run_parallel(write_scene, jobs, cfg.workers)
        if cfg.zip:
            for split in ("Train", "Val"):
                if (root / split).is_dir():
                    zip_folder(root, split, split, flat=False)
        return [scene_id(j[2], str(j[3])) for j in jobs]


def write_scene(root: Path, split: str, domain: str, number: int, size: int, seed: int, gsd: float | None) -> str:
    """One generated tile as LoveDA ships it: an RGB PNG and a one-band PNG of values 0..7."""
    import zlib

    from PIL import Image

    from cdseg.data.synth import _noise, generate_scene

    sid = scene_id(domain, str(number))
    scene = generate_scene(size, [seed, zlib.crc32(f"loveda/{sid}".encode())], gsd)
    rng = np.random.default_rng([seed, number])
    # the generator's ISPRS-like classes -> LoveDA values: impervious and cars -> road, building -> building,
    # trees -> forest, clutter -> barren; low vegetation is split by a smooth field into water, farmland
    # and background
    values = np.array([3, 2, 0, 6, 3, 5], np.uint8)[scene.label]
    field = _noise(rng, scene.label.shape, size / 6)
    low = scene.label == 2
    values[low] = np.where(field[low] < -0.6, 4, np.where(field[low] < 0.2, 7, 1))
    rgb = np.stack([scene.bands[b] for b in "RGB"], axis=-1)
    water = values == 4
    rgb[water] = (rgb[water] * 0.3 + np.array([20, 45, 90]) * 0.7).astype(np.uint8)
    if domain == "Rural":  # a no-data border, as at the edge of some real tiles
        edge = max(4, size // 16)
        values[:, -edge:] = NO_DATA
        rgb[:, -edge:] = 0
    for folder, array in (("images_png", rgb), ("masks_png", values)):
        path = root / split / domain / folder / f"{number}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
    return sid


SOURCES = {"loveda": LoveDASource()}
