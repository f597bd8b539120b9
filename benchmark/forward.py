"""Forward models: one object per task that both makes the observation and is the loss's operator.

A forward model (deepinv's ``Physics``) is the single place where a task's measurement lives:

- :meth:`ForwardModel.observe` makes the noiseless observation from the ground truth (the
  degradations add noise on top where the task has any);
- calling the model applies its operator ``A`` to an NCHW batch: what a network's output
  passes through before the loss;
- :meth:`ForwardModel.adjoint` applies ``A^T`` (every model here is linear).

Denoising is the identity, inpainting a pixel mask, super-resolution one of two downsamplers:

- ``LanczosDownsampling``, DIP's. The observation is *not* ``A(target)``: as in DIP's code, the
  low-resolution image is Pillow's Lanczos resize of the ground truth, and ``A`` is DIP's own
  operator, which agrees with it to 35-48 dB on Set5/Set14 (``tests/test_forward.py`` checks
  every ground truth at x4 and x8).
- ``BicubicDownsampling``, MATLAB's ``imresize`` (antialiased bicubic), the low-resolution
  image of the super-resolution benchmarks (LapSRN's, whose bicubic images DIP's paper
  reports); here the observation is ``A(target)`` rounded to 8 bits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from PIL import Image

from benchmark.arrays import to_uint8

if TYPE_CHECKING:
    import torch

# torch (and resize-right, which imports it) is imported where an operator runs, not here:
# a command that only reads a suite or runs a classical method starts without it.


def _to_batch(image: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float64))[None]


def _from_batch(batch: torch.Tensor) -> np.ndarray:
    return batch[0].detach().cpu().numpy().transpose(1, 2, 0)


class ForwardModel(ABC):
    """The measurement of one task: observation, operator and adjoint.

    Attributes
    ----------
    task : str
        The registered task it measures (:mod:`benchmark.tasks`).
    mask : ndarray or None
        Inpainting: the ``(H, W, 1)`` 0/1 mask (1 = known pixel); None for other tasks.
    factor : int or None
        Super-resolution: the integer downsampling factor; None for other tasks.
    """

    task: ClassVar[str]
    mask: np.ndarray | None = None
    factor: int | None = None

    @abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator ``A`` to an NCHW batch (any channel count, float dtype)."""

    @abstractmethod
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply ``A^T`` to an NCHW batch of observations."""

    def observe(self, target: np.ndarray) -> np.ndarray:
        """The noiseless observation of a float ``(H, W, C)`` ground truth (default: ``A``)."""
        return self.apply_numpy(target).astype(np.float32)

    def apply_numpy(self, image: np.ndarray) -> np.ndarray:
        """``A`` applied to one ``(H, W, C)`` image, in float64."""
        return _from_batch(self(_to_batch(image)))

    def output_shape(self, observed: tuple[int, ...]) -> tuple[int, int, int]:
        """The shape of the image whose observation has shape ``observed``."""
        h, w, c = observed
        return h, w, c


class Identity(ForwardModel):
    """Denoising: ``A = I``; the noise is added to the ground truth itself."""

    task = "denoising"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y


class Masking(ForwardModel):
    """Inpainting: ``A x = m * x`` with a 0/1 mask ``m`` of shape ``(H, W, 1)`` (1 = known).

    ``A`` is diagonal, so it is its own adjoint.
    """

    task = "inpainting"

    def __init__(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask)
        if mask.ndim != 3 or mask.shape[2] != 1:
            raise ValueError(f"an inpainting mask has shape (H, W, 1), got {mask.shape}")
        self.mask = mask.astype(np.float32)

    def _mask_like(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.mask[..., 0]).to(x.device, x.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._mask_like(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self(y)


def lanczos2_taps(factor: int) -> np.ndarray:
    """1-D taps of DIP's Lanczos-2 downsampling kernel for ``factor``.

    Even factors use phase 0.5: ``4 f`` taps at offsets ``d_k = (k + 1/2) / f`` for
    ``k = -2f .. 2f - 1``, so the kernel is centred between two high-resolution pixels, where
    a box of ``f`` pixels has its centre. Odd factors, whose box centre is a pixel, use the
    ``4 f + 1`` taps at ``d_k = k / f``, ``k = -2f .. 2f``. Weight ``sinc(d) * sinc(d / 2)``
    (normalised sinc), normalised to sum 1.
    """
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    if factor % 2 == 0:
        offsets = (np.arange(-2 * factor, 2 * factor) + 0.5) / factor
    else:
        offsets = np.arange(-2 * factor, 2 * factor + 1) / factor
    taps = np.sinc(offsets) * np.sinc(offsets / 2)
    return taps / taps.sum()


class LanczosDownsampling(ForwardModel):
    """Super-resolution: DIP's Lanczos-2 blur and stride ``factor`` as ``A``; the observation
    is Pillow's Lanczos resize of the ground truth (on 8-bit data, as DIP's loader does).

    Low-resolution pixel ``i`` is centred at high-resolution coordinate ``f i + (f - 1) / 2``,
    as Pillow's is: replicate padding of ``(len(taps) - f) / 2`` pixels on each side (rounded up
    on the leading side for odd factors), then stride ``f``. An ``H`` x ``W`` input with sides
    that are multiples of ``f`` gives exactly ``H / f`` x ``W / f``.

    Parameters
    ----------
    factor : int
        The downsampling factor.
    """

    task = "super_resolution"

    def __init__(self, factor: int) -> None:
        self.factor = int(factor)
        self.taps = lanczos2_taps(self.factor)
        excess = len(self.taps) - self.factor
        self.pad = (excess - excess // 2, excess // 2)  # (leading, trailing)

    def _kernel(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        taps = torch.from_numpy(self.taps).to(x.device, x.dtype)
        return torch.outer(taps, taps).expand(x.shape[1], 1, -1, -1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"image size {h}x{w} is not a multiple of the factor {self.factor}")
        import torch.nn.functional as F

        lead, trail = self.pad
        padded = F.pad(x, (lead, trail, lead, trail), mode="replicate")
        return F.conv2d(padded, self._kernel(x), stride=self.factor, groups=x.shape[1])

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y``: the vector-Jacobian product of the linear map, padding included."""
        import torch

        h, w = y.shape[-2] * self.factor, y.shape[-1] * self.factor
        zeros = y.new_zeros(*y.shape[:2], h, w)
        _, vjp = torch.func.vjp(self, zeros)
        return vjp(y)[0]

    def observe(self, target: np.ndarray) -> np.ndarray:
        h, w = target.shape[:2]
        if h % self.factor or w % self.factor:
            raise ValueError(f"image size {h}x{w} is not a multiple of the factor {self.factor}")
        return lanczos_resize(target, (h // self.factor, w // self.factor))

    def output_shape(self, observed: tuple[int, ...]) -> tuple[int, int, int]:
        h, w, c = observed
        return h * self.factor, w * self.factor, c


def lanczos_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize with Pillow's Lanczos filter on 8-bit data, as DIP's data loader does.

    ``size`` is ``(height, width)``.
    """
    pixels = to_uint8(image)
    mode = "L" if pixels.shape[2] == 1 else "RGB"
    pil = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    out = np.asarray(pil.resize((size[1], size[0]), Image.Resampling.LANCZOS), np.float32) / 255
    return out[..., None] if out.ndim == 2 else out


def imresize(image: np.ndarray | torch.Tensor, scale: float) -> np.ndarray | torch.Tensor:
    """MATLAB's ``imresize(image, scale)`` with its default bicubic kernel (Keys, a = -0.5),
    antialiased when shrinking, by resize-right.

    ``image`` is ``(H, W, C)`` (numpy) or NCHW (torch); the two spatial axes are resized.
    Borders are extended by replicating the edge pixel: against the bicubic images released
    with LapSRN it matches every Set5/Set14 image to 0.01 dB, one better than MATLAB's own
    symmetric extension on Foreman.
    """
    import torch
    from resize_right import interp_methods, resize

    if isinstance(image, torch.Tensor):
        return resize(
            image,
            scale_factors=[scale, scale],
            interp_method=interp_methods.cubic,
            antialiasing=True,
            pad_mode="replicate",
        )
    return resize(
        image,
        scale_factors=[scale, scale, 1],
        interp_method=interp_methods.cubic,
        antialiasing=True,
        pad_mode="edge",
    )


class BicubicDownsampling(ForwardModel):
    """Super-resolution with MATLAB's antialiased bicubic ``imresize(x, 1 / factor)`` as ``A``
    (the super-resolution benchmarks' low-resolution images); the observation is ``A`` of the
    ground truth rounded to 8 bits, as the benchmarks' image files are.

    Parameters
    ----------
    factor : int
        The downsampling factor; image sides must be multiples of it.
    """

    task = "super_resolution"

    def __init__(self, factor: int) -> None:
        self.factor = int(factor)

    def _check(self, h: int, w: int) -> None:
        if h % self.factor or w % self.factor:
            raise ValueError(f"image size {h}x{w} is not a multiple of the factor {self.factor}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._check(*x.shape[-2:])
        return imresize(x, 1 / self.factor)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y``: the vector-Jacobian product of the linear map, borders included."""
        import torch

        h, w = y.shape[-2] * self.factor, y.shape[-1] * self.factor
        _, vjp = torch.func.vjp(self, y.new_zeros(*y.shape[:2], h, w))
        return vjp(y)[0]

    def observe(self, target: np.ndarray) -> np.ndarray:
        self._check(*target.shape[:2])
        low = imresize(target.astype(np.float64), 1 / self.factor)
        return to_uint8(low).astype(np.float32) / 255

    def output_shape(self, observed: tuple[int, ...]) -> tuple[int, int, int]:
        h, w, c = observed
        return h * self.factor, w * self.factor, c
