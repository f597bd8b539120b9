"""Degradation models: noise, inpainting masks, super-resolution downsampling.

Each degradation takes a clean float32 ``(H, W, C)`` image, a level and an explicit
``numpy.random.Generator``, and returns a :class:`Degraded`: the :class:`Observation` a method
sees (the degraded image, the forward model that made it, the declared parameters) and the
clean target it is scored against. Methods never see the target.

Levels
------
gaussian
    sigma on the 0-255 scale (25 means 25/255); clipped to [0, 1] unless ``clip=False``.
poisson
    photon count scale c: ``poisson(x * c) / c`` (ImageNet-C "shot" noise).
salt_pepper
    fraction of values replaced by 0 or 1 (ImageNet-C "impulse" noise), per channel.
speckle
    c in ``x + x * N(0, c^2)``.
bernoulli
    fraction of pixels removed (the same pixels in every channel).
text
    font scale of the overlaid text (OpenCV Hershey font; 1 is about 22 px high).
regions
    fraction of the image covered by missing square blocks.
downsample
    the integer factor; the target is the ground truth cropped to a multiple of it (or of
    ``multiple``), the observation Pillow's Lanczos resize of that target (DIP's input).
downsample_bicubic
    the integer factor; the observation is MATLAB's antialiased bicubic ``imresize`` of the
    target, in 8 bits: the super-resolution benchmarks' input (LapSRN's, the paper's bicubic).

Each observation is made by its forward model (:mod:`benchmark.forward`), built once here and
held by the observation: the same object that methods take as their operator,
``Observation.physics``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from skimage.util import random_noise

from benchmark.arrays import check_image, crop_to_multiple
from benchmark.forward import (
    BicubicDownsampling,
    ForwardModel,
    Identity,
    LanczosDownsampling,
    Masking,
)

# ImageNet-C severities 1..5 (Hendrycks & Dietterich, 2019).
IMAGENET_C: dict[str, tuple[float, ...]] = {
    "gaussian": (0.08, 0.12, 0.18, 0.26, 0.38),  # std on [0, 1]
    "poisson": (60, 25, 12, 5, 3),  # "shot": photon scale c
    "salt_pepper": (0.03, 0.06, 0.09, 0.17, 0.27),  # "impulse": amount
    "speckle": (0.15, 0.2, 0.35, 0.45, 0.6),  # c
}


@dataclass(frozen=True)
class Observation:
    """What a restoration method is given: never the clean image.

    Attributes
    ----------
    y : ndarray
        The degraded image, float32 ``(h, w, C)``.
    physics : ForwardModel
        The forward model that made ``y`` (:mod:`benchmark.forward`), built once by the
        degradation: the operator a method's output passes through to be compared with ``y``.
        It carries the task and its parameters (an inpainting mask, a super-resolution factor).
    params : dict
        The degradation's declared parameters (``kind``, ``level`` and e.g. ``sigma`` on
        [0, 1], ``c``, ``amount``, ``factor``, ``kernel``), as a record states them.

    Examples
    --------
    >>> import numpy as np
    >>> from benchmark.forward import Masking
    >>> mask = np.ones((4, 5, 1), np.float32)
    >>> mask[0, 0] = 0
    >>> observation = Observation(np.full((4, 5, 3), 0.5, np.float32) * mask, Masking(mask))
    >>> observation.task, observation.output_shape
    ('inpainting', (4, 5, 3))
    """

    y: np.ndarray
    physics: ForwardModel
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.physics, ForwardModel):
            raise TypeError(
                "Observation(y, physics, params): physics is the forward model that made y "
                f"(benchmark.forward: Identity(), Masking(mask), ...), got {self.physics!r}"
            )

    @property
    def task(self) -> str:
        """The task of the forward model (``denoising``, ``inpainting``, ...)."""
        return self.physics.task

    @property
    def mask(self) -> np.ndarray | None:
        """Inpainting: float32 ``(h, w, 1)``, 1 where the pixel is known; else None."""
        return self.physics.mask

    @property
    def factor(self) -> int | None:
        """Super-resolution: the output is ``factor`` times larger than ``y``; else None."""
        return self.physics.factor

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Shape of the restored image."""
        return self.physics.output_shape(self.y.shape)


@dataclass(frozen=True)
class Degraded:
    """A degraded image and the clean target it is scored against."""

    observation: Observation
    target: np.ndarray


# --- noise ----------------------------------------------------------------------------------


def gaussian(
    image: np.ndarray, sigma: float, rng: np.random.Generator, *, clip: bool = True
) -> Degraded:
    """Additive white Gaussian noise, sigma on the 0-255 scale (clipped, as in the DIP code)."""
    image = check_image(image)
    std = sigma / 255.0
    y = image + rng.normal(0.0, std, image.shape)
    y = np.clip(y, 0, 1) if clip else y
    params = {"kind": "gaussian", "level": sigma, "sigma": std, "clip": clip}
    return _noisy(image, y, params)


def poisson(image: np.ndarray, c: float, rng: np.random.Generator) -> Degraded:
    """Shot noise ``poisson(x * c) / c``, clipped to [0, 1]."""
    image = check_image(image)
    y = np.clip(rng.poisson(image * c) / c, 0, 1)
    return _noisy(image, y, {"kind": "poisson", "level": c, "c": c})


def salt_pepper(
    image: np.ndarray, amount: float, rng: np.random.Generator, *, salt_vs_pepper: float = 0.5
) -> Degraded:
    """Impulse noise: a fraction ``amount`` of values set to 1 (salt) or 0 (pepper)."""
    image = check_image(image)
    y = random_noise(image, mode="s&p", rng=rng, amount=amount, salt_vs_pepper=salt_vs_pepper)
    params = {
        "kind": "salt_pepper",
        "level": amount,
        "amount": amount,
        "salt_vs_pepper": salt_vs_pepper,
    }
    return _noisy(image, y, params)


def speckle(image: np.ndarray, c: float, rng: np.random.Generator) -> Degraded:
    """Multiplicative noise ``x + x * N(0, c^2)``, clipped to [0, 1]."""
    image = check_image(image)
    y = np.clip(image + image * rng.normal(0.0, c, image.shape), 0, 1)
    return _noisy(image, y, {"kind": "speckle", "level": c, "c": c})


def _noisy(image: np.ndarray, y: np.ndarray, params: dict[str, Any]) -> Degraded:
    return Degraded(Observation(y.astype(np.float32), Identity(), params), image)


def imagenet_c_level(kind: str, severity: int) -> float:
    """The level of ``kind`` at ImageNet-C ``severity`` (1..5), in this module's units.

    Gaussian comes back on the 0-255 scale (severity 3: 0.18 * 255 = 45.9).
    """
    if kind not in IMAGENET_C:
        raise KeyError(f"no ImageNet-C constants for {kind!r}; known: {', '.join(IMAGENET_C)}")
    if not 1 <= severity <= 5:
        raise ValueError(f"ImageNet-C severity must be 1..5, got {severity}")
    level = IMAGENET_C[kind][severity - 1]
    return level * 255.0 if kind == "gaussian" else level


# --- inpainting masks -----------------------------------------------------------------------


def bernoulli_mask(shape: tuple[int, ...], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A mask removing each pixel with probability ``fraction`` (1 = known), ``(H, W, 1)``."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction of removed pixels must be in [0, 1), got {fraction}")
    return (rng.random((shape[0], shape[1], 1)) >= fraction).astype(np.float32)


_WORDS = (
    "deep image prior untrained network restores what the convolution learns first "
    "structure before noise hourglass decoder benchmark protocol seed"
).split()


def text_mask(shape: tuple[int, ...], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Random words over the whole image, drawn with OpenCV's Hershey font (1 = known).

    Lines of text are ``scale * 22`` pixels high with a gap of half that between them; the
    words and their horizontal offsets are drawn from ``rng``.
    """
    h, w = shape[:2]
    canvas = np.zeros((h, w), np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    thickness = max(1, round(2 * scale))
    (_, line_h), _ = cv2.getTextSize("Ag", font, scale, thickness)
    step = int(line_h * 1.5) + 1
    for baseline in range(line_h + 2, h, step):
        x = int(rng.integers(0, max(1, line_h)))
        while x < w:
            word = str(rng.choice(_WORDS))
            cv2.putText(canvas, word, (x, baseline), font, scale, 255, thickness, cv2.LINE_8)
            x += cv2.getTextSize(word + " ", font, scale, thickness)[0][0]
    return (canvas == 0).astype(np.float32)[..., None]


def regions_mask(
    shape: tuple[int, ...], fraction: float, rng: np.random.Generator, *, block: int | None = None
) -> np.ndarray:
    """Random square holes (side ``block``, default 1/8 of the short side) until ``fraction``
    of the image is missing (1 = known)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction of the image to remove must be in (0, 1), got {fraction}")
    h, w = shape[:2]
    side = block or max(1, min(h, w) // 8)
    known = np.ones((h, w), np.float32)
    while 1 - known.mean() < fraction:
        top = int(rng.integers(0, max(1, h - side + 1)))
        left = int(rng.integers(0, max(1, w - side + 1)))
        known[top : top + side, left : left + side] = 0
    return known[..., None]


def _masked(image: np.ndarray, mask: np.ndarray, params: dict[str, Any]) -> Degraded:
    physics = Masking(mask)
    params = {**params, "missing_fraction": float(1 - mask.mean())}
    return Degraded(Observation(physics.observe(image), physics, params), image)


def bernoulli(image: np.ndarray, fraction: float, rng: np.random.Generator) -> Degraded:
    """Remove a random ``fraction`` of the pixels (DIP Table 1: 0.5)."""
    image = check_image(image)
    mask = bernoulli_mask(image.shape, fraction, rng)
    return _masked(image, mask, {"kind": "bernoulli", "level": fraction})


def text(image: np.ndarray, scale: float, rng: np.random.Generator) -> Degraded:
    """Overlay random text and remove the pixels under it."""
    image = check_image(image)
    return _masked(image, text_mask(image.shape, scale, rng), {"kind": "text", "level": scale})


def regions(image: np.ndarray, fraction: float, rng: np.random.Generator) -> Degraded:
    """Remove random square blocks covering ``fraction`` of the image."""
    image = check_image(image)
    mask = regions_mask(image.shape, fraction, rng)
    return _masked(image, mask, {"kind": "regions", "level": fraction})


# --- super-resolution -----------------------------------------------------------------------


def _sr_target(image: np.ndarray, factor: int, multiple: int | None) -> np.ndarray:
    image = check_image(image)
    if factor < 1:
        raise ValueError(f"super-resolution factor must be a positive integer, got {factor}")
    if (multiple or factor) % factor:
        raise ValueError(f"multiple {multiple} must be divisible by the factor {factor}")
    return crop_to_multiple(image, multiple or factor)


def _downsampled(
    target: np.ndarray,
    model: LanczosDownsampling | BicubicDownsampling,
    kind: str,
    kernel: str,
    multiple: int | None,
) -> Degraded:
    factor = model.factor
    params = {
        "kind": kind,
        "level": factor,
        "factor": factor,
        "kernel": kernel,
        "crop_multiple": multiple or factor,
    }
    return Degraded(Observation(model.observe(target), model, params), target)


def downsample(
    image: np.ndarray,
    factor: int,
    rng: np.random.Generator | None = None,
    *,
    multiple: int | None = None,
) -> Degraded:
    """DIP's low-resolution input for super-resolution.

    The ground truth is cropped (centered) to a multiple of ``multiple`` (default: the factor;
    DIP's evaluation uses 32), then resized by ``1/factor`` with Pillow's Lanczos filter.
    ``rng`` is accepted for a uniform signature and unused: the operation is deterministic.
    """
    factor = int(factor)
    target = _sr_target(image, factor, multiple)
    return _downsampled(target, LanczosDownsampling(factor), "downsample", "lanczos", multiple)


def downsample_bicubic(
    image: np.ndarray,
    factor: int,
    rng: np.random.Generator | None = None,
    *,
    multiple: int | None = None,
) -> Degraded:
    """The super-resolution benchmarks' low-resolution input: MATLAB's antialiased bicubic
    ``imresize(target, 1/factor)`` rounded to 8 bits (``BicubicDownsampling``).

    The target is the ground truth cropped (centered) to a multiple of ``multiple`` (default:
    the factor). This is the input of the bicubic row in DIP's super-resolution table (LapSRN's
    bicubic images); it differs from DIP's own Lanczos input (:func:`downsample`).
    """
    factor = int(factor)
    target = _sr_target(image, factor, multiple)
    return _downsampled(
        target, BicubicDownsampling(factor), "downsample_bicubic", "bicubic", multiple
    )


# --- registry -------------------------------------------------------------------------------

DEGRADATIONS: dict[str, Callable[..., Degraded]] = {
    "gaussian": gaussian,
    "poisson": poisson,
    "salt_pepper": salt_pepper,
    "speckle": speckle,
    "bernoulli": bernoulli,
    "text": text,
    "regions": regions,
    "downsample": downsample,
    "downsample_bicubic": downsample_bicubic,
}


def register_degradation(
    name: str,
) -> Callable[[Callable[..., Degraded]], Callable[..., Degraded]]:
    """Decorator adding ``function(image, level, rng, **options) -> Degraded`` to
    :data:`DEGRADATIONS` under ``name`` (a suite's ``[[degradations]] kind``)."""

    def add(function: Callable[..., Degraded]) -> Callable[..., Degraded]:
        if name in DEGRADATIONS:
            raise ValueError(f"degradation {name!r} is registered twice")
        DEGRADATIONS[name] = function
        return function

    return add


def degrade(
    image: np.ndarray, kind: str, level: float, rng: np.random.Generator, **options: Any
) -> Degraded:
    """Apply the degradation ``kind`` at ``level``; unknown kinds list the known ones.

    Raises
    ------
    ValueError
        The degraded image equals the clean one (a mask that removes no pixel, a noise that
        adds none): every method would score as if perfect.

    Examples
    --------
    >>> import numpy as np
    >>> clean = np.linspace(0, 1, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    >>> degraded = degrade(clean, "bernoulli", 0.5, np.random.default_rng(0))
    >>> observation = degraded.observation
    >>> observation.task, type(observation.physics).__name__, observation.mask.shape
    ('inpainting', 'Masking', (8, 8, 1))
    >>> bool(np.array_equal(observation.y, clean * observation.mask))
    True
    >>> low = degrade(clean, "downsample", 4, np.random.default_rng(0)).observation
    >>> low.y.shape, low.factor, low.output_shape
    ((2, 2, 3), 4, (8, 8, 3))
    """
    try:
        function = DEGRADATIONS[kind]
    except KeyError:
        raise KeyError(f"unknown degradation {kind!r}; known: {', '.join(DEGRADATIONS)}") from None
    degraded = function(image, level, rng, **options)
    y, target = degraded.observation.y, degraded.target
    if y.shape == target.shape and np.array_equal(y, target):
        raise ValueError(
            f"{kind} at level {level:g} leaves this image unchanged (nothing to restore): "
            "choose another level"
        )
    return degraded
