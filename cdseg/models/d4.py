"""The dihedral group D4 (flips and 90-degree rotations) acting exactly on the last two dims of a tensor.

An element `D4Element(flip, k)` maps t to rot90(hflip(t) if flip else t, k): first an optional flip of the
last dim (left-right), then k quarter turns (`torch.rot90(dims=(-2, -1))`). No interpolation: works the same
on images [B, C, H, W], masks [B, H, W], feature maps, any dtype.

Composition `g.compose(h)` is "h first, then g": (g.compose(h)).apply(t) == g.apply(h.apply(t)). With
r = quarter turn and s = flip, s r = r^-1 s gives (f1, k1).(f2, k2) = (f1 xor f2, k1 + (-1)^f1 k2 mod 4).

Non-square inputs: odd k swaps H and W, so g.apply(t) may have another shape than t; g.inverse.apply(g.apply(t))
is always t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class D4Element:
    """One of the 8 symmetries of the square: optional left-right flip, then k quarter turns."""

    flip: bool
    k: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", self.k % 4)

    @property
    def name(self) -> str:
        """A short readable name, e.g. 'rot90', 'flip+rot180', 'id'."""
        if not self.flip and self.k == 0:
            return "id"
        parts = (["flip"] if self.flip else []) + ([f"rot{90 * self.k}"] if self.k else [])
        return "+".join(parts)

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """Apply to the last two dims of `t` (exact)."""
        if t.ndim < 2:
            raise ValueError(f"D4 acts on the last two dims; got a tensor with shape {tuple(t.shape)}")
        if self.flip:
            t = torch.flip(t, dims=(-1,))
        if self.k:
            t = torch.rot90(t, self.k, dims=(-2, -1))
        return t

    def apply_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Apply to a label mask (the same exact permutation of pixels)."""
        return self.apply(mask)

    @property
    def inverse(self) -> D4Element:
        """The element undoing this one."""
        return self if self.flip else D4Element(False, -self.k)

    def compose(self, other: D4Element) -> D4Element:
        """`other` first, then `self`."""
        k = self.k - other.k if self.flip else self.k + other.k
        return D4Element(self.flip != other.flip, k)

    def valid_mask(self, like: torch.Tensor) -> torch.Tensor | None:
        """Pixels of a transformed map that come from inside the tile: all of them for D4 (None)."""
        return None

    def __repr__(self) -> str:
        return f"D4Element({self.name})"


IDENTITY = D4Element(False, 0)
#: the 8 elements: the 4 rotations, then the 4 flipped ones
D4: tuple[D4Element, ...] = tuple(D4Element(f, k) for f in (False, True) for k in range(4))
ROTATIONS: tuple[D4Element, ...] = D4[:4]


def random_element(flip: bool = True, generator: torch.Generator | None = None) -> D4Element:
    """A uniformly random element of D4 (or of the rotations only, `flip=False`)."""
    pool = D4 if flip else ROTATIONS
    return pool[int(torch.randint(len(pool), (1,), generator=generator).item())]
