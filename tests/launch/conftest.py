"""Fixtures of the launcher tests: a kmock-backed fake cluster per test, for each backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .cluster import FakeCluster, make_cluster


@pytest.fixture(params=["pytorchjob", "trainjob"])
def cluster(request: pytest.FixtureRequest) -> Iterator[FakeCluster]:
    """A fresh fake cluster (kmock in a background thread) serving both kinds, its operator playing one backend."""
    yield from make_cluster(backend=request.param)
