"""Training and evaluation transforms (torchvision.transforms.v2 on tv_tensors.Image / Mask).

Images are float32 CxHxW in [0, 1] with any number of bands (RGB, IR, DSM); masks are tv_tensors.Mask,
so geometric transforms use nearest interpolation for them. No normalisation: the model owns it.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


class RandomRotate90(v2.Transform):
    """Rotate image and mask together by a random multiple of 90 degrees (exact, no interpolation)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(0, 4, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["k"] == 0 or not isinstance(inpt, tv_tensors.Image | tv_tensors.Mask):
            return inpt
        return tv_tensors.wrap(torch.rot90(inpt.as_subclass(torch.Tensor), params["k"], dims=(-2, -1)), like=inpt)


class RandomBrightnessContrast(v2.Transform):
    """Scale brightness and contrast of every band by random factors in [1-b, 1+b] and [1-c, 1+c]."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, p: float = 0.5) -> None:
        super().__init__()
        self.brightness, self.contrast, self.p = brightness, contrast, p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        apply = bool(torch.rand(()) < self.p)
        b = 1.0 + (torch.rand(()).item() * 2 - 1) * self.brightness
        c = 1.0 + (torch.rand(()).item() * 2 - 1) * self.contrast
        return {"apply": apply, "b": b, "c": c}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"] or not isinstance(inpt, tv_tensors.Image):
            return inpt
        x = inpt.as_subclass(torch.Tensor)
        mean = x.mean(dim=(-2, -1), keepdim=True)
        out = (x - mean).mul_(params["c"]).add_(mean).mul_(params["b"])  # ((x - mean) * c + mean) * b, one buffer
        return tv_tensors.wrap(out.clamp_(0.0, 1.0), like=inpt)


def _d4_table() -> dict[tuple[bool, bool, int], tuple[bool, tuple[int, ...]]]:
    """(horizontal flip, vertical flip, quarter turns) -> (transpose, dims to flip after it): the same pixels."""
    ref = torch.arange(9).view(3, 3)
    table: dict[tuple[bool, bool, int], tuple[bool, tuple[int, ...]]] = {}
    for h in (False, True):
        for v in (False, True):
            for k in range(4):
                want = ref.flip(-1) if h else ref
                want = torch.rot90(want.flip(-2) if v else want, k, dims=(-2, -1))
                for t in (False, True):
                    candidates: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
                    for dims in candidates:
                        got = ref.transpose(-2, -1) if t else ref
                        if torch.equal(got.flip(dims) if dims else got, want):
                            table[(h, v, k)] = (t, dims)
    return table


_D4_TABLE = _d4_table()


class RandomFlipRotate90(v2.Transform):
    """Random horizontal flip, vertical flip and quarter turn of image and mask, in one go.

    The same random draws, in the same order, as RandomHorizontalFlip, RandomVerticalFlip and RandomRotate90
    one after the other (so a seed gives the same patches, and the same memory layout), applied as one transpose
    (a view) and at most one flip: at most one copy of the image instead of up to three."""

    def __init__(self, flip: bool = True, rotate90: bool = True, p: float = 0.5) -> None:
        super().__init__()
        self.flip, self.rotate90, self.p = flip, rotate90, p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h = bool(torch.rand(1) < self.p) if self.flip else False
        v = bool(torch.rand(1) < self.p) if self.flip else False
        k = int(torch.randint(0, 4, ()).item()) if self.rotate90 else 0
        transpose, dims = _D4_TABLE[(h, v, k)]
        return {"transpose": transpose, "dims": dims}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Image | tv_tensors.Mask) or not (params["transpose"] or params["dims"]):
            return inpt
        x = inpt.as_subclass(torch.Tensor)
        x = x.transpose(-2, -1) if params["transpose"] else x
        return tv_tensors.wrap(x.flip(params["dims"]) if params["dims"] else x, like=inpt)


def train_transform(size: int, scale: tuple[float, float] = (0.25, 1.0), flip: bool = True, rotate90: bool = True,
                    brightness: float = 0.2, contrast: float = 0.2) -> v2.Compose:
    """Random resized crop (square) to `size`, flips, 90 degree rotations, brightness/contrast."""
    steps: list[v2.Transform] = [v2.RandomResizedCrop(size, scale=scale, ratio=(1.0, 1.0), antialias=True)]
    if flip or rotate90:
        steps.append(RandomFlipRotate90(flip, rotate90))
    if brightness or contrast:
        steps.append(RandomBrightnessContrast(brightness, contrast))
    return v2.Compose(steps)


def eval_transform() -> v2.Compose:
    """Evaluation: nothing changes (kept as a transform so call sites are uniform)."""
    return v2.Compose([v2.Identity()])


def from_data_config(cfg: Any) -> v2.Compose:
    """`train_transform` from a `DataConfig`."""
    return train_transform(cfg.crop_size, (cfg.scale_min, cfg.scale_max), cfg.flip, cfg.rotate90, cfg.brightness,
                           cfg.contrast)
