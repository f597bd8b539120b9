"""Datasets a suite brings with it: a registry file of its own beside the package's.

A suite names one with ``registry = "my_images.csv"`` (relative to the suite file), as it names
a method module. The file has the columns of ``benchmark/data/registry.csv`` (one row per
image: set, name, file, width, height, mode, kind, sha256, md5, pixel_sha256, bytes, url);
``dipbench datasets add SET FOLDER --registry FILE`` writes the rows of a folder of images
(:func:`folder_rows`). A ``url`` that is not http(s) is a file path, relative to the registry
file's folder; the user's images are fetched from there (never from ``DIPBENCH_MIRROR``, which
mirrors the packaged sets), verified against their checksums and cached like the packaged ones.
A user's set may not reuse a packaged set's name.

Adding a dataset, or an image to one, changes no other cell's identity: a cell's inputs are
its own image's row (:func:`benchmark.provenance.image_part`).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from benchmark import images
from benchmark.images import Entry

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg", ".ppm", ".pgm")


class DatasetError(ValueError):
    """A user's registry file that cannot be used as it is."""


def registry_of(path: str | Path | None) -> list[Entry]:
    """The packaged registry, followed by the rows of the user's registry file ``path``."""
    packaged = images.load_registry()
    return packaged + (user_entries(Path(path)) if path else [])


def user_entries(path: Path) -> list[Entry]:
    """The rows of a user's registry file, their file URLs made absolute.

    Raises
    ------
    DatasetError
        The file is absent, not a registry (a column missing), or names a packaged set.
    """
    resolved = Path(path).expanduser().resolve()
    try:
        stamp = resolved.stat().st_mtime_ns
    except OSError as err:
        raise DatasetError(f"registry file {path} cannot be read ({err.strerror})") from None
    return list(_read_user_registry(resolved, stamp))


@cache
def _read_user_registry(path: Path, mtime_ns: int) -> tuple[Entry, ...]:
    columns = list(Entry.__dataclass_fields__)
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (ValueError, UnicodeDecodeError) as err:
        raise DatasetError(f"registry file {path} is not a CSV ({err})") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(
            f"registry file {path} has no column(s) {', '.join(missing)}; write its rows with "
            "dipbench datasets add SET FOLDER --registry FILE"
        )
    try:
        entries = images.load_registry(path)
    except ValueError as err:  # a size or byte count that is not a number
        raise DatasetError(f"registry file {path}: {err}") from None
    taken = sorted({e.set for e in entries} & packaged_sets())
    kinds = sorted({e.kind for e in entries} - {"image"})
    if kinds:
        raise DatasetError(f"registry file {path}: rows of kind {', '.join(kinds)}; only image")
    if taken:
        raise DatasetError(
            f"registry file {path} names packaged set(s) {', '.join(taken)}: give your sets "
            "names of their own"
        )
    return tuple(_with_absolute_url(e, path.parent) for e in entries)


def _with_absolute_url(entry: Entry, folder: Path) -> Entry:
    if entry.url.startswith(("http://", "https://")):
        return entry
    url = str((folder / entry.url).resolve())
    return Entry(**{**entry.__dict__, "url": url})


def is_packaged(entry: Entry) -> bool:
    """Whether ``entry`` is a row of the package's own registry."""
    return entry.set in packaged_sets()


def packaged_sets() -> frozenset[str]:
    """The packaged registry's set names (read once while the file stays as it is)."""
    return _packaged_sets(images.REGISTRY_PATH.stat().st_mtime_ns)


@cache
def _packaged_sets(mtime_ns: int) -> frozenset[str]:
    return frozenset(images.set_names(images.load_registry()))


def fetch(entry: Entry) -> Path:
    """``entry``'s verified file in the cache: a packaged set's from ``DIPBENCH_MIRROR`` when
    one is set, a user's from its own URL."""
    return images.fetch(entry, mirror=None if is_packaged(entry) else "")[0]


def load_image(set_name: str, name: str, registry: str | Path | None = None) -> np.ndarray:
    """An image of a packaged set, or of the user's ``registry`` file, as float32
    ``(H, W, C)`` in [0, 1] (:func:`benchmark.images.load_image`'s array)."""
    if not registry or set_name in packaged_sets():
        return images.load_image(set_name, name)
    entry = images.find(set_name, name, user_entries(Path(registry)))
    with Image.open(fetch(entry)) as im:
        return images.to_float(im, entry.mode)


def folder_rows(folder: Path, set_name: str, registry: Path) -> pd.DataFrame:
    """Registry rows of every image file in ``folder`` (sorted by name), as set ``set_name``,
    each ``url`` relative to the folder of the ``registry`` file they will be written to."""
    found = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise DatasetError(f"{folder} holds no image file ({', '.join(IMAGE_SUFFIXES)})")
    base = Path(registry).expanduser().resolve().parent
    rows = []
    for path in found:
        relative = os.path.relpath(Path(path).resolve(), base)
        rows.append(images.registry_row(path, set_name, relative))
    return pd.DataFrame(rows, columns=list(Entry.__dataclass_fields__))
