"""Prepare one scene (runs in a worker process): read, check, convert labels, write tiled GeoTIFFs,
and return what the manifest needs (patch histograms, band histograms, checksums)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from cdseg.data import isprs
from cdseg.data.definition import DatasetDefinition
from cdseg.data.release import Entry, open_raster, read_raster
from cdseg.errors import DataError
from cdseg.utils.hashing import sha256_file

_DSM_SLACK = 8  # px: a release DSM may miss a row or column (Potsdam); pad or crop up to this much


@dataclass(frozen=True)
class SceneJob:
    """Everything a worker needs to prepare one scene."""

    scene_id: str
    city: str
    images: dict[str, Entry]  # product -> file, only those used
    plan: list[tuple[str, int]]  # per output band: (product, band index); DSM is appended separately
    label: Entry
    dsm: Entry | None
    out: str
    patch_size: int
    stride: int
    max_ignore: float
    block_size: int
    compress: str
    stats: bool = True  # band sums are needed for training scenes only
    colour_tolerance: int = 0
    definition: DatasetDefinition = isprs.POTSDAM  # classes and label encoding
    product_bands: dict[str, int] | None = None  # bands each image product must have
    dsm_range: tuple[float, float] = (0.0, 255.0)  # DSM values mapped to 0..255
    label_set: str = "full"  # which labels `label` is (training uses them): full, or eroded boundaries
    other_labels: dict[str, Entry] = field(default_factory=dict)  # other label sets kept beside (e.g. eroded)
    small_ok: bool = False  # a scene smaller than a patch is kept (no training patch; evaluated whole), not refused

    def bands_of(self, product: str) -> int:
        """How many bands an image product must have."""
        if self.product_bands is None:
            return len(isprs.POTSDAM_PRODUCTS[product][1])
        return self.product_bands[product]


def grid_starts(length: int, patch: int, stride: int) -> list[int]:
    """Top-left offsets along one axis: every `stride` px, the last one clamped to end at `length`."""
    if length < patch:
        return []
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def check_headers(job: SceneJob) -> tuple[int, int]:
    """Open every file of the scene (headers only): band counts, sizes, georeference. Returns (H, W)."""
    ref = None
    for product, entry in job.images.items():
        with open_raster(entry) as src:
            want = job.bands_of(product)
            if src.count != want:
                raise DataError(f"{entry} has {src.count} bands, a {product} image must have {want}; "
                                "replace it with the release's file")
            if src.dtypes[0] != "uint8":
                raise DataError(f"{entry} has {src.dtypes[0]} pixels, expected uint8; replace it with the release's file")
            if ref is None:
                ref = (entry, src.height, src.width, src.crs, src.transform)
            elif (src.height, src.width) != ref[1:3]:
                raise DataError(f"{entry} is {src.width}x{src.height} px but {ref[0]} is {ref[2]}x{ref[1]}; "
                                "the scene's files must have the same size")
    assert ref is not None
    with open_raster(job.label) as src:
        if job.definition.encoding == "colour" and src.count < 3:
            raise DataError(f"{job.label} has {src.count} band(s), a {job.definition.name} label must be an RGB "
                            "colour image; use the release's colour ground truth")
        if job.definition.encoding == "index" and src.count != 1:
            raise DataError(f"{job.label} has {src.count} bands, a {job.definition.name} label must have one band of "
                            "class values; use the release's labels")
        if src.dtypes[0] != "uint8":
            raise DataError(f"{job.label} has {src.dtypes[0]} pixels, a label must be uint8; use the release's labels")
        if (src.height, src.width) != ref[1:3]:
            raise DataError(f"label {job.label} is {src.width}x{src.height} px but image {ref[0]} is "
                            f"{ref[2]}x{ref[1]} px; use the label that belongs to this image")
        if src.crs and ref[3] and (src.crs != ref[3] or not src.transform.almost_equals(ref[4], precision=1e-6)):
            raise DataError(f"label {job.label} is georeferenced differently from image {ref[0]} "
                            f"({src.crs} {tuple(src.transform)[:6]} vs {ref[3]} {tuple(ref[4])[:6]}); "
                            "use the label that belongs to this image")
    for other in job.other_labels.values():
        with open_raster(other) as src:
            if (src.height, src.width) != ref[1:3]:
                raise DataError(f"label {other} is {src.width}x{src.height} px but image {ref[0]} is "
                                f"{ref[2]}x{ref[1]} px; use the label that belongs to this image")
    if job.dsm is not None:
        with open_raster(job.dsm) as src:
            if abs(src.height - ref[1]) > _DSM_SLACK or abs(src.width - ref[2]) > _DSM_SLACK:
                raise DataError(f"DSM {job.dsm} is {src.width}x{src.height} px but image {ref[0]} is "
                                f"{ref[2]}x{ref[1]} px; use the DSM that belongs to this scene")
    if (ref[1] < job.patch_size or ref[2] < job.patch_size) and not job.small_ok:
        raise DataError(f"scene {job.scene_id} is {ref[2]}x{ref[1]} px, smaller than --patch-size {job.patch_size}; "
                        "use a smaller patch size")
    return ref[1], ref[2]


def _read_dsm(job: SceneJob, shape: tuple[int, int]) -> np.ndarray:
    assert job.dsm is not None
    dsm = read_raster(job.dsm)[0]
    if dsm.dtype != np.uint8:
        lo, hi = job.dsm_range
        dsm = np.clip((dsm.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    out = np.zeros(shape, np.uint8)
    h, w = min(shape[0], dsm.shape[0]), min(shape[1], dsm.shape[1])
    out[:h, :w] = dsm[:h, :w]
    return out


def _band_sums(band: np.ndarray, rows: int = 32) -> list[float]:
    """[pixel count, sum, sum of squares] of a uint8 band, in [0, 1] units.

    Exact: column sums of `rows` rows of values <= 255**2 stay below 2**24, so float32 holds them
    exactly, and their float64 totals stay below 2**53. Strips stay in cache, and there is no BLAS
    call (OpenBLAS's own threads made a dot-product version 5x slower next to the hashing thread).
    Measured 12 ms per 6000 px band, against 24 ms for float64 strips with a dot product.
    """
    assert rows * 255**2 < 2**24
    total = squares = 0.0
    buf = np.empty((rows, band.shape[1]), np.float32)
    for y in range(0, band.shape[0], rows):
        strip = buf[: min(rows, band.shape[0] - y)]
        np.copyto(strip, band[y : y + rows])
        total += float(np.add.reduce(strip, axis=0).sum(dtype=np.float64))
        np.multiply(strip, strip, out=strip)
        squares += float(np.add.reduce(strip, axis=0).sum(dtype=np.float64))
    return [float(band.size), total / 255.0, squares / 255.0**2]


def _fsync(path: Path) -> None:
    """Make a written file durable (before the folder is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: np.ndarray, crs: Any, transform: Any, job: SceneJob) -> None:
    profile = {"driver": "GTiff", "count": data.shape[0], "height": data.shape[1], "width": data.shape[2],
               "dtype": "uint8", "tiled": True, "blockxsize": job.block_size, "blockysize": job.block_size,
               "interleave": "band", "BIGTIFF": "IF_SAFER"}  # band-interleaved: measured faster (docs/data.md)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if job.compress != "none":
        profile["compress"] = job.compress
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


class _Buffers(threading.local):
    """Scene-sized arrays kept for the next scene of the same size in this thread.

    Fresh 100+ MB arrays cost page faults and zeroing on every scene; reusing them measured 0.75 s
    instead of 0.79-1.32 s per two 6000 px scenes (kernel time 0.32 instead of 0.44-0.95 s).
    """

    def __init__(self) -> None:
        self.arrays: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def get(self, role: str, shape: tuple[int, ...]) -> np.ndarray:
        key = (role, shape)
        if key not in self.arrays:
            for old in [k for k in self.arrays if k[0] == role]:
                del self.arrays[old]  # one per role: a scene of another size replaces it
            self.arrays[key] = np.empty(shape, np.uint8)
        return self.arrays[key]


_buffers = _Buffers()


def release_buffers() -> None:
    """Drop this thread's scene buffers (call when the last scene of a run is done)."""
    _buffers.arrays.clear()


def _read_image(job: SceneJob, shape: tuple[int, int]) -> np.ndarray:
    products = {p for p, _ in job.plan}
    product = next(iter(products))
    if len(products) == 1 and [i for _, i in job.plan] == list(range(job.bands_of(product))) and job.dsm is None:
        # the whole file in order: read straight into the output array
        return read_raster(job.images[product], out=_buffers.get("image", (len(job.plan), *shape)))
    files = {p: read_raster(job.images[p]) for p in products}
    image = np.stack([files[p][i] for p, i in job.plan])
    files.clear()
    if job.dsm is not None:
        image = np.concatenate([image, _read_dsm(job, shape)[None]])
    return image


def _patch_rows(job: SceneJob, label: np.ndarray) -> tuple[list[list[Any]], int, list[int]]:
    """Per-patch class histograms on the patch grid (rows of the manifest), patches dropped, class pixels."""
    rows, dropped = [], 0
    size = job.patch_size
    classes = range(len(job.definition.classes))
    for y in grid_starts(label.shape[0], size, job.stride):
        for x in grid_starts(label.shape[1], size, job.stride):
            patch = label[y : y + size, x : x + size]
            hist = [int(np.count_nonzero(patch == c)) for c in classes]
            hist.append(size * size - sum(hist))  # everything else is the ignore label (255)
            if hist[-1] >= job.max_ignore * size * size and job.max_ignore < 1.0:
                dropped += 1
                continue
            rows.append([job.scene_id, y, x, *hist])
    counts = np.zeros(len(job.definition.classes), np.int64)
    for y in range(0, label.shape[0], 64):  # cache-sized strips: 2.5x faster than whole-array passes
        strip = label[y : y + 64]
        for c in classes:
            counts[c] += np.count_nonzero(strip == c)
    class_pixels = [int(n) for n in counts]
    class_pixels.append(label.size - sum(class_pixels))
    return rows, dropped, class_pixels


def _read_label(job: SceneJob, shape: tuple[int, int], entry: Entry | None = None) -> np.ndarray:
    """A label of the scene (default: the training one) as HxW raw class indices (255 ignore), unknown colours
    or values refused."""
    entry = entry or job.label
    if job.definition.encoding == "index":
        return job.definition.to_index(read_raster(entry, indexes=[1]), str(entry))
    if entry is not job.label:  # the training label's buffers are still in use
        rgb = read_raster(entry, indexes=[1, 2, 3])
        if job.definition.colours == isprs.COLOURS:
            return isprs.colours_to_index(rgb, str(entry), job.colour_tolerance)
        return job.definition.to_index(rgb, str(entry))
    rgb = read_raster(entry, indexes=[1, 2, 3], out=_buffers.get("label_rgb", (3, *shape)))
    if job.definition.colours == isprs.COLOURS:  # the ISPRS fast path (and its --colour-tolerance)
        return isprs.colours_to_index(rgb, str(entry), job.colour_tolerance, out=_buffers.get("label", shape))
    return job.definition.to_index(rgb, str(entry))


#: GDAL block cache (bytes) while a scene is prepared. Every file is read or written whole, once, so the
#: cache only costs: with it smaller than a request, GDAL moves strips straight between file and array
#: (whole-scene reads measured 2.2x faster: 51 against 112 ms for a 6000 px RGBIR image). rasterio sets
#: it for the block below and restores the default after.
_GDAL_CACHE_BYTES = 16 << 20


def run_scene_job(job: SceneJob) -> dict[str, Any]:
    """Prepare one scene into `job.out`; returns its manifest entry, patch rows and band sums.

    The main thread reads, converts and writes (GDAL does not read two files faster in two threads,
    measured); helper threads make each written file durable (fsync), hash it and compute the band sums
    while the main thread goes on to the label: fsync, hashlib and numpy release the GIL. Parallelism
    across scenes comes from `--workers`.
    """
    out = Path(job.out)
    with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES), \
            ThreadPoolExecutor(3, thread_name_prefix=f"cdseg-scene-{job.scene_id}") as helpers:
        with open_raster(next(iter(job.images.values()))) as src:
            shape, crs, transform = (src.height, src.width), src.crs, src.transform
        image_rel, label_rel = f"images/{job.scene_id}.tif", f"labels/{job.scene_id}.tif"
        image = _read_image(job, shape)
        _write(out / image_rel, image, crs, transform, job)
        synced = [helpers.submit(_fsync, out / image_rel)]
        image_sha = helpers.submit(sha256_file, out / image_rel)
        band_sums = helpers.submit(lambda: [_band_sums(band) for band in image] if job.stats else [])
        label = _read_label(job, shape)
        _write(out / label_rel, label[None], crs, transform, job)
        synced.append(helpers.submit(_fsync, out / label_rel))
        label_sha = helpers.submit(sha256_file, out / label_rel)
        rows, dropped, class_pixels = _patch_rows(job, label)
        checksums = {image_rel: image_sha.result(), label_rel: label_sha.result()}
        labels = {job.label_set: label_rel}
        for name, entry in job.other_labels.items():  # e.g. the eroded labels the benchmark scores on
            rel = f"labels_{name}/{job.scene_id}.tif"
            _write(out / rel, _read_label(job, shape, entry)[None], crs, transform, job)
            synced.append(helpers.submit(_fsync, out / rel))
            checksums[rel] = sha256_file(out / rel)
            labels[name] = rel
        sums = band_sums.result()
        for done in synced:
            done.result()
    return {
        "id": job.scene_id,
        "entry": {"image": image_rel, "label": label_rel, "labels": labels, "height": shape[0], "width": shape[1],
                  "crs": crs.to_string() if crs else None, "transform": list(transform)[:6] if crs else None,
                  "class_pixels": class_pixels,
                  "sources": sorted({str(e) for e in [*job.images.values(), job.label, *job.other_labels.values(),
                                                      job.dsm] if e is not None}),
                  "dropped_patches": dropped},
        "checksums": checksums,
        "rows": rows,
        "band_sums": sums,
    }
