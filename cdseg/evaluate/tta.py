"""Model wrappers for sliding inference: softmax probabilities, optionally averaged over the 8 D4 transforms."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from cdseg.models.d4 import D4, IDENTITY

D4_SIZE = len(D4)
assert D4[0] == IDENTITY, "probs_tta takes D4's first element for the identity"


def d4_apply(x: torch.Tensor, g: int) -> torch.Tensor:
    """Element `g` (0..7) of D4 on the last two dims (an optional left-right flip, then quarter turns)."""
    return D4[g].apply(x)


def d4_invert(y: torch.Tensor, g: int) -> torch.Tensor:
    """Undo `d4_apply(., g)`."""
    return D4[g].inverse.apply(y)


def logits_of(output: object) -> torch.Tensor:
    """The logits of a segmenter's output: `(logits, features)`, a dict with "logits"/"out", or a tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0]
    if isinstance(output, dict):
        for key in ("logits", "out"):
            if key in output:
                return output[key]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")


def softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 in place: the caller's logits become the probabilities (exp(x - max) / sum, the formula
    torch.softmax computes, in the same float32), so evaluation holds one class-sized tensor per batch, not two."""
    logits.sub_(logits.amax(dim=1, keepdim=True)).exp_()
    return logits.div_(logits.sum(dim=1, keepdim=True))


def logits_fn(model: nn.Module, *, features: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """windows -> logits: the model's `predict` (logits only, no full-resolution decoder features) where it
    has one, unless `features` asks for the training forward (which builds them, to be thrown away here)."""
    predict = getattr(model, "predict", None)
    if callable(predict) and not features:
        return cast(Callable[[torch.Tensor], torch.Tensor], predict)
    return lambda x: logits_of(model(x))


def make_prob_fn(model: nn.Module, *, tta: bool = False, amp: bool = False,
                 features: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function windows -> softmax probabilities, averaged over D4 (inverse-transformed) when `tta`.

    The model is called through `logits_fn` (logits only); `features=True` uses its full forward instead,
    which `cdseg bench eval` times against it."""
    logits = logits_fn(model, features=features)

    def probs(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp and x.device.type == "cuda"):
            out = logits(x)
        return softmax_(out.float() if out.dtype != torch.float32 else out)

    if not tta:
        return probs

    def probs_tta(x: torch.Tensor) -> torch.Tensor:
        # the first element is the identity: its probabilities become the sum; every other one is inverted one
        # window at a time into it, so no second logits-sized tensor besides the model's own output exists
        total = probs(x)
        for g in range(1, D4_SIZE):
            p = probs(d4_apply(x, g))
            for i in range(p.shape[0]):
                total[i].add_(d4_invert(p[i], g))
            del p
        return total.div_(D4_SIZE)

    return probs_tta
