"""Early stopping and best-model tracking on a validation metric.

Fixes of the original (seed-spec §9): the first validation is a real "best" (bug 3: best_epoch==0
was treated as "no best yet", so later, worse epochs overwrote the best checkpoint), and the best
weights are kept as a copy on disk (`best/`), so "restore best" really restores them (bug 4).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class EarlyStopping:
    """Tracks the best score; `update` says whether it improved; `should_stop` after `patience` misses."""

    mode: str = "max"
    patience: int = 25
    min_delta: float = 0.0
    best_score: float | None = None
    best_epoch: int = -1
    bad_validations: int = 0
    stopped: bool = False
    reason: str = ""

    def improved(self, score: float) -> bool:
        """Whether `score` beats the best so far by more than `min_delta` (NaN never does)."""
        if math.isnan(score):
            return False
        if self.best_score is None:
            return True
        if self.mode == "max":
            return score > self.best_score + self.min_delta
        return score < self.best_score - self.min_delta

    def update(self, score: float, epoch: int) -> bool:
        """Record one validation; True when it is the new best."""
        if self.improved(score):
            self.best_score, self.best_epoch, self.bad_validations = float(score), epoch, 0
            return True
        self.bad_validations += 1
        if self.patience and self.bad_validations >= self.patience:
            self.stopped = True
            self.reason = f"no improvement for {self.bad_validations} validations (best {self.best_score} at epoch {self.best_epoch})"
        return False

    def stop_nan(self, what: str) -> None:
        """Stop because the training loss is not finite."""
        self.stopped = True
        self.reason = f"{what} is not finite"

    def state_dict(self) -> dict[str, Any]:
        """Plain values for the resume state."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""
        for key, value in state.items():
            if hasattr(self, key):
                setattr(self, key, value)
