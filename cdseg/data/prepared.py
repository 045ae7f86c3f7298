"""The prepared dataset: per-scene tiled GeoTIFFs plus `manifest.json` (written last).

Layout: `images/<scene>.tif` (C uint8 bands, tiled, with CRS and transform), `labels/<scene>.tif`
(raw class indices, 255 ignore), `manifest.json` (classes, bands, splits, stats, per-patch class
histograms, checksums, fingerprint, `format_version`), `config.yaml` (the resolved prepare config),
`verified.json` (stamps of the last sha256 verification, see `cdseg.data.integrity`; local outputs only).
Patches are windows of the scene files, read on demand.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import rasterio
from rasterio.env import get_gdal_config, set_gdal_config
from rasterio.windows import Window

from cdseg.data.integrity import verify_dataset
from cdseg.errors import DataError
from cdseg.storage import is_remote, join, local_input, local_path, read_text_if_exists
from cdseg.utils.hashing import sha256_file

FORMAT = "cdseg-prepared"
#: 2: the dataset definition (dataset, background, label encoding, tasks) and histograms of any class count
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
#: GDAL block cache (bytes) of a process that reads a prepared dataset, unless GDAL_CACHEMAX is set.
#: GDAL's default is 5% of the machine's RAM in every process, and each training rank's DataLoader
#: workers would fill their own copy of tiles the (shared) page cache already holds: 8 ranks x 4
#: workers x 5% is 160% of a node's RAM. With 64 MiB, random 512 px patch reads ran at about 1100/s
#: (measured; the augmented Dataset consumes about 120/s) and a reader's RSS stayed at 150 MB, not 460.
READ_CACHE_BYTES = 64 << 20
#: Manifest fields every reader relies on, and their JSON types.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "fingerprint": str, "classes": list, "tasks": dict, "bands": list, "patch_size": int, "splits": dict, "scenes": dict,
    "checksums": dict, "patches": dict}
_cache_bounded_in: int | None = None  # pid of the process whose GDAL cache was bounded


class PatchRecord(NamedTuple):
    """One training patch: its scene, top-left pixel and class histogram (the dataset's classes + ignore)."""

    id: int
    scene: str
    y: int
    x: int
    hist: tuple[int, ...]


@dataclass
class Scene:
    """A whole scene for evaluation: image CxHxW uint8, label HxW raw indices, georeference."""

    id: str
    image: np.ndarray
    label: np.ndarray
    crs: Any
    transform: Any


def bound_gdal_cache() -> None:
    """Bound this process's GDAL block cache to READ_CACHE_BYTES (once per process; GDAL_CACHEMAX wins)."""
    global _cache_bounded_in
    if _cache_bounded_in == os.getpid():
        return
    _cache_bounded_in = os.getpid()
    if "GDAL_CACHEMAX" in os.environ:
        return
    current = get_gdal_config("GDAL_CACHEMAX")
    if current is None or int(current) > READ_CACHE_BYTES:
        set_gdal_config("GDAL_CACHEMAX", READ_CACHE_BYTES)


def read_manifest(uri: str) -> dict[str, Any]:
    """The manifest of the prepared dataset at `uri`, checked for format and version."""
    text = read_text_if_exists(join(uri, MANIFEST))
    if text is None:
        raise DataError(f"{uri} is not a prepared dataset (no {MANIFEST}); run cdseg prepare to create it "
                        "(an interrupted prepare leaves no manifest)")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{join(uri, MANIFEST)} is not valid JSON ({exc}); run cdseg prepare again") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{uri} holds a {MANIFEST} that is not a cdseg prepared dataset "
                        f"(format {manifest.get('format') if isinstance(manifest, dict) else None!r}); "
                        "point to a folder written by cdseg prepare")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(f"{uri} is a prepared dataset of format version {version}, this cdseg reads version "
                        f"{FORMAT_VERSION}; run cdseg prepare again to rebuild it")
    for key, kind in _REQUIRED.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or (isinstance(value, dict) and key == "patches"
                                           and not {"columns", "rows"} <= value.keys()):
            raise DataError(f"{join(uri, MANIFEST)} has no valid {key!r} (damaged or edited); run cdseg prepare "
                            "again with --overwrite")
    return manifest


def damaged_files(root: Path, checksums: dict[str, str], *, threads: int = 2) -> list[str]:
    """Files of a prepared dataset that are missing, or differ from their recorded sha256.

    Returned as "<file> (missing)" / "<file> (sha256 differs)", in manifest order. Hashing runs in
    `threads` threads (hashlib releases the GIL).
    """
    def check(rel: str) -> str | None:
        path = root / rel
        if not path.is_file():
            return f"{rel} (missing)"
        if sha256_file(path) != checksums[rel]:
            return f"{rel} (sha256 differs)"
        return None

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return [problem for problem in pool.map(check, checksums) if problem is not None]


class PreparedDataset:
    """A prepared dataset opened for reading (local, or a cached local copy of an s3:// prefix)."""

    def __init__(self, root: Path, manifest: dict[str, Any], uri: str | None = None) -> None:
        self.root = Path(root)
        self.uri = uri or str(root)
        self.manifest = manifest
        self._handles: dict[str, Any] = {}
        self._pid = os.getpid()
        columns = manifest["patches"]["columns"]
        assert columns[:3] == ["scene", "y", "x"], columns
        self._patches = [PatchRecord(i, r[0], r[1], r[2], tuple(r[3:])) for i, r in enumerate(manifest["patches"]["rows"])]
        self._scene_split = {sid: split for split, ids in manifest["splits"].items() for sid in ids}

    @classmethod
    def open(cls, uri: str | Path) -> PreparedDataset:
        """Open the prepared dataset at `uri` (a folder or an s3:// prefix)."""
        uri = str(uri)
        manifest = read_manifest(uri)
        root = local_input(uri, folder=True) if is_remote(uri) else local_path(uri)
        return cls(root, manifest, uri)

    def verify(self, threads: int = 2) -> int:
        """Check every data file against the manifest's sha256; returns the number of files checked.

        A missing or changed file is a `DataError` that names it (and how many more there are).
        """
        checksums = self.manifest["checksums"]
        bad = damaged_files(self.root, checksums, threads=threads)
        if bad:
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            raise DataError(f"{self.uri} is damaged: {bad[0]}{more} of {len(checksums)} files; "
                            "run cdseg prepare again with --overwrite")
        return len(checksums)

    def check(self, *, full: bool = False) -> tuple[int, int]:
        """Verify the data files once before they are read: (files checked, files hashed).

        A local dataset hashes only the files whose stamp changed since their last verification (all of
        them with `full`); an s3:// dataset's files were already hashed by the download cache.
        """
        checksums = self.manifest["checksums"]
        if is_remote(self.uri):
            return len(checksums), 0
        return verify_dataset(self.root, checksums, self.uri, fingerprint=str(self.manifest.get("fingerprint", "")),
                              full=full)

    @property
    def fingerprint(self) -> str:
        """Hash of the inputs and options the dataset was made from."""
        return str(self.manifest["fingerprint"])

    @property
    def bands(self) -> list[str]:
        return list(self.manifest["bands"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def patch_size(self) -> int:
        return int(self.manifest["patch_size"])

    def scenes(self, split: str) -> list[str]:
        """Scene ids of a split (train, val or test)."""
        if split not in self.manifest["splits"]:
            raise DataError(f"split {split!r} is not in {self.uri}; choose one of {', '.join(self.manifest['splits'])}")
        return list(self.manifest["splits"][split])

    def patches(self, split: str) -> list[PatchRecord]:
        """The patch records of a split's scenes."""
        ids = set(self.scenes(split))
        return [p for p in self._patches if p.scene in ids]

    def histograms(self, records: list[PatchRecord]) -> np.ndarray:
        """N x (classes + 1) class-pixel counts of `records` (the last column: ignore)."""
        return np.asarray([r.hist for r in records], dtype=np.int64).reshape(-1, len(self.classes) + 1)

    @property
    def label_sets(self) -> list[str]:
        """The label sets of the dataset's scenes: `full`, and `eroded` (boundaries ignored) where the release has them."""
        return list(self.manifest.get("label_sets") or ["full" if self.manifest.get("boundary", True) else "eroded"])

    def _open(self, kind: str, scene: str, labels: str | None = None):
        if os.getpid() != self._pid:  # a forked DataLoader worker: never share GDAL handles
            self._handles, self._pid = {}, os.getpid()
        key = f"{kind}/{labels or ''}/{scene}"
        handle = self._handles.get(key)
        if handle is None:
            info = self.manifest["scenes"].get(scene)
            if info is None:
                raise DataError(f"scene {scene!r} is not in {self.uri}; scenes are {', '.join(sorted(self.manifest['scenes']))}")
            rel = info[kind] if labels is None else (info.get("labels") or {}).get(labels)
            if rel is None:
                raise DataError(f"{self.uri} has no {labels} labels (it has {', '.join(self.label_sets)}); prepare "
                                "it from a release that ships them (ISPRS: the noBoundary / eroded ground truth)")
            path = self.root / rel
            bound_gdal_cache()
            try:
                handle = rasterio.open(path)
            except rasterio.errors.RasterioError as exc:
                raise DataError(f"{path} cannot be read ({exc}); run cdseg prepare again") from exc
            self._handles[key] = handle
        return handle

    def read_patch(self, record: PatchRecord, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(image CxHxW uint8, label HxW uint8 raw indices) of one patch."""
        size = size or self.patch_size
        window = Window(record.x, record.y, size, size)
        image, label = self._open("image", record.scene), self._open("label", record.scene)
        return self._read(image, window=window), self._read(label, 1, window=window)

    def read_box(self, record: PatchRecord, top: int, left: int, image_out: np.ndarray, label_out: np.ndarray,
                 bands: list[int] | None = None) -> None:
        """Read a box of a patch (from `top`, `left`; the outputs' height and width) straight into `image_out`
        (CxHxW uint8; bands: 0-based indices, default all) and `label_out` (HxW uint8 raw indices)."""
        height, width = label_out.shape
        window = Window(record.x + left, record.y + top, width, height)
        indexes = [b + 1 for b in bands] if bands is not None else None
        for handle, args, out in ((self._open("image", record.scene), (indexes,), image_out),
                                  (self._open("label", record.scene), (1,), label_out)):
            got = self._read(handle, *args, window=window, out=out)
            if not np.shares_memory(got, out):  # rasterio fills `out`; never rely on it silently
                out[...] = got

    def _read(self, handle: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        """`handle.read(...)`, with a read failure (a damaged tile) as a DataError naming the file."""
        try:
            return handle.read(*args, **kwargs)
        except rasterio.errors.RasterioError as exc:
            raise DataError(f"{handle.name} cannot be read ({' '.join(str(exc).split())[:160]}); the prepared dataset "
                            f"{self.uri} is damaged: run cdseg prepare again with --overwrite") from exc

    def georeference(self, scene_id: str) -> tuple[Any, Any]:
        """(CRS, affine transform) of a scene, from its image header: no pixels are read."""
        image = self._open("image", scene_id)
        return image.crs, image.transform

    def read_scene(self, scene_id: str, labels: str | None = None) -> Scene:
        """A whole scene with its georeference, for evaluation; `labels` picks a label set (default: training's)."""
        image = self._open("image", scene_id)
        return Scene(scene_id, self._read(image), self._read(self._open("label", scene_id, labels), 1), image.crs,
                     image.transform)

    def close(self) -> None:
        """Close open file handles (they are reopened on demand)."""
        for handle in self._handles.values():
            handle.close()
        self._handles = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state
