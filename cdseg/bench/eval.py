"""`cdseg bench eval`: full-scene inference speed, the work done against the minimum the grid allows, and memory.

Figures: megapixels of scene per second; pixels pushed through the network (counted by a hook on the
model's input, independently of the sliding-window code's own counters) against the scene's pixels and
against the minimum that the window and overlap allow (fewest windows per axis x window area); with
TTA, the pushed pixels against those without it (exactly 8x expected). Settings are timed interleaved
(one whole scene of each per round, in an order that rotates from round to round, cdseg.bench.timing): plain (the logits-only path evaluation uses),
`features` (the model's full training forward, which also builds full-resolution decoder features) and TTA.
Memory: the peak one window batch adds, i.e. the most bytes alive at once while the probability function runs
on one batch of windows, its returned probabilities included (cdseg.bench.memory: on CUDA the allocator's peak
minus what was allocated before; on CPU every tensor storage created during the call, counted until freed),
against the size of that batch's logits at float32 (batch x classes x window x window x 4 bytes; target <= 3x).
`unbanded` is the plain path with the encoder and decoder run whole (`predict(x, rows=None)`, what evaluation
did before issue 18), for comparison in the same run.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from cdseg.bench.memory import peak_bytes
from cdseg.bench.timing import interleave
from cdseg.config.base import Section
from cdseg.evaluate.sliding import min_windows, predict_scene
from cdseg.evaluate.tta import D4_SIZE, make_prob_fn
from cdseg.models.segmenter import IncrementalSegmenter, predict_logits

log = logging.getLogger(__name__)

#: settings timed: name -> (TTA, full forward with features)
SETTINGS = {"plain": (False, False), "features": (False, True), "tta": (True, False)}


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
    repeats: int = Field(3, ge=1, description="interleaved rounds (one scene per setting per round), after one "
                         "warm-up window batch per setting")
    features: bool = Field(True, description="also time the full forward (logits and decoder features) against "
                           "the logits-only path")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    amp: bool = Field(False, description="bf16 autocast on CUDA (as cdseg test --eval.amp)")
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
        self._count(x)
        return self.model(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's logits-only path (what evaluation calls), counted the same way."""
        self._count(x)
        return predict_logits(self.model, x)

    def _count(self, x: torch.Tensor) -> None:
        self.pixels += x.shape[0] * x.shape[-2] * x.shape[-1]
        self.calls += 1


def _model(cfg: BenchEvalConfig) -> nn.Module:
    if cfg.model == "tiny":
        return nn.Sequential(nn.Conv2d(cfg.bands, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                             nn.ReLU(), nn.Conv2d(16, cfg.classes, 1))
    from cdseg.models import ModelConfig, build_segmenter

    names = ["R", "G", "B", "IR", "DSM"][: cfg.bands] if cfg.bands <= 5 else [f"B{i}" for i in range(cfg.bands)]
    return build_segmenter(ModelConfig(encoder=cfg.encoder, pretrained=False, norm="bn"), [cfg.classes], names)


def _memory(counter: PixelCounter, cfg: BenchEvalConfig, device: torch.device) -> dict[str, Any]:
    """Peak memory of one window batch per setting, against the batch's float32 logits."""
    g = torch.Generator().manual_seed(cfg.seed)
    batch = torch.rand(cfg.batch_size, cfg.bands, cfg.window, cfg.window, generator=g).to(device)
    logits_bytes = cfg.batch_size * cfg.classes * cfg.window * cfg.window * 4
    out: dict[str, Any] = {"logits_bytes": logits_bytes, "input_bytes": batch.numel() * batch.element_size()}
    with torch.no_grad():
        for name, (tta, features) in SETTINGS.items():
            if (tta and not cfg.tta) or (features and not cfg.features):
                continue
            fn = make_prob_fn(counter, tta=tta, features=features, amp=cfg.amp)
            peak = peak_bytes(functools.partial(fn, batch), device)
            out[name] = {"peak_bytes": peak, "over_logits": peak / logits_bytes}
        if isinstance(counter.model, IncrementalSegmenter):
            fn = make_prob_fn(_Unbanded(counter.model), amp=cfg.amp)
            peak = peak_bytes(functools.partial(fn, batch), device)
            out["unbanded"] = {"peak_bytes": peak, "over_logits": peak / logits_bytes}
    return out


class _Unbanded(nn.Module):
    """A segmenter whose `predict` runs the encoder and decoder whole (`rows=None`): evaluation before issue 18."""

    def __init__(self, model: IncrementalSegmenter) -> None:
        super().__init__()
        self.model = model

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The segmenter's logits, unbanded."""
        return self.model.predict(x, rows=None)


def run_bench_eval(cfg: BenchEvalConfig) -> dict[str, Any]:
    """Time whole-scene inference (logits only, full forward, with TTA; interleaved) and return the figures."""
    from cdseg.train.distributed import pick_device

    device = pick_device(cfg.device, 0)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    scene = torch.from_numpy(rng.integers(0, 256, size=(cfg.bands, cfg.height, cfg.width), dtype=np.uint8)).to(device)
    counter = PixelCounter(_model(cfg).eval().to(device))
    n_min = min_windows(cfg.height, cfg.window, cfg.overlap) * min_windows(cfg.width, cfg.window, cfg.overlap)
    min_pixels = n_min * cfg.window * cfg.window
    scene_pixels = cfg.height * cfg.width
    # warm-up, not counted: allocations, cudnn autotuning, oneDNN's kernels for every shape a setting meets (the
    # banded decoder's bands have a few heights of their own): one window batch through each setting's path
    with torch.no_grad():
        warm = torch.zeros((cfg.batch_size, cfg.bands, cfg.window, cfg.window), device=device)
        for features in {False, cfg.features}:
            make_prob_fn(counter, features=features, amp=cfg.amp)(warm)
    results: dict[str, Any] = {"device": str(device), "model": cfg.model if cfg.model == "tiny" else cfg.encoder,
                               "scene": [cfg.height, cfg.width], "window": cfg.window, "overlap": cfg.overlap,
                               "batch_size": cfg.batch_size, "scene_pixels": scene_pixels, "min_windows": n_min,
                               "min_pixels_pushed": min_pixels, "min_pushed_per_scene_pixel": min_pixels / scene_pixels,
                               "rounds": cfg.repeats}
    settings = {k: v for k, v in SETTINGS.items() if (cfg.tta or not v[0]) and (cfg.features or not v[1])}
    counted: dict[str, list[int]] = {k: [] for k in settings}
    reported: dict[str, list[Any]] = {k: [] for k in settings}

    def run(name: str, r: int) -> None:
        tta, features = settings[name]
        _, stats = predict_scene(scene, make_prob_fn(counter, tta=tta, features=features, amp=cfg.amp), cfg.classes,
                                 window=cfg.window, overlap=cfg.overlap, batch_size=cfg.batch_size, blend=cfg.blend,
                                 passes_per_window=D4_SIZE if tta else 1)
        reported[name].append(stats)

    def before(name: str, r: int) -> None:
        counter.pixels = 0

    def after(name: str, r: int) -> None:
        counted[name].append(counter.pixels)

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    names = list(settings)

    def rotated(r: int) -> list[str]:
        # the first call of a round was measured up to 1.2x slower on CPU (after the previous round's long TTA
        # call): every setting takes every position in turn, so no setting always pays it
        k = r % len(names)
        return names[k:] + names[:k]

    timings = interleave({k: functools.partial(run, k) for k in settings}, cfg.repeats, sync=sync, before=before,
                         after=after, order=rotated)
    for key, (tta, _) in settings.items():
        passes = D4_SIZE if tta else 1
        med = timings.median(key)
        stats, pushed = reported[key][-1], counted[key][-1]
        results[key] = {"seconds": med, "seconds_best": timings.best(key), "megapixels_per_s": scene_pixels / 1e6 / med,
                        "windows": stats.windows, "pixels_pushed": pushed, "pixels_pushed_reported": stats.pixels_pushed,
                        "pushed_per_scene_pixel": pushed / scene_pixels,
                        "pushed_over_minimum": pushed / (min_pixels * passes),  # minimum: n_min windows x passes
                        "time_over_plain": timings.ratio(key, "plain").as_dict(),
                        "cpu_time_over_plain": timings.cpu_ratio(key, "plain").as_dict()}
        log.info("%s: %.2f s, %.3f MP/s, pushed %.3fx the scene, %.3fx the minimum", key, med,
                 scene_pixels / 1e6 / med, pushed / scene_pixels, pushed / (min_pixels * passes))
    if cfg.tta:
        results["tta_work_ratio"] = results["tta"]["pixels_pushed"] / results["plain"]["pixels_pushed"]
    results["memory"] = _memory(counter, cfg, device)
    return results


def format_table(r: dict[str, Any]) -> str:
    """The figures as a small text table."""
    lines = [f"bench eval: {r['model']} on {r['device']}, scene {r['scene'][0]}x{r['scene'][1]} px, window {r['window']}, "
             f"overlap {r['overlap']}, batch {r['batch_size']}; minimum {r['min_windows']} windows "
             f"({r['min_pushed_per_scene_pixel']:.3f} px pushed per scene px); {r['rounds']} interleaved rounds",
             f"{'setting':<9} {'median s':>9} {'MP/s':>9} {'windows':>8} {'pushed/scene':>13} {'pushed/minimum':>15} "
             f"{'time / plain':>18}"]
    for key in SETTINGS:
        if key in r:
            x = r[key]
            t = x["time_over_plain"]
            lines.append(f"{key:<9} {x['seconds']:>9.3f} {x['megapixels_per_s']:>9.3f} {x['windows']:>8d} "
                         f"{x['pushed_per_scene_pixel']:>13.3f} {x['pushed_over_minimum']:>15.3f} "
                         f"{t['median']:>7.2f} [{t['q1']:.2f}-{t['q3']:.2f}]")
    if "tta_work_ratio" in r:
        lines.append(f"TTA work ratio (pixels pushed, TTA / plain): {r['tta_work_ratio']:.3f} (8 expected)")
    mem = r["memory"]
    lines.append(f"peak memory of one window batch: the most tensor bytes alive at once during the call, its output "
                 f"included, against the batch's float32 logits ({mem['logits_bytes'] / 1e6:.1f} MB; input "
                 f"{mem['input_bytes'] / 1e6:.1f} MB, not counted); target <= 3x:")
    for key in [*SETTINGS, "unbanded"]:
        if key in mem:
            lines.append(f"  {key:<9} {mem[key]['peak_bytes'] / 1e6:>9.1f} MB = {mem[key]['over_logits']:.2f}x the logits")
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
