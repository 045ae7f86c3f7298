"""Read a release as shipped: a folder of zips and/or extracted folders, or one zip (ISPRS file names here).

Zips are not extracted: members are read in place through GDAL's /vsizip/. Every file is indexed
by name, so the release's folder names (or the lower-case ones of the original project) do not matter.
"""

from __future__ import annotations

import contextlib
import os
import re
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from cdseg.data import isprs
from cdseg.errors import DataError

_POTSDAM_IMAGE = re.compile(r"^top_potsdam_(\d+_\d+)_(RGBIR|RGB|IRRG)\.tif$", re.IGNORECASE)
_POTSDAM_LABEL = re.compile(r"^top_potsdam_(\d+_\d+)_label(_noBoundary)?\.tif$", re.IGNORECASE)
_POTSDAM_DSM = re.compile(r"^dsm_potsdam_(\d+)_(\d+)_normalized_lastools\.jpg$", re.IGNORECASE)
_VAIHINGEN_TOP = re.compile(r"^top_mosaic_09cm_(area\d+)(_noBoundary)?\.tif$", re.IGNORECASE)
_VAIHINGEN_DSM = re.compile(r"^dsm_09cm_matching_(area\d+)\.tif$", re.IGNORECASE)


@dataclass(frozen=True)
class Entry:
    """One file of the release: a plain file, or a member of a zip."""

    path: str  # the file's path, or the member name inside `archive`
    archive: str | None = None
    size: int = 0
    stamp: int = 0  # mtime_ns of a plain file, CRC-32 of a zip member

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def parent(self) -> str:
        return PurePosixPath(self.path).parent.name

    def gdal_path(self) -> str:
        """What rasterio opens."""
        return f"/vsizip/{self.archive}/{self.path}" if self.archive else self.path

    def __str__(self) -> str:
        return f"{self.archive}!{self.path}" if self.archive else self.path


@dataclass
class SceneFiles:
    """The release files of one scene."""

    scene_id: str
    images: dict[str, Entry] = field(default_factory=dict)  # product (RGB, IRRG, RGBIR) -> file
    label: Entry | None = None
    label_nob: Entry | None = None
    dsm: Entry | None = None
    split: str | None = None  # the release's own split (train / test), where its layout says


def _zip_entries(path: Path) -> list[Entry]:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable zip file ({exc}); it may be truncated: download it again") from exc
    out = []
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise DataError(f"{path}: zip entry {name!r} escapes its folder (absolute path or '..'); "
                            "refusing to read this archive, get a clean copy of the release")
        if not info.is_dir():
            out.append(Entry(name, str(path), info.file_size, info.CRC))
    return out


def index_files(root: Path) -> list[Entry]:
    """Every file of the release under `root` (a folder or a zip), zip members included."""
    if root.is_file():
        if root.suffix.lower() != ".zip":
            raise DataError(f"{root} is a file but not a zip; pass the release folder or one of its zip files")
        return _zip_entries(root)
    entries: list[Entry] = []
    for path in _walk(root):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() == ".zip":
            entries.extend(_zip_entries(path))
        else:
            st = path.stat()
            # a link into the content-addressed storage cache (s3:// input) is identified by its target
            stamp = zlib.crc32(os.readlink(path).encode()) if path.is_symlink() else st.st_mtime_ns
            entries.append(Entry(str(path), None, st.st_size, stamp))
    return entries


def _walk(root: Path) -> list[Path]:
    """Every path under `root`, sorted; a folder this user may not list is an error naming it (rglob would
    silently skip it, and its scenes would be reported missing)."""

    def refuse(exc: OSError) -> None:
        if isinstance(exc, PermissionError):
            raise DataError(f"this user (uid {os.getuid()}) may not read {exc.filename} ({exc.strerror}); give it "
                            "read access to the whole release (or copy the release somewhere readable)")
        raise DataError(f"cannot read {exc.filename} ({exc.strerror}); check the release folder")

    found: list[Path] = []
    for folder, dirs, files in os.walk(root, onerror=refuse):
        found.extend(Path(folder, name) for name in (*dirs, *files))
    return sorted(found)


def group_scenes(entries: list[Entry], city: str) -> dict[str, SceneFiles]:
    """Scene id -> its files, for every scene that has at least an image."""
    scenes: dict[str, SceneFiles] = {}

    def get(sid: str) -> SceneFiles:
        return scenes.setdefault(sid, SceneFiles(sid))

    def put(scene: SceneFiles, attr: str, e: Entry, key: str | None = None) -> None:
        # when a file is both extracted and in its zip, read the extracted one (faster, seekable)
        old = scene.images.get(key) if key else getattr(scene, attr)
        if old is not None and old.archive is None and e.archive is not None:
            return
        if key:
            scene.images[key] = e
        else:
            setattr(scene, attr, e)

    for e in entries:
        if city == "potsdam":
            if m := _POTSDAM_IMAGE.match(e.name):
                put(get(m.group(1)), "images", e, m.group(2).upper())
            elif m := _POTSDAM_LABEL.match(e.name):
                put(get(m.group(1)), "label_nob" if m.group(2) else "label", e)
            elif m := _POTSDAM_DSM.match(e.name):
                put(get(f"{int(m.group(1))}_{int(m.group(2))}"), "dsm", e)
        else:
            if m := _VAIHINGEN_TOP.match(e.name):
                sid = m.group(1).lower()
                if m.group(2):
                    put(get(sid), "label_nob", e)
                elif e.parent.lower() == isprs.VAIHINGEN_TOP:
                    put(get(sid), "images", e, "IRRG")
                else:
                    put(get(sid), "label", e)
            elif m := _VAIHINGEN_DSM.match(e.name):
                put(get(m.group(1).lower()), "dsm", e)
    return {sid: s for sid, s in scenes.items() if s.images}


def plan_bands(scene: SceneFiles, bands: tuple[str, ...],
               product_bands: dict[str, tuple[str, ...]]) -> list[tuple[str, int]]:
    """(product, band index in that file) for each wanted band, preferring the fewest files."""
    def names(product: str) -> tuple[str, ...]:
        return product_bands[product]

    products = sorted(scene.images, key=lambda p: (-len(set(names(p)) & set(bands)), p))
    plan = []
    for band in bands:
        for product in products:
            if band in names(product):
                plan.append((product, names(product).index(band)))
                break
        else:
            have = ", ".join(f"{p}: {str(scene.images[p])}" for p in sorted(scene.images))
            raise DataError(f"scene {scene.scene_id}: no image file has band {band} (found {have}); "
                            "add the release product that has it or choose other --channels")
    return plan


def open_raster(entry: Entry):
    """Open a release file with rasterio, turning failures into a DataError that names it."""
    try:
        return rasterio.open(entry.gdal_path())
    except (RasterioError, OSError) as exc:
        file = entry.archive or entry.path
        if os.path.exists(file) and not os.access(file, os.R_OK):  # its permissions, not its bytes
            raise DataError(f"this user (uid {os.getuid()}) may not read {file} (permission denied); give it read "
                            "access to the whole release (or copy the release somewhere readable)") from exc
        raise DataError(f"{entry} is not a readable image ({str(exc).splitlines()[0][:160]}); "
                        "it may be empty or truncated: extract or download it again") from exc


def verify_member(entry: Entry) -> None:
    """Read a zip member through `zipfile`, which checks its CRC-32; a mismatch is a DataError naming it.

    GDAL's /vsizip/ does not check CRCs, so a member with flipped bytes would otherwise be read as
    valid pixels.
    """
    assert entry.archive is not None
    try:
        with zipfile.ZipFile(entry.archive) as zf, zf.open(entry.path) as member:
            while member.read(1 << 20):
                pass
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DataError(f"{entry} is corrupt ({str(exc).splitlines()[0][:160]}); "
                        f"download {Path(entry.archive).name} again") from exc


def read_raster(entry: Entry, window=None, indexes: list[int] | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """All bands of a release file (or the 1-based `indexes`), CxHxW; into `out` if given.

    A zip member's CRC is checked in a helper thread while GDAL reads it (zlib and crc32 release the GIL).
    """
    with ThreadPoolExecutor(1, thread_name_prefix="cdseg-crc") if entry.archive else contextlib.nullcontext() as crc:
        checked = crc.submit(verify_member, entry) if crc is not None else None
        try:
            with open_raster(entry) as src:
                try:
                    return src.read(indexes, window=window, out=out)
                except (RasterioError, OSError) as exc:
                    raise DataError(f"{entry} could not be read ({str(exc).splitlines()[0][:160]}); "
                                    "it may be truncated: extract or download it again") from exc
        finally:
            if checked is not None:
                checked.result()  # a corrupt member is reported as such, before (and instead of) GDAL's error
