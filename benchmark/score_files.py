"""Scoring image files made elsewhere (``dipbench score``): each file read at its own scale,
matched by name, scored under a protocol of :mod:`benchmark.metrics`.

Each format is read at its own scale: 8-bit / 255, 16-bit / 65535, a PGM/PPM by its own
``maxval``, float TIFFs (gray or RGB, through tifffile) as they are; EXIF orientation is
applied (and said); a multi-page file is refused; a 32-bit BMP's fourth byte is dropped when
it is padding (all 0) or opaque.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image

from benchmark.metrics import get_protocol

if TYPE_CHECKING:
    import pandas as pd

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm", ".pgm")
_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L")  # Pillow's gray modes


class ImageFileError(ValueError):
    """A file that cannot be scored as it is; the message names the file and the reason."""


@dataclass(frozen=True)
class ScoredImage:
    """An image read for scoring, and what was done to it on the way (said to the user)."""

    pixels: np.ndarray  # float64 (H, W, C) in [0, 1], C = 1 or 3
    notes: tuple[str, ...] = ()


def read_for_scoring(path: Path) -> ScoredImage:
    """Read an image file at its own scale: 8-bit / 255, 16-bit / 65535, a PGM/PPM / its
    maxval, float (TIFF, gray or RGB) as it is; EXIF orientation applied.

    Opaque RGBA (and a 32-bit BMP's padding byte) is dropped (said in ``notes``); anything
    else that would need a guess is refused: transparency, float values outside [0, 1], other
    sample types, several pages, files that do not decode or are truncated.

    Raises
    ------
    ImageFileError
        Naming the file and the problem.
    """
    path = Path(path)
    notes: list[str] = []
    mode = None
    if path.suffix.lower() in (".tif", ".tiff"):
        data = _read_tiff(path, notes)  # float RGB too, which neither Pillow nor OpenCV read
    else:
        orientation, mode = _check_file(path)
        data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if data is None:  # a format Pillow knows and OpenCV does not: 8 bits only
            with Image.open(path) as im:
                data = np.asarray(im.convert("RGB" if im.mode not in ("L", "1") else "L"))
        elif data.ndim == 3 and data.shape[2] in (3, 4):
            data = data[..., [2, 1, 0, *range(3, data.shape[2])]]  # OpenCV's BGR(A)
        if orientation != 1:
            data = _orient(data, orientation)
            notes.append(f"EXIF orientation {orientation} applied")
    if data.ndim == 3 and data.shape[2] == 4:
        alpha = data[..., 3]
        opaque = np.iinfo(alpha.dtype).max if alpha.dtype.kind == "u" else 1.0
        if path.suffix.lower() == ".bmp" and not alpha.any():
            notes.append("32-bit BMP: its fourth byte (all 0) is padding, dropped")
        elif alpha.min() < opaque:
            raise ImageFileError(f"{path.name}: has transparency; save it without an alpha channel")
        else:
            notes.append("opaque alpha channel dropped")
        data = data[..., :3]
    if mode in GRAY_MODES and data.ndim == 3:  # gray (+ alpha) that OpenCV read as color
        data = data[..., 0]
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    elif data.ndim != 2 and not (data.ndim == 3 and data.shape[2] == 3):
        raise ImageFileError(f"{path.name}: {data.shape} is neither gray nor RGB(A)")
    maxval = _pnm_maxval(path)
    if maxval is not None and data.dtype.kind == "u" and maxval != np.iinfo(data.dtype).max:
        if data.max() > maxval:
            raise ImageFileError(f"{path.name}: values above its maxval {maxval}")
        pixels = data.astype(np.float64) / maxval
        notes.append(f"PNM maxval {maxval}, scaled by 1/{maxval}")
    elif data.dtype in _FULL_SCALE:
        pixels = data.astype(np.float64) / _FULL_SCALE[data.dtype]
        if data.dtype == np.uint16:
            notes.append("16-bit, scaled by 1/65535")
    elif data.dtype.kind == "f":
        if not np.isfinite(data).all() or data.min() < 0 or data.max() > 1:
            raise ImageFileError(
                f"{path.name}: float image with values outside [0, 1] "
                f"([{np.nanmin(data):.4g}, {np.nanmax(data):.4g}]); save it in [0, 1] or as "
                "8/16-bit"
            )
        pixels = data.astype(np.float64)
    else:
        raise ImageFileError(f"{path.name}: {data.dtype} samples; save it as 8- or 16-bit")
    return ScoredImage(_hwc(pixels), tuple(notes))


def _hwc(pixels: np.ndarray) -> np.ndarray:
    return pixels[..., None] if pixels.ndim == 2 else np.ascontiguousarray(pixels)


def _check_file(path: Path) -> int:
    """Refuse a file that does not decode, is truncated or holds several pages; return its
    EXIF orientation (1: as stored)."""
    try:
        with Image.open(path) as im:
            im.verify()  # corrupt files fail here (PNG checks every chunk's CRC)
        with Image.open(path) as im:  # verify() leaves the file unusable: open it again
            pages = getattr(im, "n_frames", 1)
            orientation = int(im.getexif().get(0x0112, 1))
            mode = im.mode
            im.load()  # the whole image decoded: a truncated JPEG fails here, not in verify
    except Exception as err:  # noqa: BLE001  Pillow raises many kinds for bad files
        raise ImageFileError(f"{path.name}: not a readable image ({err})") from None
    if pages > 1:
        raise ImageFileError(f"{path.name}: holds {pages} pages; save one image per file")
    return (orientation if orientation in range(1, 9) else 1), mode


def _read_tiff(path: Path, notes: list[str]) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) > 1:
                raise ImageFileError(
                    f"{path.name}: holds {len(tif.pages)} pages; save one image per file"
                )
            page = tif.pages[0]
            data = _as_written(path, page, page.asarray(), notes)
    except ImageFileError:
        raise
    except Exception as err:  # noqa: BLE001  tifffile raises many kinds for bad files
        raise ImageFileError(f"{path.name}: not a readable TIFF ({err})") from None
    if data.ndim == 3 and data.shape[0] in (3, 4) and data.shape[2] not in (3, 4):
        data = np.moveaxis(data, 0, -1)  # planar (C, H, W)
    return data


def _as_written(path: Path, page: Any, data: np.ndarray, notes: list[str]) -> np.ndarray:
    """A TIFF page's samples as the picture they encode: a MINISWHITE page inverted, a
    palette page through its colormap; any other interpretation is refused."""
    import tifffile

    kind = tifffile.PHOTOMETRIC
    photometric = page.photometric
    if photometric == kind.MINISWHITE:
        notes.append("MINISWHITE TIFF (0 = white): inverted")
        return np.iinfo(data.dtype).max - data if data.dtype.kind == "u" else 1.0 - data
    if photometric == kind.PALETTE:
        if page.colormap is None or data.dtype.kind != "u":
            raise ImageFileError(f"{path.name}: a palette TIFF without a colormap")
        notes.append("palette TIFF: colors from its colormap")
        colormap = np.asarray(page.colormap, np.uint16)
        # 8-bit colors, as libtiff reads them: the high byte (writers store v << 8), or the
        # values themselves in a colormap written as 8-bit (all below 256)
        colors = colormap if colormap.max() < 256 else colormap >> 8
        return np.moveaxis(colors.astype(np.uint8)[:, data], 0, -1)
    if photometric not in (kind.MINISBLACK, kind.RGB):
        raise ImageFileError(
            f"{path.name}: a TIFF in {kind(photometric).name} colors; save it as gray or RGB"
        )
    return data


# EXIF orientation -> the numpy operations that show the image upright (as Pillow's
# ImageOps.exif_transpose): 2 mirrored, 3 upside down, 4 flipped, 5-8 the four transposes.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(np.swapaxes(a, 0, 1), 2),
    8: lambda a: np.rot90(a, 1),
}


def _orient(data: np.ndarray, orientation: int) -> np.ndarray:
    return np.ascontiguousarray(_ORIENT[orientation](data))


def _pnm_maxval(path: Path) -> int | None:
    """A binary or plain PGM/PPM's ``maxval`` (its full scale), or None for other files."""
    with path.open("rb") as handle:
        head = handle.read(512)
    if head[:2] not in (b"P2", b"P3", b"P5", b"P6"):
        return None
    tokens: list[bytes] = []
    for line in head.split(b"\n"):
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 4:
            break
    try:
        return int(tokens[3])
    except (IndexError, ValueError):
        return None


def _as_gray_if_equal(image: ScoredImage) -> ScoredImage | None:
    """An RGB file whose three channels are equal, as gray; None if they differ."""
    rgb = image.pixels
    if rgb.shape[2] == 3 and (rgb[..., :1] == rgb[..., 1:]).all():
        return ScoredImage(rgb[..., :1], (*image.notes, "RGB with R = G = B, read as gray"))
    return None


def _match_channels(gt: ScoredImage, pred: ScoredImage, protocol: str) -> tuple[ScoredImage, ...]:
    """Ground truth and prediction with the channels the protocol scores, converting only what
    loses nothing (an RGB file with equal channels, for ``gray``)."""
    if protocol == "sr-y":
        if gt.pixels.shape[2] != pred.pixels.shape[2]:
            kinds = {1: "gray", 3: "RGB"}
            raise ImageFileError(
                f"the prediction is {kinds[pred.pixels.shape[2]]}, the ground truth "
                f"{kinds[gt.pixels.shape[2]]}: sr-y takes the luma of two images of one kind "
                "(a gray prediction may be a luma already, or not); save it as the ground truth"
            )
        return gt, pred
    wanted = 1 if protocol == "gray" else 3
    fixed = []
    for what, image in (("ground truth", gt), ("prediction", pred)):
        channels = image.pixels.shape[2]
        if channels == wanted:
            fixed.append(image)
            continue
        gray = _as_gray_if_equal(image) if wanted == 1 else None
        if gray is None:
            name = {1: "gray", 3: "RGB"}[channels]
            raise ImageFileError(
                f"the {what} is {name}, the {protocol} protocol scores "
                f"{'gray' if wanted == 1 else 'RGB'} images; use --protocol "
                f"{'rgb' if channels == 3 else 'gray'} or sr-y, or save it as the protocol wants"
            )
        fixed.append(gray)
    return tuple(fixed)


def _by_stem(folder: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Image files by name without extension, and the names that more than one file has."""
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(p.stem, []).append(p)
    single = {k: v[0] for k, v in found.items() if len(v) == 1}
    return single, {k: v for k, v in found.items() if len(v) > 1}


@dataclass
class FolderScores:
    """What :func:`score_folders` found: scores, and every file it could not score, by name."""

    table: pd.DataFrame  # image, psnr, ssim, notes
    unmatched: list[str]
    problems: list[str]


def score_folders(gt_dir: Path, pred_dir: Path, protocol: str) -> FolderScores:
    """Score restored images made elsewhere against their ground truths.

    Files are matched by name without extension (``baby.png`` with ``baby.bmp``). Every pair
    that can be scored is; each one that cannot (a name two files share, a file that does not
    decode, another size, channels the protocol does not score, an image too small for SSIM)
    is listed in ``problems`` and left out.
    """
    import pandas as pd

    chosen = get_protocol(protocol)
    if Path(gt_dir).resolve() == Path(pred_dir).resolve():
        raise FileNotFoundError(
            f"--gt and --pred are the same folder ({gt_dir}): every image would score against "
            "itself (PSNR inf); give the folder of the restored images as --pred"
        )
    (gts, gt_twins), (preds, pred_twins) = _by_stem(Path(gt_dir)), _by_stem(Path(pred_dir))
    problems = [
        f"{name}: {len(paths)} files in {where} ({', '.join(p.name for p in paths)}); "
        "keep one per name"
        for where, twins in (("--gt", gt_twins), ("--pred", pred_twins))
        for name, paths in sorted(twins.items())
    ]
    twins = gt_twins.keys() | pred_twins.keys()
    rows = []
    for name in sorted((gts.keys() & preds.keys()) - twins):
        if gts[name].resolve() == preds[name].resolve() or gts[name].samefile(preds[name]):
            problems.append(f"{name}: --gt and --pred hold the same file; it is not scored")
            continue
        try:
            gt, pred = read_for_scoring(gts[name]), read_for_scoring(preds[name])
            gt, pred = _match_channels(gt, pred, protocol)
            scores = chosen.score(pred.pixels, gt.pixels)
        except ValueError as err:  # ImageFileError, or the protocol's size checks
            problems.append(f"{name}: {err}")
            continue
        except MemoryError:  # one huge pair must not cost the scores of the others
            problems.append(f"{name}: too large to score in this machine's memory")
            continue
        notes = [f"gt {n}" for n in gt.notes] + [f"pred {n}" for n in pred.notes]
        rows.append({"image": name, **scores, "notes": "; ".join(notes)})
    unmatched = sorted((gts.keys() | gt_twins.keys()) ^ (preds.keys() | pred_twins.keys()))
    table = pd.DataFrame(rows, columns=["image", "psnr", "ssim", "notes"])
    return FolderScores(table, unmatched, problems)
