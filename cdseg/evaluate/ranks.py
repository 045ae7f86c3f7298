"""Which scenes this process evaluates, and moving results to rank 0.

Every `torch.distributed` call goes through `cdseg.train.distributed` (DESIGN.md, Layers): this module
only shards scenes and builds the two transfers evaluation needs out of its `all_reduce_sum`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

from cdseg.train.distributed import DistInfo, all_reduce_sum, barrier, init_distributed

T = TypeVar("T")

__all__ = ["DistInfo", "all_reduce_sum", "barrier", "init_distributed", "shard", "share_arrays"]


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This rank's share of `items` (round-robin: every item is evaluated by exactly one rank)."""
    return list(items[info.rank :: info.world_size])


def share_arrays(ids: Sequence[str], mine: dict[str, np.ndarray], info: DistInfo) -> dict[str, np.ndarray]:
    """Every rank's uint8 H x W arrays (keyed by id, each held by exactly one rank) on every rank.

    Built from `all_reduce_sum` alone: the shapes first, then each array summed with zeros from the
    ranks that do not hold it. One process: `mine` as is.
    """
    if not info.distributed:
        return dict(mine)
    shapes = torch.zeros((len(ids), 2), dtype=torch.int64, device=info.device)
    for i, key in enumerate(ids):
        if key in mine:
            shapes[i] = torch.tensor(mine[key].shape, dtype=torch.int64)
    all_reduce_sum(shapes, info)
    out: dict[str, np.ndarray] = {}
    for i, key in enumerate(ids):
        h, w = (int(v) for v in shapes[i].tolist())
        if h == 0:
            continue  # nobody kept this one
        buf = (torch.from_numpy(np.ascontiguousarray(mine[key])).to(info.device) if key in mine
               else torch.zeros((h, w), dtype=torch.uint8, device=info.device))
        all_reduce_sum(buf, info)
        out[key] = buf.cpu().numpy()
    return out
