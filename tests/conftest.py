"""Shared fixtures: an offline image mirror, a per-session download cache, devices."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = REPO.parent / "shared" / "testimages"


def _mirror() -> Path | None:
    env = os.environ.get("DIPBENCH_MIRROR")
    if env and not env.startswith(("http://", "https://")):
        return Path(env).resolve()
    return DEFAULT_MIRROR if DEFAULT_MIRROR.is_dir() else None


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The local image mirror (``$DIPBENCH_MIRROR`` or ../shared/testimages)."""
    found = _mirror()
    if found is None:
        pytest.skip("no image mirror: set DIPBENCH_MIRROR to a folder laid out as <set>/<file>")
    return found


@pytest.fixture(scope="session", autouse=True)
def offline_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never reach the internet and never touch the user's cache.

    Images come from the mirror into one cache per test session.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIPBENCH_DATA", str(tmp_path_factory.mktemp("cache")))
        found = _mirror()
        if found is not None:
            mp.setenv("DIPBENCH_MIRROR", str(found))
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules with a slow test first: with several test processes (``make test``), each
    takes a module at a time, and the longest work starting first lets them end together."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)  # stable
