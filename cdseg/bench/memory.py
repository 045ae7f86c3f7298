"""Peak memory of one call: the CUDA allocator's peak on a GPU, live tensor bytes on CPU.

On CPU torch keeps no allocator statistics, so `peak_bytes` counts tensor storages instead: every storage
an operator returns while the call runs is added when it appears and subtracted when it is freed
(a weak reference's finaliser). An output that shares the storage of one of the operator's inputs (a view,
an in-place result) allocates nothing and is not counted: a slice of a tensor made before the call (the input
batch) does not make its storage count. That is the tensors' own size (what a GPU allocator would hold, less its
rounding and caching), not the C allocator's footprint or a library's hidden workspace.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only
from torch.utils.weak import WeakIdKeyDictionary


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages created under it that are still alive, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.current = 0
        self.peak = 0

    def _track(self, tensor: torch.Tensor, inputs: set[int]) -> None:
        if tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        if storage in self._seen or id(storage) in inputs:  # a view or an in-place result: nothing allocated
            return
        size = storage.nbytes()
        self._seen[storage] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, size)

    def _free(self, size: int) -> None:
        self.current -= size

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        inputs: set[int] = set()
        tree_map_only(torch.Tensor, lambda t: inputs.add(id(t.untyped_storage())) if t.device.type != "meta" else None,
                      (args, kwargs))
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, lambda t: self._track(t, inputs), out)
        return out


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak memory that `fn()` adds on top of what was allocated before it (its result freed or not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    with LiveTensorBytes() as live:
        fn()
    return live.peak
