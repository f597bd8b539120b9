"""Sets that come as one archive (CIFAR-10's test batch): image names and decoding."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

# CIFAR-10: images live in the official archive; each is named test_NNNNN (its index).
_CIFAR_MEMBER = "cifar-10-batches-py/test_batch"
_CIFAR_PREFIX = "test_"


# The CIFAR-10 test archive: in no mirror, so its row comes from its official page.
CIFAR10_ROW = {
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


def archive_image_names(set_name: str, count: int) -> list[str]:
    """Names of the first ``count`` images of an archive set (CIFAR-10's test batch)."""
    if set_name != "cifar10":
        raise KeyError(f"no image naming known for archive set {set_name!r}")
    if not 0 < count <= 10_000:
        raise ValueError(f"CIFAR-10's test batch has 10000 images; asked for {count}")
    return [f"{_CIFAR_PREFIX}{i:05d}" for i in range(count)]


def cifar10_test_batch(archive: Path) -> np.ndarray:
    """The test batch of the official python archive as uint8 ``(10000, 32, 32, 3)``.

    Decoded once and kept beside the archive as ``test_batch.npy`` (written atomically).
    """
    decoded = archive.with_name("test_batch.npy")
    if decoded.is_file():
        return np.load(decoded)
    with tarfile.open(archive, "r:gz") as tar:
        member = tar.extractfile(_CIFAR_MEMBER)
        if member is None:
            raise ValueError(f"{archive} has no {_CIFAR_MEMBER}: not the CIFAR-10 python archive")
        batch = pickle.load(member, encoding="bytes")  # noqa: S301  checksummed official file
    data = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    tmp = decoded.with_name(f".{decoded.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        np.save(handle, data)
    os.replace(tmp, decoded)
    return data


def archive_index(name: str) -> int:
    """The index of image ``name`` (``test_NNNNN``) in its archive; other names raise
    ``KeyError`` (before anything is fetched)."""
    if not name.startswith(_CIFAR_PREFIX) or not name[len(_CIFAR_PREFIX) :].isdigit():
        raise KeyError(f"CIFAR-10 images are named {_CIFAR_PREFIX}NNNNN, got {name!r}")
    return int(name[len(_CIFAR_PREFIX) :])


def archive_image(archive: Path, name: str) -> np.ndarray:
    """Image ``name`` (``test_NNNNN``) of a fetched archive as float32 ``(H, W, C)``."""
    index = archive_index(name)
    batch = cifar10_test_batch(archive)
    if index >= len(batch):
        raise KeyError(f"CIFAR-10 test batch has {len(batch)} images; no {name!r}")
    return batch[index].astype(np.float32) / np.float32(255)
