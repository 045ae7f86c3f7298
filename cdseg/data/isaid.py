"""iSAID (Waqas Zamir et al., CVPR workshops 2019): DOTA-v1.0 images with 15 object classes plus background.

Release layout (train/val folders or zips): images `train/images/P0000.png` (from DOTA-v1.0) and semantic
masks `train/Semantic_masks/images/P0000_instance_color_RGB.png` (RGB colours below; the instance masks
are not used). Test labels are not public, so the official val images are the test split here and
validation scenes are drawn from train. As in the original project, P1527 and P1530 are left out, and
background (black) is a real class: the model's output 0, listed in step 0 of every task.
Images are large and of varied size: prepare tiles them as the original did (512 px patches, a 64 px
overlap unless `--overlap` is given); an image smaller than a patch is kept for evaluation (whole) but
gives no training patch (the original resized it).
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cdseg.data.definition import DatasetDefinition
from cdseg.data.release import Entry, SceneFiles
from cdseg.data.source import Source

if TYPE_CHECKING:
    from cdseg.data.config import SynthConfig

CLASSES = ("background", "ship", "storage_tank", "baseball_diamond", "tennis_court", "basketball_court",
           "ground_track_field", "bridge", "large_vehicle", "small_vehicle", "helicopter", "swimming_pool",
           "roundabout", "soccer_ball_field", "plane", "harbor")
COLOURS = ((0, 0, 0), (0, 0, 63), (0, 191, 127), (0, 63, 0), (0, 63, 127), (0, 63, 191), (0, 63, 255), (0, 127, 63),
           (0, 127, 127), (0, 0, 127), (0, 0, 191), (0, 0, 255), (0, 63, 63), (0, 127, 191), (0, 127, 255),
           (0, 100, 155))
EXCLUDED = ("P1527", "P1530")  # left out by the original project


def _steps(*groups: list[int]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(CLASSES[i] for i in g) for g in groups)


#: The original project's iSAID tasks (seed-spec 3.1), by raw index.
TASKS = {
    "offline": (CLASSES,),
    "4s": _steps([0, 3, 4, 5, 6, 11, 13], [7, 8, 9, 12], [1, 2, 15], [10, 14]),
}
DEFINITION = DatasetDefinition("isaid", CLASSES, colours=COLOURS, background="background", bands=("R", "G", "B"),
                               tasks=TASKS)
_IMAGE = re.compile(r"(?:^|/)(train|val)/(?:.*/)?(P\d{4})\.png$", re.IGNORECASE)
_LABEL = re.compile(r"(?:^|/)(train|val)/(?:.*/)?(P\d{4})_instance_color_RGB\.png$", re.IGNORECASE)


class ISAIDSource(Source):
    """The iSAID release: PNG images and colour semantic masks under train/ and val/."""

    name = "isaid"
    definition = DEFINITION
    products = {"RGB": ("R", "G", "B")}
    overlap = 64  # the original project's iSAID tiling: 512 px patches every 448 px
    small_scenes = True  # DOTA images vary in size

    def detect(self, entries: list[Entry]) -> bool:
        return any(_LABEL.search(e.path.replace("\\", "/")) for e in entries)

    def scenes(self, entries: list[Entry]) -> dict[str, SceneFiles]:
        found: dict[str, SceneFiles] = {}
        for e in entries:
            path = e.path.replace("\\", "/")
            label, image = _LABEL.search(path), _IMAGE.search(path)
            m = label or image
            if m is None or m.group(2).upper() in EXCLUDED or "instance_masks" in path.lower():
                continue
            sid = m.group(2).upper()
            scene = found.setdefault(sid, SceneFiles(sid, split="train" if m.group(1).lower() == "train" else "test"))
            if label is not None:
                scene.label = e
            else:
                scene.images["RGB"] = e
        return {s: f for s, f in found.items() if f.images}

    def synth(self, root: Path, cfg: SynthConfig) -> list[str]:
        from cdseg.data.synth_release import run_parallel, zip_folder

        self.no_products(cfg)
        jobs = [(root, "train", i, cfg.size, cfg.seed, cfg.gsd) for i in range(cfg.train_scenes)]
        jobs += [(root, "val", cfg.train_scenes + i, cfg.size, cfg.seed, cfg.gsd) for i in range(cfg.test_scenes)]
        run_parallel(write_scene, jobs, cfg.workers)
        if cfg.zip:
            for split in ("train", "val"):
                if (root / split).is_dir():
                    zip_folder(root, split, split, flat=False)
        return [f"P{j[2]:04d}" for j in jobs]


def write_scene(root: Path, split: str, number: int, size: int, seed: int, gsd: float | None) -> str:
    """One generated image with objects of every class, and its colour mask, as iSAID ships them."""
    from PIL import Image

    from cdseg.data.synth import generate_scene

    sid = f"P{number:04d}"
    scene = generate_scene(size, [seed, zlib.crc32(f"isaid/{sid}".encode())], gsd)
    rng = np.random.default_rng([seed, number, 1])
    rgb = np.stack([scene.bands[b] for b in "RGB"], axis=-1)
    index = np.zeros(scene.label.shape, np.uint8)  # background everywhere, then one or two objects per class
    index[scene.label == 4] = CLASSES.index("small_vehicle")
    side = max(4, size // 10)
    for cls in range(1, len(CLASSES)):
        for _ in range(2):
            y, x = (int(v) for v in rng.integers(0, size - side, 2))
            h, w = (int(v) for v in rng.integers(side // 2, side + 1, 2))
            index[y : y + h, x : x + w] = cls
            tint = np.array([(cls * 53) % 256, (cls * 97) % 256, (cls * 151) % 256], np.float32)
            rgb[y : y + h, x : x + w] = (rgb[y : y + h, x : x + w] * 0.4 + tint * 0.6).astype(np.uint8)
    colours = np.asarray(COLOURS, np.uint8)[index]
    for folder, name, array in (("images", f"{sid}.png", rgb),
                                ("Semantic_masks/images", f"{sid}_instance_color_RGB.png", colours)):
        path = root / split / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
    return sid


SOURCES = {"isaid": ISAIDSource()}
