"""`cdseg bench eval`: full-scene inference speed, and the work done against the minimum the grid allows.

Figures: megapixels of scene per second; pixels pushed through the network (counted by a hook on the
model's input, independently of the sliding-window code's own counters) against the scene's pixels and
against the minimum that the window and overlap allow (fewest windows per axis x window area); with
TTA, the pushed pixels against those without it (exactly 8x expected).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from cdseg.config.base import Section
from cdseg.evaluate.sliding import min_windows, predict_scene
from cdseg.evaluate.tta import D4_SIZE, make_prob_fn

log = logging.getLogger(__name__)


class BenchEvalConfig(Section):
    """Options of `cdseg bench eval` (a generated scene, an untrained model: speed only, not accuracy)."""

    height: int = Field(1536, ge=32, description="generated scene height (pixels)")
    width: int = Field(1280, ge=32, description="generated scene width (pixels)")
    bands: int = Field(4, ge=1, description="scene bands")
    classes: int = Field(7, ge=2, description="model outputs")
    window: int = Field(512, ge=32, description="inference window (pixels, multiple of 32)")
    overlap: int = Field(128, ge=0, description="minimum window overlap (pixels)")
    batch_size: int = Field(4, ge=1, description="windows per forward pass")
    blend: Literal["hann", "gaussian", "uniform"] = Field("hann", description="blending weights")
    model: Literal["segmenter", "tiny"] = Field("segmenter", description="segmenter: cdseg's model (--encoder, "
                                                "random weights); tiny: a 3-layer conv net")
    encoder: str = Field("resnet18", description="timm encoder of the segmenter model")
    tta: bool = Field(True, description="also measure with 8x D4 test-time augmentation")
    repeats: int = Field(1, ge=1, description="timed runs per setting (the best is reported), after one warm-up window")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    seed: int = Field(0, description="seed of the generated scene and the model")
    output: str | None = Field(None, description="also write the figures as JSON to this file")

    @model_validator(mode="after")
    def _check(self) -> BenchEvalConfig:
        if self.window % 32 or self.overlap >= self.window:
            raise ValueError(f"--window={self.window} must be a multiple of 32 and --overlap={self.overlap} smaller")
        return self


class PixelCounter(nn.Module):
    """Wraps a model and counts the input pixels (batch x height x width) it is given."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.pixels = 0
        self.calls = 0

    def forward(self, x: torch.Tensor) -> Any:
        self.pixels += x.shape[0] * x.shape[-2] * x.shape[-1]
        self.calls += 1
        return self.model(x)


def _model(cfg: BenchEvalConfig) -> nn.Module:
    if cfg.model == "tiny":
        return nn.Sequential(nn.Conv2d(cfg.bands, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                             nn.ReLU(), nn.Conv2d(16, cfg.classes, 1))
    from cdseg.models import ModelConfig, build_segmenter

    names = ["R", "G", "B", "IR", "DSM"][: cfg.bands] if cfg.bands <= 5 else [f"B{i}" for i in range(cfg.bands)]
    return build_segmenter(ModelConfig(encoder=cfg.encoder, pretrained=False, norm="bn"), [cfg.classes], names)


def run_bench_eval(cfg: BenchEvalConfig) -> dict[str, Any]:
    """Time whole-scene inference (plain and with TTA) and return the figures."""
    from cdseg.train.distributed import pick_device

    device = pick_device(cfg.device, 0)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    scene = torch.from_numpy(rng.integers(0, 256, size=(cfg.bands, cfg.height, cfg.width), dtype=np.uint8)).to(device)
    counter = PixelCounter(_model(cfg).eval().to(device))
    n_min = min_windows(cfg.height, cfg.window, cfg.overlap) * min_windows(cfg.width, cfg.window, cfg.overlap)
    min_pixels = n_min * cfg.window * cfg.window
    scene_pixels = cfg.height * cfg.width
    with torch.no_grad():  # warm-up (allocations, cudnn autotuning), not counted
        counter(torch.zeros((1, cfg.bands, cfg.window, cfg.window), device=device))
    results: dict[str, Any] = {"device": str(device), "model": cfg.model if cfg.model == "tiny" else cfg.encoder,
                               "scene": [cfg.height, cfg.width], "window": cfg.window, "overlap": cfg.overlap,
                               "batch_size": cfg.batch_size, "scene_pixels": scene_pixels, "min_windows": n_min,
                               "min_pixels_pushed": min_pixels, "min_pushed_per_scene_pixel": min_pixels / scene_pixels}
    for tta in ([False, True] if cfg.tta else [False]):
        best = float("inf")
        pushed = counted = windows = 0
        for _ in range(cfg.repeats):
            counter.pixels = 0
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            _, stats = predict_scene(scene, make_prob_fn(counter, tta=tta), cfg.classes, window=cfg.window,
                                     overlap=cfg.overlap, batch_size=cfg.batch_size, blend=cfg.blend,
                                     passes_per_window=D4_SIZE if tta else 1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
            pushed, counted, windows = stats.pixels_pushed, counter.pixels, stats.windows
        key = "tta" if tta else "plain"
        passes = D4_SIZE if tta else 1
        results[key] = {"seconds": best, "megapixels_per_s": scene_pixels / 1e6 / best, "windows": windows,
                        "pixels_pushed": counted, "pixels_pushed_reported": pushed,
                        "pushed_per_scene_pixel": counted / scene_pixels,
                        "pushed_over_minimum": counted / (min_pixels * passes)}  # minimum: n_min windows x passes
        log.info("%s: %.2f s, %.3f MP/s, pushed %.3fx the scene, %.3fx the minimum", key, best,
                 scene_pixels / 1e6 / best, counted / scene_pixels, counted / (min_pixels * passes))
    if cfg.tta:
        results["tta_work_ratio"] = results["tta"]["pixels_pushed"] / results["plain"]["pixels_pushed"]
    return results


def format_table(r: dict[str, Any]) -> str:
    """The figures as a small text table."""
    lines = [f"bench eval: {r['model']} on {r['device']}, scene {r['scene'][0]}x{r['scene'][1]} px, window {r['window']}, "
             f"overlap {r['overlap']}, batch {r['batch_size']}; minimum {r['min_windows']} windows "
             f"({r['min_pushed_per_scene_pixel']:.3f} px pushed per scene px)",
             f"{'setting':<8} {'seconds':>9} {'MP/s':>9} {'windows':>8} {'pushed/scene':>13} {'pushed/minimum':>15}"]
    for key in ("plain", "tta"):
        if key in r:
            x = r[key]
            lines.append(f"{key:<8} {x['seconds']:>9.3f} {x['megapixels_per_s']:>9.3f} {x['windows']:>8d} "
                         f"{x['pushed_per_scene_pixel']:>13.3f} {x['pushed_over_minimum']:>15.3f}")
    if "tta_work_ratio" in r:
        lines.append(f"TTA work ratio (pixels pushed, TTA / plain): {r['tta_work_ratio']:.3f} (8 expected)")
    return "\n".join(lines)


def run_and_print(cfg: BenchEvalConfig) -> int:
    """CLI entry: run, print the table (and write the JSON if asked)."""
    import json

    result = run_bench_eval(cfg)
    print(format_table(result))
    if cfg.output:
        from cdseg.storage import write_text

        write_text(cfg.output, json.dumps(result, indent=2) + "\n")
        print(f"results: {cfg.output}")
    return 0
