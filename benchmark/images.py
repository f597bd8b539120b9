"""Image registry, checksummed downloads and loading.

Every file the benchmark uses is a row of ``benchmark/data/registry.csv`` (written by
:func:`build_registry` from a mirror's manifest, read by :func:`load_registry`): where it
lives on the web (a URL at a pinned commit), the checksums of its bytes and pixels, its size
and mode. Files are fetched with pooch, verified and cached; nothing unverified stays.

Environment variables
---------------------
DIPBENCH_DATA
    Folder of the download cache. Default: ``datasets/cache`` in a source checkout, else the
    user cache folder (``~/.cache/dipbench`` on Linux).
DIPBENCH_MIRROR
    A folder or an http(s) base URL laid out as ``<set>/<file>`` that replaces the public
    URLs, for offline machines and CI.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from benchmark import archives

REGISTRY_PATH = Path(__file__).with_name("data") / "registry.csv"
_CHECKOUT = Path(__file__).resolve().parents[1]
_LARGE_FILE = 5_000_000  # bytes; larger files get their own progress bar


class DownloadError(RuntimeError):
    """A file could not be obtained or failed verification.

    ``unavailable`` is True when the source simply does not have the file (HTTP 404, absent
    from the mirror folder, no network): nothing is wrong with what was received.
    """

    def __init__(self, message: str, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


@dataclass(frozen=True)
class Entry:
    """One row of the registry."""

    set: str
    name: str
    file: str
    width: int
    height: int
    mode: str
    kind: str
    sha256: str
    md5: str
    pixel_sha256: str
    bytes: int
    url: str

    @property
    def known_hash(self) -> str:
        """The checksum in pooch's ``algorithm:hex`` form (sha256 where the registry has it)."""
        return f"sha256:{self.sha256}" if self.sha256 else f"md5:{self.md5}"


def load_registry(path: Path | None = None) -> list[Entry]:
    """Read the registry.

    Parameters
    ----------
    path : Path, optional
        A registry CSV; default: the one shipped with the package.

    Returns
    -------
    list of Entry
        In file order.
    """
    table = pd.read_csv(path or REGISTRY_PATH, dtype=str, keep_default_na=False)
    fields = Entry.__dataclass_fields__

    def parse(key: str, value: str) -> str | int:
        return int(value) if fields[key].type == "int" else value

    return [
        Entry(**{k: parse(k, v) for k, v in row.items() if k in fields})
        for row in table.to_dict("records")
    ]


def set_names(registry: Iterable[Entry]) -> list[str]:
    """Set names in registry order, each once."""
    return list(dict.fromkeys(e.set for e in registry))


def select(registry: list[Entry], sets: Iterable[str]) -> list[Entry]:
    """The entries of the named sets; an unknown set raises ``KeyError`` listing the known ones."""
    known = set_names(registry)
    unknown = [s for s in sets if s not in known]
    if unknown:
        raise KeyError(f"unknown set(s) {', '.join(unknown)}; known sets: {', '.join(known)}")
    wanted = set(sets)
    return [e for e in registry if e.set in wanted]


def find(set_name: str, name: str, registry: list[Entry] | None = None) -> Entry:
    """The entry of one image; unknown names raise ``KeyError`` listing the valid ones."""
    entries = select(registry or load_registry(), [set_name])
    for entry in entries:
        if entry.name == name:
            return entry
    raise KeyError(
        f"no image {name!r} in set {set_name!r}; it has: {', '.join(e.name for e in entries)}"
    )


def build_registry(mirror: Path) -> pd.DataFrame:
    """The registry from a mirror's ``MANIFEST.csv`` (each image's URL at a pinned commit and
    the sha256 of its bytes) and ``PIXEL_SHA256.csv`` (file size, sha256 of the decoded
    pixels), with the CIFAR-10 archive appended. ``scripts/build_registry.py`` writes it to
    :data:`REGISTRY_PATH`."""
    root = Path(mirror)
    manifest = pd.read_csv(root / "MANIFEST.csv", dtype=str)
    pixels = pd.read_csv(root / "PIXEL_SHA256.csv", dtype=str)[["file", "pixel_sha256", "bytes"]]
    table = manifest.merge(pixels, on="file", how="left").rename(columns={"raw_url": "url"})
    table["kind"] = "image"
    table["md5"] = ""
    table = pd.concat([table, pd.DataFrame([archives.CIFAR10_ROW])], ignore_index=True)
    return table[list(archives.CIFAR10_ROW)]


def registry_row(path: Path, set_name: str, url: str, file: str | None = None) -> dict[str, Any]:
    """A registry row for one image file that will be fetched from ``url``: its size, mode and
    checksums (of the bytes and of the decoded pixels). Append it to :data:`REGISTRY_PATH` to
    add an image to a set (a new set name makes a new set)."""
    with Image.open(path) as im:
        width, height, mode = im.width, im.height, "L" if im.mode in ("L", "I;16") else "RGB"
    data = Path(path).read_bytes()
    return {
        "set": set_name,
        "name": Path(path).stem,
        "file": file or f"{set_name}/{Path(path).name}",
        "width": width,
        "height": height,
        "mode": mode,
        "kind": "image",
        "sha256": hashlib.sha256(data).hexdigest(),
        "md5": "",
        "pixel_sha256": pixel_hash(read_pixels(Path(path))),
        "bytes": len(data),
        "url": url,
    }


def data_dir() -> Path:
    """The cache: ``$DIPBENCH_DATA``, a checkout's ``datasets/cache``, or the user cache."""
    import pooch

    if env := os.environ.get("DIPBENCH_DATA"):
        return Path(env).expanduser()
    if (_CHECKOUT / "pyproject.toml").is_file():  # a source checkout, not an installed copy
        return _CHECKOUT / "datasets" / "cache"
    return Path(pooch.os_cache("dipbench"))


def source_url(entry: Entry, mirror: str | None = None) -> str:
    """Where ``entry`` comes from: ``<mirror>/<set>/<file>`` if a mirror is set, else its URL."""
    mirror = os.environ.get("DIPBENCH_MIRROR") if mirror is None else mirror
    if not mirror:
        return entry.url
    if mirror.startswith(("http://", "https://")):
        return f"{mirror.rstrip('/')}/{entry.file}"
    return str(Path(mirror).expanduser() / entry.file)


def cached_path(entry: Entry, root: Path | None = None) -> Path:
    """Where ``entry`` lives in the cache (whether or not it is there)."""
    return (root or data_dir()) / entry.file


def file_hash(path: Path, entry: Entry) -> str:
    """The checksum of ``path`` in the algorithm the registry uses for ``entry``."""
    import pooch

    algorithm = entry.known_hash.split(":", 1)[0]
    return pooch.file_hash(str(path), alg=algorithm)


def is_valid(path: Path, entry: Entry) -> bool:
    """True if ``path`` exists and its bytes match the registry's checksum."""
    return path.is_file() and file_hash(path, entry) == entry.known_hash.split(":", 1)[1]


def _copy_from_folder(url: str, output_file: str, _pooch: object) -> None:
    shutil.copyfile(url, output_file)


class _RecordingDownloader:
    """Wraps a pooch downloader and remembers the checksum of what it received.

    pooch deletes a file that fails verification; keeping its hash lets the error name it.
    """

    def __init__(self, inner: Callable[..., None], entry: Entry) -> None:
        self.inner = inner
        self.entry = entry
        self.actual: str | None = None

    def __call__(self, url: str, output_file: str, pooch_obj: object) -> None:
        self.inner(url, output_file, pooch_obj)
        self.actual = file_hash(Path(output_file), self.entry)


MIRROR_HINT = (
    "Set DIPBENCH_MIRROR to a folder or an http(s) base URL laid out as <set>/<file> "
    "(for example DIPBENCH_MIRROR=../shared/testimages) to fetch from a mirror instead."
)


def fetch(entry: Entry, *, root: Path | None = None, mirror: str | None = None) -> tuple[Path, str]:
    """Make sure ``entry`` is in the cache, verified.

    Parameters
    ----------
    entry : Entry
        The file to fetch.
    root : Path, optional
        Cache folder; default :func:`data_dir`.
    mirror : str, optional
        Overrides ``$DIPBENCH_MIRROR`` (an empty string forces the public URL).

    Returns
    -------
    path : Path
        The verified file.
    status : {"cached", "downloaded", "replaced"}
        ``replaced`` means a cached copy failed its checksum and was fetched again.

    Raises
    ------
    DownloadError
        The file could not be fetched or does not match its checksum; nothing is left behind.
    """
    import pooch
    import requests

    path = cached_path(entry, root)
    url = source_url(entry, mirror)
    folders = {"DIPBENCH_DATA": path.parents[1]}
    if not url.startswith(("http://", "https://")):
        folders["DIPBENCH_MIRROR"] = Path(url).parents[1]
    for name, folder in folders.items():
        if folder.exists() and not folder.is_dir():
            raise DownloadError(f"{name} names {folder}, a file: it must be a folder")
    status = "downloaded"
    if path.exists():
        if is_valid(path, entry):
            return path, "cached"
        if _is_the_source(path, url):  # the cache is the mirror: never delete its file
            raise DownloadError(
                f"{entry.set}/{entry.name}: {path} fails its checksum, and it is the mirror's "
                "own file (DIPBENCH_DATA is the mirror folder): it is left as it is. Point "
                "DIPBENCH_DATA at another folder and repair the mirror."
            )
        path.unlink()  # corrupt or truncated copy: never serve it
        status = "replaced"
    is_http = url.startswith(("http://", "https://"))
    inner = (
        pooch.HTTPDownloader(progressbar=entry.bytes > _LARGE_FILE, timeout=60)
        if is_http
        else _copy_from_folder
    )
    downloader = _RecordingDownloader(inner, entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    what = f"{entry.set}/{entry.name}"
    try:
        pooch.retrieve(
            url,
            known_hash=entry.known_hash,
            fname=path.name,
            path=path.parent,
            downloader=downloader,
            progressbar=False,
        )
    except ValueError as err:  # pooch's verdict on a checksum mismatch
        raise DownloadError(
            f"{what}: checksum mismatch for {url}: expected {entry.known_hash}, got "
            f"{downloader.actual or 'unknown'}. The file was deleted; the source or mirror "
            "holds a different or damaged file."
        ) from err
    except FileNotFoundError as err:
        raise DownloadError(
            f"{what}: {url} does not exist (the mirror folder has no such file).",
            unavailable=True,
        ) from err
    except requests.HTTPError as err:
        code = err.response.status_code if err.response is not None else "?"
        raise DownloadError(
            f"{what}: {url} answered HTTP {code}.", unavailable=code == 404
        ) from err
    except requests.exceptions.ChunkedEncodingError as err:
        raise DownloadError(
            f"{what}: the transfer from {url} was interrupted ({err.__class__.__name__}); "
            "nothing was kept. Run the download again."
        ) from err
    except requests.RequestException as err:  # no route, refused, DNS, time-out
        hint = "" if (mirror or os.environ.get("DIPBENCH_MIRROR")) else f" {MIRROR_HINT}"
        raise DownloadError(
            f"{what}: {url} could not be reached ({err.__class__.__name__}).{hint}",
            unavailable=True,
        ) from err
    path.chmod(0o666 & ~_umask())  # pooch's temporary file is 0600; a cache is shared
    return path, status


def _is_the_source(path: Path, url: str) -> bool:
    """Whether the cached ``path`` is the very file it would be fetched from."""
    if url.startswith(("http://", "https://")):
        return False
    return Path(url).expanduser().resolve() == path.resolve()


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def image_path(set_name: str, name: str, *, root: Path | None = None) -> Path:
    """The verified local path of an image, downloading it if needed."""
    return fetch(find(set_name, name), root=root)[0]


def read_pixels(path: Path) -> np.ndarray:
    """The decoded pixel array in the file's own mode (``1`` gives bool, ``P`` palette indices).

    This is the array ``pixel_sha256`` in the registry is computed on.
    """
    with Image.open(path) as im:
        return np.asarray(im)


def pixel_hash(pixels: np.ndarray) -> str:
    """sha256 of a pixel array's bytes (C order)."""
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def _target_mode(im: Image.Image, registry_mode: str) -> str:
    """The mode an image is loaded in: ``L`` or ``RGB``.

    1-bit images (masks) load as L; a palette image as L when its palette is gray; RGBA drops
    its alpha; otherwise the registry's mode wins (Set14 ``bridge`` ground truths are RGB).
    """
    if registry_mode in ("L", "1", "LA"):
        return "L"
    if registry_mode == "P":
        rgb = np.asarray(im.convert("RGB"))
        gray = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
        return "L" if gray else "RGB"
    return "RGB"


def to_float(im: Image.Image, registry_mode: str) -> np.ndarray:
    """A PIL image as a float32 ``(H, W, C)`` array in [0, 1], C = 1 or 3."""
    target = _target_mode(im, registry_mode)
    pixels = np.asarray(im.convert(target), dtype=np.float32) / np.float32(255)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def read_image(path: Path, *, channels: int | None = None) -> np.ndarray:
    """Read any image file as float32 ``(H, W, C)`` in [0, 1].

    Parameters
    ----------
    path : Path
        An image file Pillow can read.
    channels : {1, 3}, optional
        Force gray or RGB; default: the file's own (gray stays gray, anything else is RGB).
    """
    with Image.open(path) as im:
        mode = {1: "L", 3: "RGB"}[channels] if channels else im.mode
        return to_float(im, mode)


def _load_archive_image(entry: Entry, name: str, root: Path | None) -> np.ndarray:
    archives.archive_index(name)  # a bad name fails before the archive is fetched
    return archives.archive_image(fetch(entry, root=root)[0], name)


def load_image(set_name: str, name: str, *, root: Path | None = None) -> np.ndarray:
    """Load a registry image, downloading and verifying it first if needed.

    Parameters
    ----------
    set_name, name : str
        The image, as in ``dipbench datasets``.
    root : Path, optional
        Cache folder; default :func:`data_dir`.

    Returns
    -------
    ndarray
        float32, shape ``(H, W, C)`` with C = 1 (gray) or 3 (color), values in [0, 1].
    """
    archive = [e for e in select(load_registry(), [set_name]) if e.kind == "archive"]
    if archive:
        return _load_archive_image(archive[0], name, root)
    entry = find(set_name, name)
    path = fetch(entry, root=root)[0]
    with Image.open(path) as im:
        return to_float(im, entry.mode)
