"""`TestConfig`: the options of `cdseg test` (whole-scene evaluation of one checkpoint)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cdseg.config.base import Section
from cdseg.metrics.config import MetricsConfig
from cdseg.storage.config import StorageConfig


class EvalOptions(Section):
    """How whole scenes are predicted: sliding window, blending, test-time augmentation, outputs."""

    window: int = Field(512, ge=32, description="side of the square inference window (pixels; a multiple of 32)")
    overlap: int = Field(128, ge=0, description="minimum overlap between neighbouring windows (pixels, < window)")
    batch_size: int = Field(4, ge=1, description="windows per forward pass (before the 8x of --eval.tta)")
    blend: Literal["hann", "gaussian", "uniform"] = Field(
        "hann", description="per-window weights of the blended softmax: separable Hann or Gaussian favour window "
        "centres; uniform averages")
    blend_floor: float = Field(0.05, gt=0.0, le=1.0, description="smallest blending weight, relative to the centre "
                               "(keeps scene borders, covered by one window edge only, well defined)")
    tta: bool = Field(False, description="average softmax probabilities over the 8 flips/rotations (D4): 8x the work")
    small_scene: Literal["pad", "error"] = Field(
        "pad", description="a scene smaller than the window: reflect-pad it to the window (prediction cropped back) "
        "or stop with an error")
    amp: bool = Field(False, description="bfloat16 autocast on CUDA (ignored on CPU)")
    device: str = Field("auto", description="auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda, cuda:N")
    previews: int = Field(3, ge=0, description="scenes drawn as input | ground truth | prediction PNGs")
    geotiff: bool = Field(True, description="write a georeferenced prediction GeoTIFF (uint8, colour table) per scene")

    @model_validator(mode="after")
    def _check(self) -> EvalOptions:
        if self.window % 32:
            raise ValueError(f"--eval.window={self.window} must be a multiple of 32 (the encoders' output stride); "
                             f"use {max(32, self.window // 32 * 32)}")
        if self.overlap >= self.window:
            raise ValueError(f"--eval.overlap={self.overlap} must be smaller than --eval.window={self.window}")
        return self

    def fingerprint_fields(self) -> dict[str, object]:
        """Options that change the numbers in metrics.json (device, batch size and outputs do not)."""
        return {"window": self.window, "overlap": self.overlap, "blend": self.blend, "blend_floor": self.blend_floor,
                "tta": self.tta, "small_scene": self.small_scene, "amp": self.amp}


class TestConfig(Section):
    """`cdseg test`: evaluate a checkpoint on whole scenes; writes `<output>/step-<k>/eval/`."""

    __test__ = False  # not a pytest class

    checkpoint: str = Field(..., description="checkpoint folder or URI (model.safetensors + model.json)")
    dataset: str = Field(..., description="prepared dataset folder or URI")
    output: str = Field(..., description="run folder or URI; results go to <output>/step-<k>/eval/")
    split: Literal["test", "val", "train"] = Field("test", description="which split's scenes to evaluate")
    labels: Literal["auto", "eroded", "full"] = Field(
        "auto", description="ground truth to score against: eroded (boundary pixels ignored, what the ISPRS benchmark "
                            "reports), full, or auto (eroded where the dataset has them, else full)")
    scenes: list[str] = Field(default_factory=list, description="scene ids to evaluate (default: every scene of --split)")
    overwrite: bool = Field(False, description="replace an existing, different evaluation in the output folder")
    push_run: str = Field("", description="`run` grouping key of the metrics pushed to a Pushgateway (default: the "
                          "--output folder's name); the pipeline passes its run id, and its report step deletes "
                          "the run's groups")
    verify: bool = Field(False, description="hash every file of a local prepared dataset against its manifest before "
                                            "testing (by default only files changed since their last verification "
                                            "are hashed)")
    eval: EvalOptions = Field(default_factory=EvalOptions)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
