"""Rebuild ``benchmark/data/registry.csv`` (the registry the package reads) from the
test-image mirror's MANIFEST.csv and PIXEL_SHA256.csv.

Usage: ``python scripts/build_registry.py ../shared/testimages``
"""

from __future__ import annotations

import sys

from benchmark.images import REGISTRY_PATH, build_registry


def main(mirror: str) -> None:
    table = build_registry(mirror)
    table.to_csv(REGISTRY_PATH, index=False)
    print(f"wrote {len(table)} rows to {REGISTRY_PATH}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/testimages")
