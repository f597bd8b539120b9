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

import numpy as np

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
    from skimage.metrics import peak_signal_noise_ratio

    out, ref = _pair(output, reference)
    mse = np.mean((out - ref) ** 2)
    return float("inf") if mse == 0 else float(peak_signal_noise_ratio(ref, out, data_range=1.0))


def ssim(output: np.ndarray, reference: np.ndarray) -> float:
    """SSIM of ``output`` (clipped) against ``reference``: Gaussian window, sigma 1.5.

    Color images are scored per channel and averaged (``channel_axis=-1``).
    """
    from skimage.metrics import structural_similarity

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
    from skimage.color import rgb2ycbcr

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
