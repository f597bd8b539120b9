"""Rebuild ``benchmark/data/registry.csv`` (the registry the package reads) from the
test-image mirror's manifests: ``MANIFEST.csv`` with ``PIXEL_SHA256.csv`` (the sets registered
first, and the CIFAR-10 archive), then ``MANIFEST_denoising_sets.csv`` with
``PIXEL_SHA256_denoising_sets.csv`` (McMaster18, CBSD68 and BSD68: the denoising literature's
sets), appended after them so that the rows before keep their order.

Usage: ``python scripts/build_registry.py ../shared/testimages``
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from benchmark.images import REGISTRY_PATH, build_registry

EXTRA_SETS = ("MANIFEST_denoising_sets.csv", "PIXEL_SHA256_denoising_sets.csv")


def extra_sets(mirror: Path, columns: list[str]) -> pd.DataFrame:
    """The rows of the mirror's further manifest, in the registry's columns (empty when the
    mirror has none)."""
    manifest, pixels = (Path(mirror) / name for name in EXTRA_SETS)
    if not manifest.is_file():
        return pd.DataFrame(columns=columns)
    table = pd.read_csv(manifest, dtype=str).merge(
        pd.read_csv(pixels, dtype=str)[["file", "pixel_sha256", "bytes"]], on="file", how="left"
    )
    table = table.rename(columns={"raw_url": "url"}).assign(kind="image", md5="")
    return table[columns]


def build(mirror: Path) -> pd.DataFrame:
    """The registry: the first manifest's rows (and CIFAR-10's), then the further sets'."""
    table = build_registry(Path(mirror))
    return pd.concat([table, extra_sets(Path(mirror), list(table.columns))], ignore_index=True)


def main(mirror: str) -> None:
    table = build(Path(mirror))
    table.to_csv(REGISTRY_PATH, index=False)
    print(f"wrote {len(table)} rows to {REGISTRY_PATH}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/testimages")
