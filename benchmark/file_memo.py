"""A run folder's files read once per process while they do not change.

A ``dipbench run`` asks for each record several times (what is stale, what is pending, what is
claimed, what the results and the report hold) and, to find damaged outputs, hashes each
cell's output files each time. Planning re-asks on purpose (another run may have written
since), so the answers are memoized by the file's identity on disk (device, inode, size,
modification and change times): an unchanged file is read and hashed once; a file written
since (records and outputs are replaced by rename, a new inode) is read again. As in git's
"racily clean" rule, a file changed in the last seconds is never memoized: its timestamps are
as coarse as the kernel's clock tick, so an edit in place within one tick could keep them.
"""

from __future__ import annotations

import hashlib
import os
import time
from functools import lru_cache
from pathlib import Path

_ENTRIES = 8192  # a grid's records and outputs, a few KB of text or 32 bytes of hash each
_SETTLED_S = 2.0  # a file unchanged this long is memoized

Identity = tuple[str, int, int, int, int, int]


def _identity(path: Path) -> Identity | None:
    """What says the file is unchanged, or None for a file changed too recently to tell."""
    stat = os.stat(path)
    if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) < _SETTLED_S * 1e9:
        return None
    return (str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path`` (raises OSError and UnicodeDecodeError as reading does)."""
    identity = _identity(Path(path))
    return Path(path).read_text(encoding="utf-8") if identity is None else _read_text(identity)


def sha256_prefix(path: Path) -> str:
    """The first 32 hex digits of the sha256 of ``path``'s bytes."""
    identity = _identity(Path(path))
    return _sha256(Path(path)) if identity is None else _sha256_prefix(identity)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:32]


@lru_cache(maxsize=_ENTRIES)
def _read_text(identity: Identity) -> str:
    return Path(identity[0]).read_text(encoding="utf-8")


@lru_cache(maxsize=_ENTRIES)
def _sha256_prefix(identity: Identity) -> str:
    return _sha256(Path(identity[0]))


def forget() -> None:
    """Drop every memoized file (what a new process starts with)."""
    _read_text.cache_clear()
    _sha256_prefix.cache_clear()
