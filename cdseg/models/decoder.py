"""Residual UNet decoder (seed-spec 4.2): deepest features upsampled and fused with each skip level.

Block i (deep to shallow): up = Conv1x1(bilinear-upsample(x), in -> in/2); main = 2 x (Conv3x3 -> norm+act) on
concat(up, skip); out = main + residual(up), residual a Conv1x1 when widths differ. Upsampling goes to the skip's
exact size (not a fixed x2), so any input size that the encoder accepts works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cdseg.errors import ConfigError
from cdseg.models.norm import norm_act


class DecodeBlock(nn.Module):
    """One residual UNet block: upsample `x` to `skip`'s size, fuse, two conv-norm-act layers, residual."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, norm: str, act: str) -> None:
        super().__init__()
        mid = max(in_ch // 2, 1)
        self.reduce = nn.Conv2d(in_ch, mid, kernel_size=1, bias=True)
        self.main = nn.Sequential(
            nn.Conv2d(mid + skip_ch, out_ch, kernel_size=3, padding=1, bias=False),
            norm_act(norm, out_ch, act),
            nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1, bias=False),
            norm_act(norm, out_ch, act),
        )
        self.residual: nn.Module = nn.Conv2d(mid, out_ch, kernel_size=1, bias=True) if mid != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        up = self.reduce(up)
        return self.main(torch.cat([up, skip], dim=1)) + self.residual(up)


class UNetDecoder(nn.Module):
    """Decoder over encoder features (shallow to deep); output at the shallowest level's resolution."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        norm: str,
        act: str,
        decoder_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        deep_first = list(encoder_channels)[::-1]
        if len(deep_first) < 2:
            raise ConfigError(f"the encoder gives {len(deep_first)} feature level(s); the UNet decoder needs at least 2")
        skips = deep_first[1:]
        outs = list(decoder_channels) if decoder_channels is not None else skips
        if len(outs) != len(skips):
            raise ConfigError(
                f"--model.decoder-channels={list(outs)} has {len(outs)} entries; this encoder needs {len(skips)} "
                f"(one per skip level, deepest first; default {skips})"
            )
        blocks = []
        in_ch = deep_first[0]
        for skip_ch, out_ch in zip(skips, outs, strict=True):
            blocks.append(DecodeBlock(in_ch, skip_ch, out_ch, norm, act))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = in_ch

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        deep_first = list(features)[::-1]
        x = deep_first[0]
        for block, skip in zip(self.blocks, deep_first[1:], strict=True):
            x = block(x, skip)
        return x
