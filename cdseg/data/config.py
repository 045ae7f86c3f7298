"""Config sections of the data commands: `cdseg synth`, `cdseg prepare`, and the data options of train/test."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from cdseg.config import Section
from cdseg.storage.config import StorageConfig

POTSDAM_PRODUCT_NAMES = ("RGB", "IRRG", "RGBIR", "labels", "labels_noBoundary", "DSM")


class SynthConfig(Section):
    """`cdseg synth`: generated aerial scenes written in a real release's layout."""

    output: str = Field(description="folder (or s3:// URI) to write the release into; must not exist unless --overwrite",
                        validation_alias=AliasChoices("output", "dst"))
    dataset: str = Field("potsdam", description="release layout to imitate: a shipped dataset (docs/data.md)",
                         validation_alias=AliasChoices("dataset", "city"))
    size: int = Field(1024, description="scene width and height in pixels (the real Potsdam tiles are 6000)")
    train_scenes: int = Field(4, description="number of training scenes, taken in order from the official train list")
    test_scenes: int = Field(2, description="number of test scenes, taken in order from the official test list")
    seed: int = Field(0, description="random seed; the same seed gives the same scenes")
    gsd: float | None = Field(None, description="ground sample distance in metres per pixel (default: 0.05 for "
                                                "6000 px scenes, up to 0.25 for small ones so objects stay visible)")
    products: list[str] = Field([], description=f"ISPRS products to write, any of {', '.join(POTSDAM_PRODUCT_NAMES)} "
                                                "(Vaihingen: IRRG, labels, labels_noBoundary, DSM); default: all")
    zip: bool = Field(False, description="pack each product as the release's zip file instead of a folder")
    workers: int = Field(1, ge=1, description="scenes generated in parallel (processes)")
    overwrite: bool = Field(False, description="replace an existing output folder")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="object storage for s3:// URIs")

    @field_validator("size")
    @classmethod
    def _size(cls, v: int) -> int:
        if not 64 <= v <= 20000:
            raise ValueError(f"size={v} px is not allowed; use 64..20000")
        return v

    @field_validator("train_scenes", "test_scenes")
    @classmethod
    def _counts(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"scene count {v} must be >= 0")
        return v

    @field_validator("gsd")
    @classmethod
    def _gsd(cls, v: float | None) -> float | None:
        if v is not None and not 0.01 <= v <= 10:
            raise ValueError(f"gsd={v} m/px is not allowed; use 0.01..10")
        return v

    @field_validator("products")
    @classmethod
    def _products(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in POTSDAM_PRODUCT_NAMES]
        if bad:
            raise ValueError(f"products={v} is not allowed; choose from {', '.join(POTSDAM_PRODUCT_NAMES)}")
        return v

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        from cdseg.data.source import DATASETS

        if v not in DATASETS:
            raise ValueError(f"dataset={v!r} is not one of {', '.join(DATASETS)}")
        return v

    @model_validator(mode="after")
    def _limits(self) -> SynthConfig:
        from cdseg.data.source import get_source

        source = get_source(self.dataset)
        for split, count in (("train", self.train_scenes), ("test", self.test_scenes)):
            most = source.max_scenes(split)
            if most is not None and count > most:
                raise ValueError(f"{split}_scenes={count} exceeds the {most} official {self.dataset} {split} scenes")
        if self.train_scenes + self.test_scenes == 0:
            raise ValueError("train_scenes and test_scenes are both 0; ask for at least one scene")
        return self


class PrepareConfig(Section):
    """`cdseg prepare`: a release (zips or folders, local or s3://) -> a prepared dataset.

    The original project's spellings are accepted too: --src, --dst, --target-size, --use-boundary, --city.
    """

    input: str = Field(description="the release: a folder holding the zips and/or extracted folders, one zip, or an "
                                   "s3:// URI", validation_alias=AliasChoices("input", "src"))
    output: str = Field(description="folder (or s3:// URI) of the prepared dataset",
                        validation_alias=AliasChoices("output", "dst"))
    dataset: str = Field("auto", description="which release: a shipped dataset (docs/data.md); auto detects it from "
                                             "file names", validation_alias=AliasChoices("dataset", "city"))
    dataset_def: str | None = Field(None, description="YAML definition of your own dataset (classes, label colours "
                                                      "or values, bands, folders, splits, tasks; see docs/data.md); "
                                                      "replaces --dataset")
    channels: Literal["auto", "RGB", "RGBIR", "IRRG"] = Field(
        "auto", description="image bands to keep (auto: RGBIR for Potsdam, IRRG for Vaihingen, the only one it has; "
                            "the dataset's bands for the others)")
    dsm: bool = Field(False, description="add the DSM as an extra band (scaled to 0..255)")
    boundary: bool = Field(True, description="train on the full labels (true) or the eroded _noBoundary ones, whose "
                                             "boundary pixels become ignore (255); the eroded labels are kept "
                                             "beside the full ones whenever the release has both (cdseg test "
                                             "--eval.labels)", validation_alias=AliasChoices("boundary", "use_boundary"))
    colour_tolerance: int = Field(0, description="label colour channels within this distance of 0 or 255 are "
                                                 "snapped to it (0: exact ISPRS colours only; other colours are "
                                                 "always an error)")
    patch_size: int = Field(512, description="training patch size in pixels",
                            validation_alias=AliasChoices("patch_size", "target_size"))
    overlap: int = Field(12, description="overlap of neighbouring patches in pixels (the original used 12)")
    max_ignore: float = Field(0.75, description="drop a patch whose fraction of ignore pixels is at least this (0..1)")
    val_fraction: float = Field(0.15, description="fraction of training scenes held out, whole, for validation")
    val_count: int | None = Field(None, description="number of training scenes held out for validation "
                                                    "(overrides val_fraction)")
    seed: int = Field(0, description="seed of the validation scene draw")
    scenes: list[str] = Field([], description="only these scene ids (e.g. 2_10,area1); default: all found")
    workers: int = Field(1, ge=1, description="scenes prepared in parallel (processes, this one included)")
    block_size: int = Field(256, description="GeoTIFF tile size in pixels of the prepared scenes")
    compress: Literal["none", "lzw", "deflate", "zstd"] = Field("none", description="GeoTIFF compression of the prepared "
                                                                                  "images and labels (none is fastest, "
                                                                                  "see docs/data.md)")
    overwrite: bool = Field(False, description="replace an existing prepared dataset made from other input or options, "
                                               "or a damaged one")
    verify: bool = Field(False, description="when the output is already prepared from these inputs, also check every "
                                            "file against its sha256 in the manifest (a rerun always checks that the "
                                            "files exist)")

    @field_validator("patch_size", "block_size")
    @classmethod
    def _pixels(cls, v: int) -> int:
        if v < 16 or v % 16:
            raise ValueError(f"{v} px is not allowed; use a multiple of 16, at least 16")
        return v

    @field_validator("overlap", "val_count")
    @classmethod
    def _non_negative(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError(f"{v} must be >= 0")
        return v

    @field_validator("channels", mode="before")
    @classmethod
    def _channels_case(cls, v: object) -> object:
        # the original project spelled them in lower case (--channels rgbir)
        return v.upper() if isinstance(v, str) and v.lower() != "auto" else v

    @field_validator("colour_tolerance")
    @classmethod
    def _tolerance(cls, v: int) -> int:
        if not 0 <= v <= 100:
            raise ValueError(f"colour_tolerance={v} is not allowed; use 0..100")
        return v

    @field_validator("max_ignore", "val_fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{v} is not a fraction; use 0..1")
        return v

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        from cdseg.data.source import DATASETS

        if v != "auto" and v not in DATASETS:
            raise ValueError(f"dataset={v!r} is not one of auto, {', '.join(DATASETS)}; describe your own data with "
                             "--dataset-def my.yaml")
        return v

    @model_validator(mode="after")
    def _overlap(self) -> PrepareConfig:
        if self.overlap >= self.patch_size:
            raise ValueError(f"overlap={self.overlap} px must be smaller than patch_size={self.patch_size} px")
        return self

    storage: StorageConfig = Field(default_factory=StorageConfig, description="object storage for s3:// URIs")


class DataConfig(Section):
    """Where the prepared dataset is and how training patches are served (train and test)."""

    dataset: str = Field("data/prepared", description="prepared dataset folder or s3:// URI (from cdseg prepare)")
    bands: list[str] = Field([], description="bands to feed the model, e.g. R,G,B (default: all bands of the dataset)")
    crop_size: int = Field(512, description="training crop size in pixels after random resized crop")
    scale_min: float = Field(0.25, description="smallest crop area of random resized crop, as a fraction of the patch")
    scale_max: float = Field(1.0, description="largest crop area of random resized crop, as a fraction of the patch")
    flip: bool = Field(True, description="random horizontal and vertical flips")
    rotate90: bool = Field(True, description="random 90 degree rotations")
    brightness: float = Field(0.2, description="random brightness change, +- this fraction (0 disables)")
    contrast: float = Field(0.2, description="random contrast change, +- this fraction (0 disables)")
    workers: int = Field(2, description="DataLoader worker processes per training process")
    augment_on: Literal["auto", "loader", "device"] = Field(
        "auto", description="where the per-pixel training augmentation runs: loader (worker processes, float32), "
        "device (workers only draw and crop uint8 patches; resize, flips, turns and jitter run batched on the "
        "training device: the same random draws, the same patches up to the float rounding of the device's "
        "resize) or auto (device on CUDA, loader otherwise)")
    verify: bool = Field(False, description="hash every file of a local prepared dataset against its manifest before "
                                            "training (by default only files changed since their last verification "
                                            "are hashed)")

    @field_validator("crop_size")
    @classmethod
    def _crop(cls, v: int) -> int:
        if v < 16:
            raise ValueError(f"crop_size={v} px is too small; use at least 16")
        return v

    @field_validator("scale_min", "scale_max")
    @classmethod
    def _scale(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError(f"{v} is not a crop area fraction; use (0, 1]")
        return v

    @field_validator("brightness", "contrast")
    @classmethod
    def _jitter(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{v} is not allowed; use 0 <= value < 1")
        return v

    @field_validator("workers")
    @classmethod
    def _loader_workers(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"workers={v} must be >= 0")
        return v

    @model_validator(mode="after")
    def _scales(self) -> DataConfig:
        if self.scale_min > self.scale_max:
            raise ValueError(f"scale_min={self.scale_min} must not exceed scale_max={self.scale_max}")
        return self
