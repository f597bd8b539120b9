"""Rebuild ``datasets/registry.csv`` from the test-image mirror's MANIFEST.csv.

Usage: ``python scripts/build_registry.py ../shared/testimages``

The manifest gives each image's public URL at a pinned commit and the sha256 of its bytes;
PIXEL_SHA256.csv beside it gives the file size and the sha256 of the decoded pixels. The
CIFAR-10 test archive, which no mirror holds, is appended with its official address and
published MD5.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

CIFAR10 = {
    "set": "cifar10",
    "name": "cifar-10-python",
    "file": "cifar10/cifar-10-python.tar.gz",
    "width": 32,
    "height": 32,
    "mode": "RGB",
    "kind": "archive",
    "sha256": "",
    "md5": "c58f30108f718f92721af3b95e74349a",
    "pixel_sha256": "",
    "bytes": 170498071,
    "repo": "",
    "commit": "",
    "path_in_repo": "",
    "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
}


def main(mirror: str) -> None:
    root = Path(mirror)
    manifest = pd.read_csv(root / "MANIFEST.csv", dtype=str)
    pixels = pd.read_csv(root / "PIXEL_SHA256.csv", dtype=str)[["file", "pixel_sha256", "bytes"]]
    table = manifest.merge(pixels, on="file", how="left").rename(columns={"raw_url": "url"})
    table["kind"] = "image"
    table["md5"] = ""
    table = pd.concat([table, pd.DataFrame([CIFAR10])], ignore_index=True)
    out = Path(__file__).resolve().parents[1] / "datasets" / "registry.csv"
    table[list(CIFAR10)].to_csv(out, index=False)
    print(f"wrote {len(table)} rows to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/testimages")
