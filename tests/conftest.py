"""Shared fixtures: an offline image mirror, a per-session download cache, devices, the
scripts as modules."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from types import ModuleType

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


@pytest.fixture(scope="session", autouse=True)
def heap_kept_as_fits_keep_it() -> Iterator[None]:
    """Freed memory kept for the next step in the tests' own process too, as a run's units
    keep it (``benchmark.heap``; ``DIPBENCH_KEEP_HEAP=0`` turns it off): the same numbers,
    without a page fault per large tensor per step."""
    from benchmark.heap import kept_heap

    with kept_heap():
        yield


@cache
def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def script() -> Callable[[str], ModuleType]:
    """``script(name)``: ``scripts/<name>.py`` as a module (the scripts are no package),
    loaded once per session."""
    return _script


def pytest_configure(config: pytest.Config) -> None:
    """One share of the cores per test process: torch's default (every core) in each of
    ``make test``'s processes oversubscribes them, and its OpenMP threads then wait on each
    other (measured: a DIP fit 105 s at 2 threads against another 2-thread process, 59 s at 1,
    37 s alone). Tests that are about thread counts set theirs; run cells set their own."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules by their slow tests' cost, longest first (``@pytest.mark.slow(seconds=...)``,
    measured at one thread on the 2-core machine): with several test processes (``make
    test``, which keeps this order: ``--no-loadscope-reorder``), each takes a module at a
    time, and the longest work starting first lets them end together."""
    cost: dict[str, float] = {}
    for item in items:
        for marker in item.iter_markers("slow"):
            module = item.nodeid.split("::")[0]
            cost[module] = cost.get(module, 0.0) + float(marker.kwargs.get("seconds", 30))
    items.sort(key=lambda item: -cost.get(item.nodeid.split("::")[0], 0.0))  # stable
