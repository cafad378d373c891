"""The unit tier's own: a base box root built for every user (/var/lib/vagabond/cache, where the
end-to-end tier's laptop user and real laptops keep one) is not part of any unit test's world."""

from __future__ import annotations

import pytest

from vagabond import paths


@pytest.fixture(autouse=True)
def _no_shared_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "SHARED_CACHE", tmp_path / "no-shared-cache")
