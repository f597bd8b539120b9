"""A run's images, fetched before any work: what cannot be had is said once per set, and
pooch's "Downloading ..." line is not printed for a file that then fails."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from benchmark import datasets, images

if TYPE_CHECKING:
    from benchmark.suites import Suite


@contextmanager
def quiet_downloads() -> Iterator[None]:
    """pooch's per-file INFO lines off (a failure is reported by the caller, once)."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(level)


def _failures(entries: Sequence[Any], *, first_only: bool = False) -> dict[str, str]:
    """``{set: reason}`` for the sets of ``entries`` with a file that cannot be had; fetches
    (and verifies) the others into the cache, quietly."""
    missing: dict[str, str] = {}
    with quiet_downloads():
        for entry in entries:
            if entry.set in missing:
                continue
            try:
                datasets.fetch(entry)
            except images.DownloadError as err:
                missing[entry.set] = str(err)
                if first_only:
                    break
    return missing


def fetch_images_of(cells: Sequence[Any]) -> dict[str, str]:
    """Fetch (and verify) into the cache every image ``cells`` need; ``{set: reason}`` for
    the sets of which one cannot be had here (empty: all are at hand)."""
    needed = {(c.dataset, c.image) for c in cells}
    registry = datasets.registry_of(next((c.registry for c in cells if c.registry), None))
    entries = [
        e
        for e in images.select(registry, sorted({d for d, _ in needed}))
        if e.kind != "image" or (e.set, e.name) in needed
    ]
    return {
        name: reason.split(" Set DIPBENCH_MIRROR")[0].rstrip(".")
        for name, reason in _failures(entries).items()
    }


def fetch_suite_images(suite: Suite) -> str | None:
    """Fetch (and verify) into the cache a suite's images; why one cannot be had here, or
    None when all are at hand."""
    entries = images.select(datasets.registry_of(suite.registry), suite.datasets)
    return next(iter(_failures(entries, first_only=True).values()), None)
