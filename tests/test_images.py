"""Registry, checksummed downloads (mirror folder and HTTP) and the image loader."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from benchmark import images
from benchmark.cli import main

PAYLOAD = b"dipbench test payload " * 200
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


# --- the registry ---------------------------------------------------------------------------


MANIFESTS = ("MANIFEST.csv", "MANIFEST_denoising_sets.csv")  # the mirror's two lists


def test_registry_lists_every_mirrored_image_and_the_cifar_archive(mirror: Path) -> None:
    registry = images.load_registry()
    manifest = pd.concat([pd.read_csv(mirror / name, dtype=str) for name in MANIFESTS])
    files = {e.file: e for e in registry}
    assert len(registry) == len(manifest) + 1 == 138 + 154 + 1
    for row in manifest.itertuples():
        entry = files[row.file]
        assert (entry.sha256, entry.url, entry.mode) == (row.sha256, row.raw_url, row.mode)
    cifar = files["cifar10/cifar-10-python.tar.gz"]
    assert cifar.known_hash == "md5:c58f30108f718f92721af3b95e74349a"
    assert all(len(e.known_hash.split(":")[1]) in (32, 64) for e in registry)


def test_the_committed_registry_is_what_its_builder_writes(
    mirror: Path, script: Callable[[str], ModuleType]
) -> None:
    """One registry: the file the code reads is the one ``scripts/build_registry.py`` makes
    from the mirror's manifest, and no second copy lies elsewhere in the checkout."""
    built = script("build_registry").build(mirror).astype(str).replace("nan", "")
    committed = pd.read_csv(images.REGISTRY_PATH, dtype=str).fillna("")
    pd.testing.assert_frame_equal(built.reset_index(drop=True), committed)
    checkout = images.REGISTRY_PATH.parents[2]
    others = [p for p in checkout.rglob("registry.csv") if ".venv" not in p.parts]
    assert others == [images.REGISTRY_PATH]


def test_unknown_set_or_image_names_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="known sets: bm3d_gray11"):
        images.select(images.load_registry(), ["bm3d_grey11"])
    with pytest.raises(KeyError, match="it has: barbara, boat"):
        images.find("bm3d_gray11", "barbra")


# --- the mirror folder ----------------------------------------------------------------------


def test_download_all_from_mirror_then_cached_then_corrupt_replaced(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("DIPBENCH_DATA", str(tmp_path))
    monkeypatch.setenv("DIPBENCH_MIRROR", str(mirror))

    assert main(["download", "--all", "--quiet"]) == 1  # CIFAR-10 is not in the mirror
    out, err = capsys.readouterr()
    assert "293 file(s)" in out and "292 downloaded, 1 unavailable" in out
    assert "unavailable: cifar10/cifar-10-python" in err and "no such file" in err
    assert main(["download", "--all", "--quiet", "--skip-unavailable"]) == 0
    assert "292 cached, 1 unavailable" in capsys.readouterr().out

    victim = tmp_path / "bm3d_gray11" / "house.png"
    victim.write_bytes(victim.read_bytes()[:-100])  # truncated, as by a crash
    assert main(["download", "bm3d_gray11", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "replaced bm3d_gray11/house" in out and "1 replaced" in out
    assert images.is_valid(victim, images.find("bm3d_gray11", "house"))


def test_datasets_command_reports_what_is_on_disk(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("DIPBENCH_DATA", str(tmp_path))
    assert main(["datasets", "set5", "--summary"]) == 0
    assert "0/5 on disk" in capsys.readouterr().out
    images.fetch(images.find("set5", "baby"))
    assert main(["datasets", "set5"]) == 0
    out = capsys.readouterr().out
    assert "1/5 on disk" in out and "baby" in out and "512x512" in out


@pytest.mark.parametrize("argv", [["download"], ["download", "nosuchset"], ["datasets", "x"]])
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "bm3d_gray11" in capsys.readouterr().err  # the valid names are listed


# --- HTTP against a server on 127.0.0.1 -----------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.endswith("/good.png"):
            self._send(PAYLOAD)
        elif self.path.endswith("/corrupt.png"):
            self._send(PAYLOAD[:-1] + b"!")
        elif self.path.endswith("/interrupted.png"):
            # Promise the whole file, send half, hang up.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _entry(name: str) -> images.Entry:
    return images.Entry(
        set="web",
        name=name,
        file=f"web/{name}.png",
        width=1,
        height=1,
        mode="L",
        kind="image",
        sha256=PAYLOAD_SHA,
        md5="",
        pixel_sha256="",
        bytes=len(PAYLOAD),
        url="",
    )


def test_http_success_then_cached(server: str, tmp_path: Path) -> None:
    path, status = images.fetch(_entry("good"), root=tmp_path, mirror=server)
    assert status == "downloaded" and path.read_bytes() == PAYLOAD
    assert images.fetch(_entry("good"), root=tmp_path, mirror=server)[1] == "cached"


def test_http_404_is_unavailable(server: str, tmp_path: Path) -> None:
    with pytest.raises(images.DownloadError, match="HTTP 404") as exc:
        images.fetch(_entry("missing"), root=tmp_path, mirror=server)
    assert exc.value.unavailable
    assert not any(tmp_path.rglob("*.*"))


def test_http_corrupt_bytes_name_both_hashes_and_leave_nothing(server: str, tmp_path: Path) -> None:
    with pytest.raises(images.DownloadError) as exc:
        images.fetch(_entry("corrupt"), root=tmp_path, mirror=server)
    message = str(exc.value)
    actual = hashlib.sha256(PAYLOAD[:-1] + b"!").hexdigest()
    assert "web/corrupt" in message and f"{server}/web/corrupt.png" in message
    assert PAYLOAD_SHA in message and actual in message
    assert not exc.value.unavailable
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_http_interrupted_transfer_leaves_nothing(server: str, tmp_path: Path) -> None:
    with pytest.raises(images.DownloadError, match="interrupted"):
        images.fetch(_entry("interrupted"), root=tmp_path, mirror=server)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_public_url_mirror_override(server: str, tmp_path: Path) -> None:
    entry = replace(_entry("good"), url=f"{server}/web/good.png")
    assert images.fetch(entry, root=tmp_path, mirror="")[1] == "downloaded"


def test_no_network_no_mirror_says_how_to_set_the_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIPBENCH_MIRROR", raising=False)
    entry = replace(_entry("good"), url="http://127.0.0.1:9/web/good.png")  # discard port
    with pytest.raises(images.DownloadError, match="DIPBENCH_MIRROR") as exc:
        images.fetch(entry, root=tmp_path, mirror="")
    assert exc.value.unavailable


# --- the loader -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_images(mirror: Path) -> list[images.Entry]:
    entries = [e for e in images.load_registry() if e.kind == "image"]
    for entry in entries:
        images.fetch(entry)
    return entries


def test_decoded_pixels_hash_to_the_published_pixel_hashes(
    mirror: Path, all_images: list[images.Entry]
) -> None:
    lists = ("PIXEL_SHA256.csv", "PIXEL_SHA256_denoising_sets.csv")  # the mirror's two lists
    published = pd.concat([pd.read_csv(mirror / name, dtype=str) for name in lists])
    published = published.set_index("file")
    assert len(all_images) == len(published) == 138 + 154
    for entry in all_images:
        pixels = images.read_pixels(images.cached_path(entry))
        row = published.loc[entry.file]
        assert str(pixels.dtype) == row["dtype"], entry.file
        assert "x".join(map(str, pixels.shape)) == row.array_shape, entry.file
        assert images.pixel_hash(pixels) == row.pixel_sha256 == entry.pixel_sha256, entry.file


def test_loader_returns_float32_hwc_in_unit_range(all_images: list[images.Entry]) -> None:
    for entry in all_images:
        image = images.load_image(entry.set, entry.name)
        assert image.dtype == np.float32 and image.ndim == 3, entry.file
        assert image.shape[:2] == (entry.height, entry.width), entry.file
        assert image.shape[2] == (1 if entry.mode in ("L", "1") else image.shape[2]), entry.file
        assert 0.0 <= image.min() and image.max() <= 1.0, entry.file


@pytest.mark.parametrize(
    ("set_name", "name", "channels"),
    [
        ("bm3d_gray11", "house", 1),
        ("cbm3d_color9", "house", 3),
        ("set14_x4_gt", "bridge", 3),  # RGB in the ground truths, as the registry says
        ("set14", "bridge", 1),
        ("deep_decoder", "mask", 1),  # 1-bit mask loads as L
        ("deep_decoder", "phantom256", 1),  # gray palette loads as L
        ("deep_decoder", "poster", 3),  # RGBA drops alpha
    ],
)
def test_loader_modes(mirror: Path, set_name: str, name: str, channels: int) -> None:
    image = images.load_image(set_name, name)
    assert image.shape[2] == channels
    raw = images.read_pixels(images.image_path(set_name, name))
    if raw.dtype == np.uint8 and raw.ndim == 2 and channels == 1 and set_name != "deep_decoder":
        np.testing.assert_array_equal(image[..., 0], raw / np.float32(255))
    if raw.dtype == bool:
        np.testing.assert_array_equal(image[..., 0], raw.astype(np.float32))


def test_archive_images_need_their_naming() -> None:
    with pytest.raises(KeyError, match="test_NNNNN"):
        images.load_image("cifar10", "cifar-10-python")
