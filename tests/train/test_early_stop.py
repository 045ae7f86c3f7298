"""Early stopping and best tracking: the first validation counts as best (bug 3), NaN never improves."""

from __future__ import annotations

from cdseg.train.early_stop import EarlyStopping


def test_epoch_zero_best_is_kept() -> None:
    es = EarlyStopping(mode="max", patience=3)
    assert es.update(0.9, 0)  # the first validation is a real best
    assert not es.update(0.5, 1)
    assert not es.update(0.6, 2)
    assert es.best_epoch == 0 and es.best_score == 0.9 and not es.stopped
    assert not es.update(0.7, 3)
    assert es.stopped and "3 validations" in es.reason


def test_min_mode_min_delta_and_nan() -> None:
    es = EarlyStopping(mode="min", patience=0, min_delta=0.1)
    assert es.update(1.0, 0)
    assert not es.update(0.95, 1)  # not better by more than min_delta
    assert es.update(0.8, 2)
    assert not es.update(float("nan"), 3)
    assert not es.stopped  # patience 0: never stops


def test_state_round_trip() -> None:
    es = EarlyStopping(patience=5)
    es.update(0.3, 0)
    es.update(0.2, 1)
    other = EarlyStopping(patience=5)
    other.load_state_dict(es.state_dict())
    assert other == es
