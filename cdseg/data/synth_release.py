"""`cdseg synth`: write generated scenes as a dataset's release (same folders, names, bands, zips, CRS).

The dataset's `Source` writes its own layout; the ISPRS layouts (Potsdam, Vaihingen) are here.
"""

from __future__ import annotations

import logging
import multiprocessing
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from tqdm import tqdm

import cdseg.storage as storage
from cdseg.data import isprs
from cdseg.data.config import SynthConfig
from cdseg.data.synth import SceneArrays, default_gsd, generate_scene
from cdseg.errors import DataError
from cdseg.storage import exists, is_empty_dir, staged_output

log = logging.getLogger(__name__)
_ZIP_TIME = (2018, 1, 1, 0, 0, 0)  # fixed member timestamps: the same seed gives the same zip bytes
VAIHINGEN_ZIP = "ISPRS_semantic_labeling_Vaihingen"
VAIHINGEN_GT_ZIP = "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE"
VAIHINGEN_NOB_ZIP = "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE"
#: Vaihingen products `--products` may name (the Potsdam names that mean the same thing)
VAIHINGEN_PRODUCTS = {"IRRG", "labels", "labels_noBoundary", "DSM"}


def scene_ids(city: str, train: int, test: int) -> list[str]:
    """The first `train` official training and `test` official test scene ids."""
    splits = isprs.OFFICIAL_SPLITS[city]
    return list(splits["train"][:train]) + list(splits["test"][:test])


def scene_seed(seed: int, city: str, scene_id: str) -> list[int]:
    """Seed of one scene: independent of scene count and order, so adding scenes never changes others."""
    return [seed, zlib.crc32(f"{city}/{scene_id}".encode())]


def erode_boundaries(label: np.ndarray, radius: int = 2) -> np.ndarray:
    """The `_noBoundary` label: pixels within `radius` of a class boundary become 255 (black)."""
    edge = np.zeros(label.shape, bool)
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    grown = edge.copy()
    for _ in range(radius):
        step = grown.copy()
        step[1:, :] |= grown[:-1, :]
        step[:-1, :] |= grown[1:, :]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        grown = step
    out = label.copy()
    out[grown] = isprs.IGNORE_INDEX
    return out


def _write_tif(path: Path, bands: np.ndarray, crs: str | None, transform, dtype: str = "uint8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": bands.shape[2], "height": bands.shape[1], "count": bands.shape[0],
               "dtype": dtype, "interleave": "pixel"}
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)


def _transform(city: str, scene_id: str, gsd: float, size: int):
    if city == "potsdam":
        x, y = isprs.potsdam_xy(scene_id)
        return Affine(gsd, 0.0, 366000.0 + x * size * gsd, 0.0, -gsd, 5808000.0 - y * size * gsd)
    n = int(scene_id[4:])
    return Affine(gsd, 0.0, 496000.0 + (n % 8) * size * gsd, 0.0, -gsd, 5420000.0 - (n // 8) * size * gsd)


def write_scene(root: Path, city: str, scene_id: str, size: int, seed: int, gsd: float | None,
                products: list[str]) -> str:
    """Generate one scene and write its release files under `root` (extracted layout)."""
    gsd = default_gsd(size) if gsd is None else gsd
    arrays: SceneArrays = generate_scene(size, scene_seed(seed, city, scene_id), gsd)
    crs, transform = isprs.CRS[city], _transform(city, scene_id, gsd, size)
    if city == "vaihingen":  # Vaihingen tiles are taller than wide
        width = max(64, (size * 4 // 5) // 16 * 16)
        arrays.bands = {k: v[:, :width] for k, v in arrays.bands.items()}
        arrays.label, arrays.height = arrays.label[:, :width], arrays.height[:, :width]
        if "IRRG" in products:
            irrg = np.stack([arrays.bands[b] for b in ("IR", "R", "G")])
            _write_tif(root / isprs.VAIHINGEN_TOP / isprs.image_name(city, scene_id), irrg, crs, transform)
        if "labels" in products:  # the release: training labels in the main zip, all of them in the COMPLETE zip
            colours = isprs.index_to_colours(arrays.label)
            if scene_id in isprs.VAIHINGEN_TRAIN:
                _write_tif(root / isprs.VAIHINGEN_GT / isprs.label_name(city, scene_id), colours, crs, transform)
            _write_tif(root / VAIHINGEN_GT_ZIP / isprs.label_name(city, scene_id), colours, crs, transform)
        if "labels_noBoundary" in products:
            _write_tif(root / VAIHINGEN_NOB_ZIP / isprs.label_name(city, scene_id, boundary=False),
                       isprs.index_to_colours(erode_boundaries(arrays.label)), crs, transform)
        if "DSM" in products:
            dsm = (isprs.DSM_RANGE[city][0] + 25.0 + arrays.height)[None].astype(np.float32)
            _write_tif(root / isprs.VAIHINGEN_DSM / isprs.dsm_name(city, scene_id), dsm, crs, transform, "float32")
        return scene_id
    for product, (folder, bands) in isprs.POTSDAM_PRODUCTS.items():
        if product in products:
            data = np.stack([arrays.bands[b] for b in bands])
            _write_tif(root / folder / isprs.image_name(city, scene_id, product), data, crs, transform)
    if "labels" in products:
        _write_tif(root / isprs.POTSDAM_LABELS / isprs.label_name(city, scene_id),
                   isprs.index_to_colours(arrays.label), crs, transform)
    if "labels_noBoundary" in products:
        _write_tif(root / isprs.POTSDAM_LABELS_NOB / isprs.label_name(city, scene_id, boundary=False),
                   isprs.index_to_colours(erode_boundaries(arrays.label)), crs, transform)
    if "DSM" in products:
        from PIL import Image

        path = root / isprs.POTSDAM_DSM / isprs.dsm_name(city, scene_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(arrays.height * (255.0 / 30.0), 0, 255).astype(np.uint8)).save(path, quality=92)
    return scene_id


def zip_folder(root: Path, folder: str, zip_name: str, flat: bool) -> None:
    """Pack `root/folder` into `root/zip_name.zip` (members under `folder/`, or at the top when `flat`)."""
    src = root / folder
    with zipfile.ZipFile(root / f"{zip_name}.zip", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                arc = path.relative_to(src).as_posix() if flat else path.relative_to(root).as_posix()
                info = zipfile.ZipInfo(arc, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                with path.open("rb") as fh, zf.open(info, "w") as out:
                    while chunk := fh.read(1 << 22):
                        out.write(chunk)
    for path in sorted(src.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    src.rmdir()


def _pack_zips(root: Path, city: str) -> None:
    if city == "potsdam":
        for folder in [f for f, _ in isprs.POTSDAM_PRODUCTS.values()] + [isprs.POTSDAM_DSM]:
            if (root / folder).is_dir():
                zip_folder(root, folder, folder, flat=False)
        for folder in (isprs.POTSDAM_LABELS, isprs.POTSDAM_LABELS_NOB):  # these release zips have no folder inside
            if (root / folder).is_dir():
                zip_folder(root, folder, folder, flat=True)
        return
    for folder in (VAIHINGEN_GT_ZIP, VAIHINGEN_NOB_ZIP):
        if (root / folder).is_dir():
            zip_folder(root, folder, folder, flat=True)
    main = root / "_main"
    main.mkdir()
    for folder in (isprs.VAIHINGEN_TOP, isprs.VAIHINGEN_GT, isprs.VAIHINGEN_DSM):
        if (root / folder).is_dir():
            (root / folder).rename(main / folder)
    if any(main.iterdir()):
        zip_folder(root, "_main", VAIHINGEN_ZIP, flat=True)
    else:
        main.rmdir()


def write_isprs(root: Path, cfg: SynthConfig) -> list[str]:
    """Potsdam or Vaihingen scenes (`cfg.products` of them) in the release layout; returns the scene ids."""
    city = cfg.dataset
    products = list(cfg.products) or (sorted(VAIHINGEN_PRODUCTS) if city == "vaihingen" else
                                      ["RGB", "IRRG", "RGBIR", "labels", "labels_noBoundary", "DSM"])
    if city == "vaihingen":
        unknown = sorted(set(products) - VAIHINGEN_PRODUCTS)
        if unknown:
            raise DataError(f"--products {','.join(unknown)}: the Vaihingen release has only "
                            f"{', '.join(sorted(VAIHINGEN_PRODUCTS))}; choose among them")
    ids = scene_ids(city, cfg.train_scenes, cfg.test_scenes)
    args = [(root, city, sid, cfg.size, cfg.seed, cfg.gsd, products) for sid in ids]
    run_parallel(write_scene, args, cfg.workers)
    if cfg.zip:
        _pack_zips(root, city)
    return ids


def run_parallel(func, args: list[tuple], workers: int) -> None:
    """`func(*a)` for every `a`, in `workers` processes, with a progress bar (func returns the scene id)."""
    bar = tqdm(total=len(args), desc="synth", unit="scene", disable=None)
    if workers == 1:
        for a in args:
            bar.set_postfix_str(func(*a))
            bar.update()
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
            for sid in pool.map(func, *zip(*args, strict=True)):
                bar.set_postfix_str(sid)
                bar.update()
    bar.close()


def run_synth(cfg: SynthConfig) -> str:
    """Generate `cfg`'s scenes in the dataset's release layout at `cfg.output`; returns the output URI."""
    from cdseg.config import dump_config
    from cdseg.data.source import get_source

    storage.configure(cfg.storage)
    source = get_source(cfg.dataset)
    if exists(cfg.output) and not cfg.overwrite and not is_empty_dir(cfg.output):
        raise DataError(f"{cfg.output} already exists; choose another --output or pass --overwrite")
    with staged_output(cfg.output, replace=exists(cfg.output)) as root:
        ids = source.synth(root, cfg)
        (root / "cdseg-synth.yaml").write_text(dump_config(cfg))
    log.info("wrote %d generated %s scenes (%d px) to %s", len(ids), cfg.dataset, cfg.size, cfg.output)
    return cfg.output
