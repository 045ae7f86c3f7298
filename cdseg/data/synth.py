"""Generated aerial scenes: a street grid with roads, sealed surfaces, buildings (gable roofs,
shadows), trees, cars on roads and in car parks, and clutter, at arbitrary orientations.

Everything is painted into one "style" map (uint8; each style belongs to one ISPRS class and has a
colour, texture strength and height), then rendered per band with shared noise textures. Objects are
rasterised inside their bounding boxes with numpy, so a 6000x6000 scene takes seconds.
Area targets follow Potsdam's class frequencies (impervious ~29%, building ~27%, low vegetation ~23%,
tree ~15%, car ~1.7%, clutter ~4.5%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# style: (class, R, G, B, IR, fine texture, medium texture, height m)
_STYLES: dict[int, tuple[int, int, int, int, int, float, float, float]] = {
    0: (2, 95, 125, 65, 190, 0.10, 0.12, 0.2), 1: (2, 130, 135, 85, 160, 0.10, 0.12, 0.2),
    2: (2, 80, 112, 60, 205, 0.10, 0.12, 0.3),
    3: (0, 100, 100, 104, 90, 0.05, 0.04, 0.0), 4: (0, 168, 162, 152, 150, 0.04, 0.05, 0.0),
    5: (0, 122, 120, 116, 110, 0.05, 0.04, 0.0), 6: (0, 232, 232, 226, 215, 0.02, 0.0, 0.0),
    30: (3, 52, 84, 44, 218, 0.30, 0.10, 11.0), 31: (3, 70, 96, 50, 200, 0.30, 0.10, 9.0),
    32: (3, 44, 70, 40, 225, 0.30, 0.10, 13.0),
    48: (4, 32, 36, 42, 40, 0.03, 0.0, 1.4),
    50: (5, 150, 120, 90, 120, 0.15, 0.08, 1.5), 51: (5, 110, 92, 82, 95, 0.15, 0.08, 2.0),
    52: (5, 185, 172, 150, 160, 0.10, 0.05, 2.5), 53: (5, 92, 82, 62, 110, 0.20, 0.10, 1.0),
}
_ROOFS = [(172, 82, 62, 150), (132, 62, 52, 120), (152, 152, 152, 140), (92, 92, 98, 90),
          (202, 196, 186, 185), (142, 102, 82, 130)]
for _i, (_r, _g, _b, _ir) in enumerate(_ROOFS):
    _STYLES[10 + _i] = (1, _r, _g, _b, _ir, 0.04, 0.03, 9.0 + _i)
    _STYLES[20 + _i] = (1, int(_r * 0.72), int(_g * 0.72), int(_b * 0.72), int(_ir * 0.72), 0.04, 0.03, 9.0 + _i)
_CARS = [(235, 235, 235), (25, 25, 28), (175, 178, 182), (190, 30, 30), (30, 60, 160), (70, 70, 75), (40, 110, 60),
         (210, 190, 60)]
for _i, (_r, _g, _b) in enumerate(_CARS):
    _STYLES[40 + _i] = (4, _r, _g, _b, (_r + _g + _b) // 4, 0.02, 0.0, 1.5)

STYLE_CLASS = np.zeros(256, np.uint8)
STYLE_COLOUR = np.zeros((4, 256), np.float32)
STYLE_FINE = np.zeros(256, np.float32)
STYLE_MEDIUM = np.zeros(256, np.float32)
STYLE_HEIGHT = np.zeros(256, np.float32)
for _s, (_c, _r, _g, _b, _ir, _f, _m, _h) in _STYLES.items():
    STYLE_CLASS[_s] = _c
    STYLE_COLOUR[:, _s] = (_r, _g, _b, _ir)
    STYLE_FINE[_s], STYLE_MEDIUM[_s], STYLE_HEIGHT[_s] = _f, _m, _h
GRASS, ROAD, PAVEMENT, PARKING, MARKING = (0, 1, 2), 3, 4, 5, 6
_VEG_OR_PAVED = np.zeros(256, bool)
_VEG_OR_PAVED[[0, 1, 2, 4, 5]] = True
_IS_VEG = np.zeros(256, bool)
_IS_VEG[[0, 1, 2]] = True


@dataclass
class SceneArrays:
    """One generated scene: bands R, G, B, IR (uint8 HxW each), raw class labels, DSM height (m)."""

    bands: dict[str, np.ndarray]
    label: np.ndarray
    height: np.ndarray


def default_gsd(size: int) -> float:
    """Metres per pixel: Potsdam's 5 cm for full-size scenes, coarser for small ones (so objects stay learnable)."""
    return float(min(0.25, max(0.05, 300.0 / size)))


def _rect(shape: tuple[int, int], cy: float, cx: float, length: float, width: float, theta: float):
    """Slices and boolean mask of a rotated rectangle (length along theta), or None if off-scene."""
    half = 0.5 * math.hypot(length, width) + 1
    y0, y1 = max(int(cy - half), 0), min(int(cy + half) + 1, shape[0])
    x0, x1 = max(int(cx - half), 0), min(int(cx + half) + 1, shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
    c, s = math.cos(theta), math.sin(theta)
    u = xx * c + yy * s
    v = yy * c - xx * s
    mask = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    return (slice(y0, y1), slice(x0, x1)), mask, v


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float):
    y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, shape[0])
    x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
    return (slice(y0, y1), slice(x0, x1)), yy * yy + xx * xx <= r * r


def _noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth noise in about [-1, 1] with features of `cell` pixels (bilinear upsampling of a random grid)."""
    cell = max(cell, 1.0)
    gh, gw = int(shape[0] / cell) + 2, int(shape[1] / cell) + 2
    grid = torch.from_numpy(rng.standard_normal((1, 1, gh, gw), dtype=np.float32))
    up = F.interpolate(grid, size=(int(gh * cell), int(gw * cell)), mode="bilinear", align_corners=False)
    return up[0, 0, : shape[0], : shape[1]].numpy()


class _Painter:
    """Paints objects into the style map, keeping per-class area counts for the frequency targets."""

    def __init__(self, size: int, gsd: float, rng: np.random.Generator) -> None:
        self.h = self.w = size
        self.m = 1.0 / gsd  # pixels per metre
        self.rng = rng
        grass = _noise(rng, (size, size), 40 * self.m)
        self.style = np.where(grass < -0.4, 1, np.where(grass > 0.5, 2, 0)).astype(np.uint8)
        self.theta = rng.uniform(0, math.pi)
        self.roads: list[tuple[float, float, float]] = []  # (theta, offset, width px) lines through the centre frame

    def area(self) -> float:
        return float(self.h * self.w)

    def paint(self, geom, style: int | np.ndarray, allowed: np.ndarray | None = None, need_all: bool = False) -> int:
        if geom is None:
            return 0
        sl, mask = geom[0], geom[1]
        if allowed is not None:
            ok = allowed[self.style[sl]]
            if need_all and not ok[mask].all():
                return 0
            mask = mask & ok
        if isinstance(style, np.ndarray):
            self.style[sl][mask] = style[mask]
        else:
            self.style[sl][mask] = style
        return int(mask.sum())

    def roads_and_pavements(self) -> None:
        rng, m = self.rng, self.m
        yy = np.arange(self.h, dtype=np.float32)[:, None] - self.h / 2
        xx = np.arange(self.w, dtype=np.float32)[None, :] - self.w / 2
        diag = math.hypot(self.h, self.w) / 2
        for theta in (self.theta, self.theta + math.pi / 2):
            u = yy * math.cos(theta) - xx * math.sin(theta)  # distance across roads of this direction
            offset = rng.uniform(-60, 0) * m
            while offset < diag:
                width = rng.uniform(6, 10) * m
                walk = rng.uniform(1.5, 3) * m
                if abs(offset) < diag:
                    d = np.abs(u - offset)
                    self.style[(d < width / 2 + walk) & (self.style != ROAD)] = PAVEMENT
                    self.style[d < width / 2] = ROAD
                    self.style[(np.abs(d - width / 4) < 0.08 * m) & (self.style == ROAD)] = MARKING
                    self.roads.append((theta, offset, width))
                offset += rng.uniform(70, 130) * m

    def _free_point(self, allowed: np.ndarray) -> tuple[float, float] | None:
        for _ in range(20):
            cy, cx = self.rng.uniform(0, self.h), self.rng.uniform(0, self.w)
            if allowed[self.style[int(cy), int(cx)]]:
                return cy, cx
        return None

    def buildings(self, target: float) -> None:
        rng, m = self.rng, self.m
        done, tries = 0.0, 0
        free = _IS_VEG.copy()
        while done < target and tries < 4000:
            tries += 1
            pt = self._free_point(free)
            if pt is None:
                break
            length, width = rng.uniform(10, 32) * m, rng.uniform(8, 15) * m
            theta = self.theta + rng.choice([0, math.pi / 2]) + rng.normal(0, 0.03)
            if rng.random() < 0.15:
                theta = rng.uniform(0, math.pi)
            geom = _rect(self.style.shape, *pt, length, width, theta)
            if geom is None or not free[self.style[geom[0]]][geom[1]].all():
                continue
            roof = int(rng.integers(0, len(_ROOFS)))
            if rng.random() < 0.5:  # a paved yard or driveway around the house
                self.paint(_rect(self.style.shape, *pt, length + rng.uniform(4, 12) * m, width + rng.uniform(4, 12) * m,
                                 theta), PAVEMENT, _IS_VEG)
            gable = np.where(geom[2] > 0, 20 + roof, 10 + roof).astype(np.uint8) if rng.random() < 0.7 else 10 + roof
            done += self.paint(geom, gable)
            if rng.random() < 0.3:  # an L-shaped wing
                wl = rng.uniform(6, 12) * m
                cy = pt[0] + math.sin(theta) * length / 2 + math.cos(theta) * wl / 2
                cx = pt[1] + math.cos(theta) * length / 2 - math.sin(theta) * wl / 2
                done += self.paint(_rect(self.style.shape, cy, cx, width, wl, theta), 10 + roof, _IS_VEG)

    def car_parks(self, count: int) -> None:
        rng, m = self.rng, self.m
        for _ in range(count):
            pt = self._free_point(_IS_VEG)
            if pt is None:
                return
            length, width = rng.uniform(20, 45) * m, rng.uniform(16, 26) * m
            theta = self.theta + rng.choice([0, math.pi / 2])
            geom = _rect(self.style.shape, *pt, length, width, theta)
            if geom is None or not _IS_VEG[self.style[geom[0]]][geom[1]].all():
                continue
            self.paint(geom, PARKING)
            c, s = math.cos(theta), math.sin(theta)
            for row in (-1, 1):
                for k in np.arange(-length / 2 + 1.5 * m, length / 2 - 1.5 * m, 2.6 * m):
                    if rng.random() < 0.35:
                        continue
                    off = row * (width / 2 - 2.8 * m)
                    self.car(pt[0] + s * k + c * off, pt[1] + c * k - s * off, theta + math.pi / 2, PARKING)

    def car(self, cy: float, cx: float, theta: float, on: int) -> int:
        rng, m = self.rng, self.m
        allowed = np.zeros(256, bool)
        allowed[[on, MARKING]] = True
        length, width = rng.uniform(4.1, 4.9) * m, rng.uniform(1.7, 2.0) * m
        if rng.random() < 0.5:
            theta += math.pi
        geom = _rect(self.style.shape, cy, cx, length, width, theta)
        n = self.paint(geom, 40 + int(rng.integers(0, len(_CARS))), allowed, need_all=True)
        if n:  # windscreen
            fy, fx = cy + math.sin(theta) * length * 0.12, cx + math.cos(theta) * length * 0.12
            self.paint(_rect(self.style.shape, fy, fx, length * 0.18, width * 0.8, theta), 48)
        return n

    def cars_on_roads(self, target: float) -> None:
        rng, m = self.rng, self.m
        done, tries = 0.0, 0
        while done < target and tries < 20000 and self.roads:
            tries += 1
            theta, offset, width = self.roads[int(rng.integers(0, len(self.roads)))]
            t = rng.uniform(-0.75, 0.75) * max(self.h, self.w)
            lane = rng.choice([-1, 1]) * (width / 2 - 1.4 * m)
            d = offset + lane
            cy = self.h / 2 + math.cos(theta) * d + math.sin(theta) * t
            cx = self.w / 2 - math.sin(theta) * d + math.cos(theta) * t
            if 0 <= cy < self.h and 0 <= cx < self.w:
                done += self.car(cy, cx, theta, ROAD)

    def trees(self, target: float) -> None:
        rng, m = self.rng, self.m
        done, tries = 0.0, 0
        while done < target and tries < 3000:
            tries += 1
            pt = self._free_point(_IS_VEG)
            if pt is None:
                break
            spread = rng.uniform(3, 15) * m
            for _ in range(int(rng.integers(1, 10))):
                r = rng.uniform(2, 5.5) * m
                cy, cx = pt[0] + rng.normal(0, spread), pt[1] + rng.normal(0, spread)
                style = 30 + int(rng.integers(0, 3))
                for _ in range(3):  # a crown is a union of discs: irregular outline
                    done += self.paint(_disc(self.style.shape, cy + rng.normal(0, r / 3), cx + rng.normal(0, r / 3),
                                             r * rng.uniform(0.6, 0.9)), style, _VEG_OR_PAVED)

    def clutter(self, target: float) -> None:
        rng, m = self.rng, self.m
        done, tries = 0.0, 0
        while done < target and tries < 5000:
            tries += 1
            pt = self._free_point(_VEG_OR_PAVED)
            if pt is None:
                break
            big = rng.random() < 0.15
            a, b = (rng.uniform(6, 16, 2) if big else rng.uniform(1, 4, 2)) * m
            done += self.paint(_rect(self.style.shape, *pt, a, b, rng.uniform(0, math.pi)),
                               50 + int(rng.integers(0, 4)), _VEG_OR_PAVED)


def _shadow(tall: np.ndarray, length: int, dy: float, dx: float, steps: int = 6) -> np.ndarray:
    out = np.zeros_like(tall)
    h, w = tall.shape
    for k in range(1, steps + 1):
        sy, sx = int(round(dy * length * k / steps)), int(round(dx * length * k / steps))
        ys, yd = (slice(0, h - sy), slice(sy, h)) if sy >= 0 else (slice(-sy, h), slice(0, h + sy))
        xs, xd = (slice(0, w - sx), slice(sx, w)) if sx >= 0 else (slice(-sx, w), slice(0, w + sx))
        out[yd, xd] |= tall[ys, xs]
    return out & ~tall


def generate_scene(size: int, seed: int | list[int], gsd: float | None = None) -> SceneArrays:
    """Generate one size x size scene, deterministic for `seed`."""
    rng = np.random.default_rng(seed)
    gsd = default_gsd(size) if gsd is None else gsd
    p = _Painter(size, gsd, rng)
    p.roads_and_pavements()
    area = p.area()
    p.car_parks(max(1, int(area * gsd * gsd / 40000)))
    p.buildings(0.27 * area)
    p.trees(0.15 * area)
    p.cars_on_roads(0.012 * area)
    p.clutter(0.045 * area)
    style = p.style
    label = STYLE_CLASS[style]

    m = 1.0 / gsd
    lum = 1.0 + STYLE_FINE[style] * _noise(rng, style.shape, 0.6 * m)
    lum += STYLE_MEDIUM[style] * _noise(rng, style.shape, 5 * m)
    sun = rng.uniform(0, 2 * math.pi)
    dy, dx = math.sin(sun), math.cos(sun)
    shade = _shadow(label == 1, int(rng.uniform(4, 8) * m), dy, dx)
    shade |= _shadow(label == 3, int(rng.uniform(2, 5) * m), dy, dx) & (label != 1)
    lum[shade] *= 0.5
    lum *= rng.uniform(0.85, 1.15)
    grain = rng.standard_normal((size + 4, size + 4), dtype=np.float32)
    bands = {}
    for b, name in enumerate(("R", "G", "B", "IR")):
        tint = rng.uniform(0.93, 1.07)
        band = STYLE_COLOUR[b][style] * lum
        band *= tint
        band += grain[b : b + size, b : b + size] * 3.0
        bands[name] = np.clip(band, 0, 255).astype(np.uint8)
    height = STYLE_HEIGHT[style] * (1.0 + 0.15 * _noise(rng, style.shape, 2 * m) * (label == 3))
    return SceneArrays(bands=bands, label=label, height=height)
