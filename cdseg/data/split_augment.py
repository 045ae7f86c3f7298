"""The training augmentation in two parts: random draws and the crop in the loader worker, pixel work on the device.

`train_transform` does all of it in the worker, in float32: one worker serves about 90 patches of 512 px per CPU
second, far from what a GPU consumes. Split, the worker (`CropOnWorker`) makes the same torch random calls in the
same order (the same transforms' `make_params`), reads only the crop box of the raw uint8 patch, straight into a
patch-sized uint8 buffer, applies the class table as uint8 and returns the buffers with the crop's size and the
drawn parameters as small tensors (the batch collates as usual). The device part (`AugmentOnDevice`), batched on the training device right after the copy: uint8 -> float32
/ 255, each crop resized to the crop size with torchvision's own kernels (antialiased bilinear for images, nearest
for targets, as `RandomResizedCrop`), the flips and quarter turn, the brightness/contrast jitter, int64 targets.
On CPU the patches equal `train_transform`'s bit for bit; on a GPU up to the float rounding of its resize and mean
kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import RandomResizedCrop
from torchvision.transforms.v2 import functional as F

from cdseg.data.transforms import RandomBrightnessContrast, RandomFlipRotate90

#: what one worker item (and a collated batch) holds besides its metadata
WORKER_KEYS = ("image", "mask", "crop", "d4", "jitter")

#: read(top, left, image_out, label_out): a box of the patch into CxHxW uint8 and HxW uint8 raw labels
ReadBox = Callable[[int, int, np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class AugmentSpec:
    """The options of the training augmentation (as `train_transform` takes them)."""

    size: int
    scale: tuple[float, float] = (0.25, 1.0)
    flip: bool = True
    rotate90: bool = True
    brightness: float = 0.2
    contrast: float = 0.2

    @classmethod
    def from_data_config(cls, cfg: Any) -> AugmentSpec:
        """The spec of a `DataConfig`."""
        return cls(cfg.crop_size, (cfg.scale_min, cfg.scale_max), cfg.flip, cfg.rotate90, cfg.brightness, cfg.contrast)


class CropOnWorker:
    """The worker part: every random draw of `train_transform`, the crop box of the uint8 patch, no float work.

    Returns image (uint8 CxHxW, the patch's size; the C x h x w crop packed at the start of its memory, zeros
    after it), mask (the targets, HxW, the h x w crop packed the same way), crop (int64 [h, w]), d4 (int64
    [transpose, flip rows, flip columns]) and jitter (float64 [apply, brightness factor, contrast factor])."""

    def __init__(self, spec: AugmentSpec) -> None:
        self.spec = spec
        self._crop = RandomResizedCrop(spec.size, scale=spec.scale, ratio=(1.0, 1.0), antialias=True)
        self._d4 = RandomFlipRotate90(spec.flip, spec.rotate90) if spec.flip or spec.rotate90 else None
        self._jitter = (RandomBrightnessContrast(spec.brightness, spec.contrast)
                        if spec.brightness or spec.contrast else None)
        self._pairs: dict[bytes, np.ndarray] = {}  # the class table as a two-byte table (one table at a time)

    def __call__(self, shape: tuple[int, int, int], read: ReadBox, table: np.ndarray | Tensor) -> dict[str, Tensor]:
        """Draw for a patch of `shape` (C, H, W), `read` the crop box (uint8 image and raw labels) straight into the
        buffers, map the labels through `table` (uint8 ndarray: one byte per target; int64 tensor: above 255)."""
        # the draws of train_transform's Compose, in its order: crop box (from the patch's size), flips/turn, jitter
        box = self._crop.make_params([tv_tensors.Mask(torch.empty((1, 1), dtype=torch.uint8).expand(shape[-2:]))])
        d4: dict[str, Any] = self._d4.make_params([]) if self._d4 is not None else {"transpose": False, "dims": ()}
        jit: dict[str, Any] = (self._jitter.make_params([]) if self._jitter is not None
                               else {"apply": False, "b": 1.0, "c": 1.0})
        top, left, h, w = box["top"], box["left"], box["height"], box["width"]
        # the crop packed at the start of the flat buffer: one contiguous block to read into, map and copy
        buf, mbuf = torch.empty(shape, dtype=torch.uint8), torch.empty(shape[-2:], dtype=_target_dtype(table))
        image, raw = buf.view(-1)[:shape[0] * h * w].view(shape[0], h, w), np.empty((h, w), dtype=np.uint8)
        read(top, left, image.numpy(), raw)  # only the box is read: no copy of the patch
        mask = mbuf.view(-1)[:h * w].view(h, w)
        if isinstance(table, np.ndarray):  # straight into the buffer
            self._map8(table, raw, mask.numpy())
        else:
            mask.copy_(table[torch.from_numpy(raw).long()])
        buf.view(-1)[image.numel():] = 0  # deterministic bytes after the crop (the device part never reads them)
        mbuf.view(-1)[mask.numel():] = 0
        return {"image": buf, "mask": mbuf, "crop": torch.tensor([h, w], dtype=torch.int64),
                "d4": torch.tensor([d4["transpose"], -2 in d4["dims"], -1 in d4["dims"]], dtype=torch.int64),
                "jitter": torch.tensor([jit["apply"], jit["b"], jit["c"]], dtype=torch.float64)}

    def _map8(self, table: np.ndarray, raw: np.ndarray, out: np.ndarray) -> None:
        """out = table[raw] for uint8 `raw` and `out` (contiguous), two bytes per lookup where the table allows."""
        if table.size != 256:
            np.take(table, raw, out=out)
            return
        key = table.tobytes()
        pairs = self._pairs.get(key)
        if pairs is None:  # entry v: both bytes of v mapped, in either byte order; half the lookups (~1.8x faster)
            v = np.arange(65536)
            pairs = table[v & 255].astype(np.uint16) | (table[v >> 8].astype(np.uint16) << 8)
            self._pairs = {key: pairs}
        src, dst = raw.reshape(-1), out.reshape(-1)
        even = src.size - src.size % 2
        np.take(pairs, src[:even].view(np.uint16), out=dst[:even].view(np.uint16), mode="clip")
        if even < src.size:
            dst[-1] = table[src[-1]]


def _target_dtype(table: np.ndarray | Tensor) -> torch.dtype:
    return torch.uint8 if isinstance(table, np.ndarray) else table.dtype


class AugmentOnDevice:
    """The device part: a collated batch of `CropOnWorker` items -> (float32 NxCxSxS in [0, 1], int64 NxSxS)."""

    def __init__(self, spec: AugmentSpec) -> None:
        self.spec = spec

    def __call__(self, batch: dict[str, Tensor], device: torch.device | str) -> tuple[Tensor, Tensor]:
        """Copy the batch to `device` and finish its augmentation there.

        No host-device synchronisation: sizes and groups are read from the host copy of the parameters, indices
        are computed on the device (the loader's pinned batch is copied asynchronously, as images were before)."""
        device = torch.device(device)
        image, mask, d4, jitter = (batch[k].to(device, non_blocking=True) for k in ("image", "mask", "d4", "jitter"))
        n, c, s = image.shape[0], image.shape[1], self.spec.size
        x = torch.empty((n, c, s, s), dtype=torch.float32, device=device)
        y = torch.empty((n, s, s), dtype=mask.dtype, device=device)
        for i, (h, w) in enumerate(batch["crop"].tolist()):  # crops differ in size: one resize each
            crop = image[i].view(-1)[:c * h * w].view(c, h, w).to(torch.float32).div_(255.0)
            x[i] = F.resize_image(crop, [s, s], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
            y[i] = F.resize_mask(mask[i].view(-1)[:h * w].view(h, w), [s, s])
        host = batch["d4"]
        codes = host[:, 0] * 4 + host[:, 1] * 2 + host[:, 2]  # the element of D4: transpose, flip rows, flip columns
        apply = (batch["jitter"][:, 0] > 0).tolist()
        if not codes.any() and not any(apply):
            return x, y.to(torch.int64)
        # samples grouped by element of D4: a stable sort on the device, group sizes from the host
        order = torch.argsort(d4[:, 0] * 4 + d4[:, 1] * 2 + d4[:, 2], stable=True)
        members = torch.argsort(codes, stable=True).tolist()
        out_x, out_y = torch.empty_like(x), torch.empty((n, s, s), dtype=torch.int64, device=device)
        start = 0
        for code, count in enumerate(torch.bincount(codes, minlength=8).tolist()):
            if not count:
                continue
            idx, group = order[start:start + count], members[start:start + count]
            start += count
            gx, gy = x.index_select(0, idx), y.index_select(0, idx)
            if code & 4:  # a view, as in RandomFlipRotate90: the jitter's mean then sums in the same order
                gx, gy = gx.transpose(-2, -1), gy.transpose(-2, -1)
            dims = tuple(d for d, bit in ((-2, 2), (-1, 1)) if code & bit)
            if dims:
                gx, gy = gx.flip(dims), gy.flip(dims)
            if any(apply[i] for i in group):
                gx = self._jitter(gx, jitter.index_select(0, idx))
            out_x.index_copy_(0, idx, gx)
            out_y.index_copy_(0, idx, gy.to(torch.int64))
        return out_x, out_y

    @staticmethod
    def _jitter(x: Tensor, params: Tensor) -> Tensor:
        """`RandomBrightnessContrast` per sample: params rows are [apply, brightness factor, contrast factor]."""
        apply = params[:, 0] > 0
        shape = (-1, 1, 1, 1)
        b, c = params[:, 1].to(torch.float32).view(shape), params[:, 2].to(torch.float32).view(shape)
        mean = x.mean(dim=(-2, -1), keepdim=True)
        out = (x - mean).mul_(c).add_(mean).mul_(b).clamp_(0.0, 1.0)
        return torch.where(apply.view(shape), out, x)
