"""Checks and conversions shared by every stage: images are float32 ``(H, W, C)`` in [0, 1]."""

from __future__ import annotations

import numpy as np

_RANGE_SLACK = 1e-6  # float round-off from upstream conversions


def check_image(image: np.ndarray, name: str = "image", *, unit_range: bool = True) -> np.ndarray:
    """Validate an image and return it as float32 ``(H, W, C)``.

    Parameters
    ----------
    image : ndarray
        ``(H, W, C)`` with C = 1 or 3.
    name : str
        What to call the array in error messages.
    unit_range : bool
        Require values in [0, 1].

    Raises
    ------
    ValueError
        Naming the problem: wrong type, shape or channel count, NaN/Inf, values out of range.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(
            f"{name} must have shape (H, W, C) with C = 1 or 3, got {image.shape}; "
            "add a channel axis to a grayscale image with image[..., None]"
        )
    if min(image.shape[:2]) < 1:
        raise ValueError(f"{name} is empty: shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(
            f"{name} must be floating point in [0, 1], got {image.dtype}; divide uint8 by 255"
        )
    if not np.isfinite(image).all():
        raise ValueError(f"{name} contains NaN or Inf")
    if unit_range and (image.min() < -_RANGE_SLACK or image.max() > 1 + _RANGE_SLACK):
        raise ValueError(f"{name} must lie in [0, 1], got [{image.min():.4g}, {image.max():.4g}]")
    return image.astype(np.float32, copy=False)


def check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Validate an inpainting mask (1 = known pixel) for an image shape; return ``(H, W, 1)``."""
    mask = np.asarray(mask)
    if mask.ndim == 2:
        mask = mask[..., None]
    if mask.shape[:2] != tuple(shape[:2]) or mask.shape[2] != 1:
        raise ValueError(
            f"mask must have shape {tuple(shape[:2])} or {tuple(shape[:2]) + (1,)}, "
            f"got {mask.shape}"
        )
    if not np.isin(mask, (0, 1)).all():
        raise ValueError("mask must hold only 0 (missing) and 1 (known)")
    return mask.astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round a [0, 1] image to uint8 (for libraries that work on 8-bit data)."""
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def crop_to_multiple(image: np.ndarray, multiple: int, *, center: bool = True) -> np.ndarray:
    """Crop height and width down to a multiple of ``multiple`` (centered, as DIP's code does)."""
    h, w = image.shape[:2]
    nh, nw = h - h % multiple, w - w % multiple
    if nh == 0 or nw == 0:
        raise ValueError(f"image of size {h}x{w} is smaller than the multiple {multiple}")
    top, left = ((h - nh) // 2, (w - nw) // 2) if center else (0, 0)
    return image[top : top + nh, left : left + nw]


def crop_to_size(image: np.ndarray, size: int) -> np.ndarray:
    """Center crop to at most ``size`` x ``size`` (smaller sides are kept whole)."""
    h, w = image.shape[:2]
    th, tw = min(h, size), min(w, size)
    top, left = (h - th) // 2, (w - tw) // 2
    return image[top : top + th, left : left + tw]
