"""Scores and evaluation protocols.

PSNR is computed in float64 on the output clipped to [0, 1], data range 1, over the whole image.
SSIM is scikit-image's ``structural_similarity`` with the Gaussian window of Wang et al.
(sigma 1.5, population covariance) and an explicit data range of 1.

Protocols (``PROTOCOLS``): ``gray`` and ``rgb`` score the whole image (and check its channel
count); ``sr-y`` is DIP's super-resolution evaluation: both images cropped (centered) to a
multiple of 32, the luma Y of ITU-R BT.601 (range [16, 235] of 255), 4 pixels removed at the
top and left and 5 at the bottom and right (DIP's evaluation script: ``shave + 1 : end - shave``
in 1-based inclusive indices).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from benchmark.arrays import check_image, crop_to_multiple

SSIM_WINDOW = 11  # scikit-image's window for sigma 1.5 (truncated at 3.5 sigma)


def _pair(output: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    output = check_image(output, "output", unit_range=False)
    reference = check_image(reference, "reference")
    if output.shape != reference.shape:
        raise ValueError(f"output shape {output.shape} differs from reference {reference.shape}")
    return np.clip(output, 0, 1).astype(np.float64), reference.astype(np.float64)


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of ``output`` (clipped to [0, 1]) against ``reference``, data range 1.

    Both are ``(H, W, C)`` arrays. Identical images give ``inf``.
    """
    out, ref = _pair(output, reference)
    mse = np.mean((out - ref) ** 2)
    return float("inf") if mse == 0 else float(peak_signal_noise_ratio(ref, out, data_range=1.0))


def ssim(output: np.ndarray, reference: np.ndarray) -> float:
    """SSIM of ``output`` (clipped) against ``reference``: Gaussian window, sigma 1.5.

    Color images are scored per channel and averaged (``channel_axis=-1``).
    """
    out, ref = _pair(output, reference)
    if min(ref.shape[:2]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images at least {SSIM_WINDOW}x{SSIM_WINDOW} (its Gaussian window), "
            f"got {ref.shape[0]}x{ref.shape[1]}"
        )
    color = ref.shape[2] == 3
    return float(
        structural_similarity(
            ref if color else ref[..., 0],
            out if color else out[..., 0],
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=-1 if color else None,
        )
    )


def luma_bt601(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an ``(H, W, C)`` image in [0, 1], as ``(H, W, 1)`` in [16/255, 235/255].

    A grayscale image is treated as R = G = B.
    """
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    return (rgb2ycbcr(rgb)[..., :1] / 255.0).astype(np.float64)


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: how an output and its ground truth are compared."""

    name: str
    description: str
    prepare: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

    def score(self, output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
        """PSNR and SSIM under this protocol."""
        out, ref = self.prepare(*_pair(output, reference))
        return {"psnr": psnr(out, ref), "ssim": ssim(out, ref)}


def _channels(expected: int) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def prepare(out: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if ref.shape[2] != expected:
            raise ValueError(
                f"this protocol scores {expected}-channel images, got {ref.shape[2]} channel(s)"
            )
        return out, ref

    return prepare


SR_CROP_MULTIPLE = 32
SR_BORDER = (4, 5)  # pixels removed (top/left, bottom/right), as DIP's evaluation script does


def _sr_y(out: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lead, trail = SR_BORDER
    out, ref = (crop_to_multiple(a, SR_CROP_MULTIPLE) for a in (out, ref))
    scored = (slice(lead, -trail), slice(lead, -trail))
    return luma_bt601(out)[scored], luma_bt601(ref)[scored]


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("gray", "whole image, 1 channel, data range 1", _channels(1)),
        Protocol("rgb", "whole image, 3 channels, data range 1", _channels(3)),
        Protocol(
            "sr-y",
            "centered crop to a multiple of 32, BT.601 Y channel in [16, 235], "
            "4 pixels removed top/left and 5 bottom/right (DIP's super-resolution evaluation)",
            _sr_y,
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; unknown names list the known ones."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None


IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm", ".pgm")
_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class ImageFileError(ValueError):
    """A file that cannot be scored as it is; the message names the file and the reason."""


@dataclass(frozen=True)
class ScoredImage:
    """An image read for scoring, and what was done to it on the way (said to the user)."""

    pixels: np.ndarray  # float64 (H, W, C) in [0, 1], C = 1 or 3
    notes: tuple[str, ...] = ()


def read_for_scoring(path: Path) -> ScoredImage:
    """Read an image file at its own bit depth: 8-bit / 255, 16-bit / 65535, float as it is.

    Opaque RGBA drops its alpha (said in ``notes``); anything else that would need a guess is
    refused: transparency, float values outside [0, 1], other sample types, files that do not
    decode or are truncated.

    Raises
    ------
    ImageFileError
        Naming the file and the problem.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.verify()  # truncated or corrupt files fail here (PNG checks every chunk's CRC)
    except Exception as err:  # noqa: BLE001  Pillow raises many kinds for bad files
        raise ImageFileError(f"{path.name}: not a readable image ({err})") from None
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:  # a format Pillow knows and OpenCV does not: 8 bits only
        with Image.open(path) as im:
            data = np.asarray(im.convert("RGB" if im.mode not in ("L", "1") else "L"))
    notes: list[str] = []
    if data.ndim == 3 and data.shape[2] == 4:
        alpha = data[..., 3]
        opaque = np.iinfo(alpha.dtype).max if alpha.dtype.kind == "u" else 1.0
        if alpha.min() < opaque:
            raise ImageFileError(f"{path.name}: has transparency; save it without an alpha channel")
        data = data[..., :3]
        notes.append("opaque alpha channel dropped")
    if data.ndim == 3 and data.shape[2] == 3:
        data = data[..., ::-1]  # OpenCV's BGR
    elif data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    elif data.ndim != 2:
        raise ImageFileError(f"{path.name}: {data.shape} is neither gray nor RGB(A)")
    if data.dtype in _FULL_SCALE:
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
    pixels = pixels[..., None] if pixels.ndim == 2 else np.ascontiguousarray(pixels)
    return ScoredImage(pixels, tuple(notes))


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
    chosen = get_protocol(protocol)
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
        try:
            gt, pred = read_for_scoring(gts[name]), read_for_scoring(preds[name])
            gt, pred = _match_channels(gt, pred, protocol)
            scores = chosen.score(pred.pixels, gt.pixels)
        except ValueError as err:  # ImageFileError, or the protocol's size checks
            problems.append(f"{name}: {err}")
            continue
        notes = [f"gt {n}" for n in gt.notes] + [f"pred {n}" for n in pred.notes]
        rows.append({"image": name, **scores, "notes": "; ".join(notes)})
    unmatched = sorted((gts.keys() | gt_twins.keys()) ^ (preds.keys() | pred_twins.keys()))
    table = pd.DataFrame(rows, columns=["image", "psnr", "ssim", "notes"])
    return FolderScores(table, unmatched, problems)
