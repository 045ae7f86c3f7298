"""The incremental segmenter: input normalisation, encoder, decoder, one classifier head per step.

`model(x) -> (logits, features)` with x in [0, 1] ([B, bands, H, W]); logits [B, sum(heads), H, W] in the
order background, step-0 classes, step-1 classes, ...; features [B, F, H, W], the decoder output upsampled to
the input size, which the contrastive term compares.

`model(x, need={...})` returns a `SegOutputs` instead, computed only as far as the names in `need` require
(`OUTPUTS`): the loss terms of a method ask for what they read, e.g. PLOP's pooled distillation asks for the
encoder stages and the decoder output, ILT's feature distillation for the last encoder stage only.

Dropout and features (a deliberate choice, see ModelConfig.feature_dropout): the heads always see the
dropped-out decoder output; the features returned are taken *before* dropout unless `feature_dropout` is set
(the original returned them after dropout, so its self term compared two independently masked copies).
Heads run at the decoder's resolution and their logits are upsampled (bilinear, align_corners=True): a 1x1
convolution commutes with bilinear upsampling, so this equals the original's upsample-then-classify while
classifying 1/16 of the pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from cdseg.errors import CheckpointError, ConfigError
from cdseg.models.config import ModelConfig
from cdseg.models.decoder import RowSource, UNetDecoder
from cdseg.models.encoder import create_encoder
from cdseg.models.stem import banded_stem

_log = logging.getLogger(__name__)

#: what `forward(x, need=...)` can return (see `SegOutputs`)
OUTPUTS = frozenset({"logits", "features", "stages", "decoded", "head_logits"})


@dataclass
class SegOutputs:
    """Named outputs of one forward; a field is None when no active term asked for it.

    logits      [B, C, H, W]   classifier outputs upsampled to the input size
    features    [B, F, H, W]   decoder output upsampled to the input size (before dropout unless feature_dropout)
    stages      [[B, C_i, H_i, W_i]]  the encoder's feature maps, shallow to deep
    decoded     [B, F, h, w]   decoder output at its own resolution, before dropout
    head_logits [B, C, h, w]   classifier outputs at the decoder's resolution (before upsampling)
    """

    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None
    stages: list[torch.Tensor] | None = None
    decoded: torch.Tensor | None = None
    head_logits: torch.Tensor | None = None


#: output rows per band of every decoder block in `IncrementalSegmenter.predict` (an eighth of a 512 px window's
#: 256 rows at the last block's resolution; each band also computes a 2-row halo per side), and rows of the
#: encoder stem's largest activation per band (`cdseg.models.stem`). resnet18, 7 classes: 32 rows peak at 2.25x
#: the logits, 64 rows at 3.25x (docs/performance.md, `cdseg bench eval`).
PREDICT_ROWS = 32

#: band names that take the pretrained weights' own mean/std (index into pretrained_cfg mean/std)
RGB_INDEX = {"R": 0, "RED": 0, "G": 1, "GREEN": 1, "B": 2, "BLUE": 2}


class IncrementalSegmenter(nn.Module):
    """Encoder + residual UNet + one 1x1 classifier per step; owns the input normalisation."""

    input_mean: torch.Tensor
    input_std: torch.Tensor
    encoder: Any  # a timm FeatureListNet / FeatureHooks model with `feature_info`

    def __init__(
        self,
        cfg: ModelConfig,
        encoder: Any,
        heads: Sequence[int],
        bands: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        if not heads or any(int(n) <= 0 for n in heads):
            raise ConfigError(f"heads={list(heads)} must be a non-empty list of positive class counts (head 0 includes background)")
        if len(mean) != len(bands) or len(std) != len(bands):
            raise ConfigError(f"normalisation has {len(mean)} means / {len(std)} stds for {len(bands)} bands {list(bands)}")
        if any(s <= 0 for s in std):
            raise ConfigError(f"normalisation std {list(std)} must be positive for every band {list(bands)}")
        self.cfg = cfg
        self.bands = list(bands)
        self.head_sizes = [int(n) for n in heads]
        self.encoder = encoder
        self.decoder = UNetDecoder(encoder.feature_info.channels(), cfg.norm, cfg.act, cfg.decoder_channels)
        self.dropout = nn.Dropout2d(cfg.dropout) if cfg.dropout2d else nn.Dropout(cfg.dropout)
        self.heads = nn.ModuleList(nn.Conv2d(self.decoder.out_channels, n, kernel_size=1, bias=True) for n in self.head_sizes)
        self.register_buffer("input_mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("input_std", torch.tensor(list(std), dtype=torch.float32))

    @property
    def num_outputs(self) -> int:
        """Number of output channels (classes seen so far, background included)."""
        return sum(self.head_sizes)

    @property
    def feature_channels(self) -> int:
        """Channels of the features returned for the contrastive term."""
        return self.decoder.out_channels

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """[0,1] bands -> the encoder's input scale (per-band mean/std buffers)."""
        if x.shape[1] != len(self.bands):
            raise ValueError(f"input has {x.shape[1]} bands, the model expects {len(self.bands)} ({self.bands})")
        shape = (1, -1, 1, 1)
        return (x - self.input_mean.view(shape).to(x.dtype)) / self.input_std.view(shape).to(x.dtype)

    def forward(self, x: torch.Tensor, need: Collection[str] | None = None) -> Any:
        """(logits [B, C_t, H, W], features [B, F, H, W]) of images x in [0, 1]; with `need`, a `SegOutputs`
        holding those names (and whatever is computed on the way)."""
        if need is not None:
            return self.outputs(x, need)
        decoded, dropped, logits = self._run(x)
        features = F.interpolate(dropped if self.cfg.feature_dropout else decoded, size=x.shape[-2:],
                                 mode="bilinear", align_corners=True)
        return logits, features

    def outputs(self, x: torch.Tensor, need: Collection[str]) -> SegOutputs:
        """The outputs named in `need` (see `OUTPUTS`); the heads do not run unless logits are asked for."""
        unknown = set(need) - OUTPUTS
        if unknown:
            raise ValueError(f"unknown model outputs {sorted(unknown)}; choose from {sorted(OUTPUTS)}")
        stages = self.encoder(self.normalise(x))
        out = SegOutputs(stages=list(stages) if "stages" in need else None)
        if not set(need) - {"stages"}:
            return out
        decoded = self.decoder(stages)
        out.decoded = decoded if "decoded" in need else None
        wants_heads = "logits" in need or "head_logits" in need
        dropped = self.dropout(decoded) if wants_heads or (self.cfg.feature_dropout and "features" in need) else decoded
        if wants_heads:
            small = torch.cat([head(dropped) for head in self.heads], dim=1)
            out.head_logits = small if "head_logits" in need else None
            if "logits" in need:
                out.logits = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=True)
        if "features" in need:
            out.features = F.interpolate(dropped if self.cfg.feature_dropout else decoded, size=x.shape[-2:],
                                         mode="bilinear", align_corners=True)
        return out

    def predict(self, x: torch.Tensor, rows: int | None = PREDICT_ROWS) -> torch.Tensor:
        """Logits only (no full-resolution features): what evaluation needs.

        In eval mode the decoder's blocks and the heads run `rows` rows (of the decoder's output) at a time
        (`UNetDecoder.forward_rows`), each encoder level is released once the decoder has used it, and a
        resnet-like encoder's stem runs in bands too (`banded_stem`), its stride-2 level recomputed band by
        band for the decoder's last block instead of kept whole: the peak memory of a window batch falls from
        13.1x its logits to 2.25x (resnet18, 7 classes, docs/performance.md). The logits equal `forward`'s
        within float rounding (about 1e-7: banded convolutions and upsampling add in another order).
        `rows=None`, or training mode, runs the plain forward."""
        if self.training or rows is None:
            return self._run(x)[2]
        stem = banded_stem(self.encoder, self.normalise)
        # not a FeatureListNet with an allow-listed stem (stem None): the encoder runs whole
        stages: list[torch.Tensor | RowSource] = \
            list(self.encoder(self.normalise(x))) if stem is None else list(stem.features(x, rows))
        small = self.decoder.forward_rows(stages, self._heads, rows)
        return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=True)

    def _heads(self, decoded: torch.Tensor) -> torch.Tensor:
        dropped = self.dropout(decoded)
        return torch.cat([head(dropped) for head in self.heads], dim=1)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        decoded = self.decoder(self.encoder(self.normalise(x)))
        dropped = self.dropout(decoded)
        logits = torch.cat([head(dropped) for head in self.heads], dim=1)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return decoded, dropped, logits

    def freeze(self) -> IncrementalSegmenter:
        """Eval mode and no gradients (the previous step's teacher); returns self."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self


def predict_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of `model` for `x`: its `predict` (no full-resolution features) where it has one, else its
    output's first element (a `(logits, ...)` tuple) or the output itself (a tensor)."""
    predict = getattr(model, "predict", None)
    if callable(predict):
        return cast(torch.Tensor, predict(x))
    out = model(x)
    return out if isinstance(out, torch.Tensor) else out[0]


def normalisation(
    bands: Sequence[str], stats: Mapping[str, Any] | None, pretrained_cfg: Mapping[str, Any] | None
) -> tuple[list[float], list[float]]:
    """Per-band mean/std for [0,1] input: the weights' own for R, G, B when pretrained, dataset stats otherwise.

    `stats` is the prepared manifest's `stats`: either {band: {"mean": m, "std": s}} or
    {"mean": [...], "std": [...]} in band order ([0,1]-scaled). A band with no statistic gets mean 0, std 1
    (a warning says so).
    """
    per_band = _stats_per_band(bands, stats)
    mean, std, missing = [], [], []
    for band in bands:
        key = band.upper()
        if pretrained_cfg is not None and key in RGB_INDEX:
            mean.append(float(pretrained_cfg["mean"][RGB_INDEX[key]]))
            std.append(float(pretrained_cfg["std"][RGB_INDEX[key]]))
        elif band in per_band:
            m, sd = float(per_band[band][0]), float(per_band[band][1])
            if not sd > 1e-6:  # a constant band (or NaN): centre it, do not blow it up
                _log.warning("band %s has std %s in the dataset statistics; using std 1", band, sd)
                sd = 1.0
            mean.append(m)
            std.append(sd)
        else:
            missing.append(band)
            mean.append(0.0)
            std.append(1.0)
    if missing:
        _log.warning("no normalisation statistics for band(s) %s: using mean 0, std 1 (pass the prepared dataset's stats)",
                     missing)
    return mean, std


def _stats_per_band(bands: Sequence[str], stats: Mapping[str, Any] | None) -> dict[str, tuple[float, float]]:
    if not stats:
        return {}
    if "mean" in stats and "std" in stats and not isinstance(stats["mean"], Mapping):
        means, stds = list(stats["mean"]), list(stats["std"])
        if len(means) != len(bands) or len(stds) != len(bands):
            raise ConfigError(f"stats have {len(means)} means / {len(stds)} stds for bands {list(bands)}")
        return {b: (m, s) for b, m, s in zip(bands, means, stds, strict=True)}
    out = {}
    for band, value in stats.items():
        if isinstance(value, Mapping):
            out[band] = (value["mean"], value["std"])
        else:
            out[band] = (value[0], value[1])
    return out


def build_segmenter(
    model_cfg: ModelConfig,
    heads: Sequence[int],
    bands: Sequence[str],
    stats: Mapping[str, Any] | None = None,
    group: Any = None,
) -> IncrementalSegmenter:
    """Build the segmenter for `heads` (outputs per step, head 0 with background) on `bands` ([0,1] input).

    `stats`: the prepared dataset's per-band statistics. `group`: a process group to synchronise
    syncbn / iabn_sync layers over (same as calling `convert_sync(model, group)` afterwards).
    """
    if not bands:
        raise ConfigError("bands must name at least one input band, e.g. ['R', 'G', 'B']")
    encoder, pretrained_cfg = create_encoder(model_cfg, len(bands))
    mean, std = normalisation(bands, stats, pretrained_cfg)
    model = IncrementalSegmenter(model_cfg, encoder, heads, bands, mean, std)
    if group is not None:
        from cdseg.models.norm import convert_sync

        convert_sync(model, group)
    if model_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def assemble(model_cfg: ModelConfig, heads: Sequence[int], bands: Sequence[str]) -> IncrementalSegmenter:
    """The architecture only (random weights, no pretrained download), for loading a saved state into."""
    cfg = model_cfg.model_copy(update={"pretrained": False, "weights": None})
    encoder, _ = create_encoder(cfg, len(bands))
    model = IncrementalSegmenter(model_cfg, encoder, heads, bands, [0.0] * len(bands), [1.0] * len(bands))
    if model_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


@torch.no_grad()
def init_new_head_mib(model: IncrementalSegmenter) -> None:
    """MiB initialisation of the newest head from the *background* row of head 0 (any step >= 1).

    New weights = w_bg, new biases = b_bg - log(n_new + 1), and b_bg itself lowered by log(n_new + 1): the
    background and the n_new new classes then share exactly the probability the background had.
    (The original copied row 0 of head t-1 at t >= 2, i.e. an old class, and kept b_bg: seed bug 1.)
    """
    if len(model.heads) < 2:
        raise ConfigError("init_new_head_mib needs a model with at least 2 heads (step >= 1)")
    head0, new = cast(nn.Conv2d, model.heads[0]), cast(nn.Conv2d, model.heads[-1])
    assert head0.bias is not None and new.bias is not None
    n_new = new.out_channels
    bias = head0.bias[0] - torch.log(torch.tensor(float(n_new + 1), device=head0.bias.device))
    new.weight.copy_(head0.weight[0:1].expand_as(new.weight))
    new.bias.copy_(bias.expand_as(new.bias))
    head0.bias[0] = bias


def load_previous_into(new_model: IncrementalSegmenter, old_state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load the previous step's state into `new_model`: everything but the new heads, strictly.

    Raises a CheckpointError listing missing / unexpected keys and shape differences.
    """
    own = new_model.state_dict()
    old_heads = {int(k.split(".")[1]) for k in old_state_dict if k.startswith("heads.")}
    n_old = max(old_heads) + 1 if old_heads else 0
    if n_old >= len(new_model.heads):
        raise CheckpointError(
            f"the previous checkpoint has {n_old} heads; the new model has {len(new_model.heads)}: expected fewer "
            "(a checkpoint of an earlier step of the same task)"
        )
    new_head_prefixes = tuple(f"heads.{i}." for i in range(n_old, len(new_model.heads)))
    expected = {k for k in own if not k.startswith(new_head_prefixes)}
    missing = sorted(expected - set(old_state_dict))
    unexpected = sorted(set(old_state_dict) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(old_state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(expected & set(old_state_dict))
        if tuple(old_state_dict[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    if shapes:
        problems.append(f"shape differences {_short(shapes)}")
    if problems:
        raise CheckpointError(
            "the previous step's checkpoint does not match the new model (" + "; ".join(problems) + "); it must come "
            "from the same --model settings (encoder, decoder, norm) and bands"
        )
    new_model.load_state_dict({k: old_state_dict[k] for k in expected}, strict=False)


def _short(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"
