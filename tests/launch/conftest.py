"""Fixtures of the launcher tests: a kmock-backed fake cluster per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .cluster import FakeCluster, make_cluster


@pytest.fixture()
def cluster() -> Iterator[FakeCluster]:
    """A fresh fake cluster (kmock in a background thread) with pytorchjobs and pods declared."""
    yield from make_cluster()
