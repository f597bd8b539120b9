"""Forward operators as torch modules: what a network's output passes through before the loss."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def lanczos2_taps(factor: int) -> np.ndarray:
    """1-D Lanczos-2 taps for downsampling by ``factor`` with phase 0.5.

    ``4 * factor - 1`` taps at integer offsets ``k`` from ``-(2f - 1)`` to ``2f - 1``, weight
    ``sinc(k / f) * sinc(k / (2 f))`` (normalised sinc), normalised to sum 1.
    """
    offsets = np.arange(-(2 * factor - 1), 2 * factor) / factor
    taps = np.sinc(offsets) * np.sinc(offsets / 2)
    return taps / taps.sum()


class LanczosDownsampler(nn.Module):
    """DIP's super-resolution forward operator: Lanczos-2 blur, then stride ``factor``.

    Replicate padding keeps the output at exactly ``H / factor`` by ``W / factor`` for inputs
    whose sides are multiples of the factor. The operator is linear; :meth:`adjoint` applies
    its transpose.

    Parameters
    ----------
    factor : int
        Downsampling factor.
    channels : int
        Number of image channels (the kernel is applied to each separately).
    """

    def __init__(self, factor: int, channels: int) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        taps = torch.from_numpy(lanczos2_taps(factor)).float()
        kernel = torch.outer(taps, taps).expand(channels, 1, -1, -1).contiguous()
        self.register_buffer("kernel", kernel)
        self.factor = factor
        self.channels = channels
        self.pad = (kernel.shape[-1] - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Downsample an NCHW batch."""
        padded = F.pad(x, (self.pad,) * 4, mode="replicate")
        return F.conv2d(padded, self.kernel, stride=self.factor, groups=self.channels)

    def adjoint(self, y: torch.Tensor, hr_size: tuple[int, int]) -> torch.Tensor:
        """Apply the transpose of :meth:`forward` to a low-resolution NCHW batch.

        Computed as the vector-Jacobian product of the (linear) forward map, which is its
        exact adjoint, padding included.
        """
        zeros = y.new_zeros(y.shape[0], self.channels, *hr_size)
        _, vjp = torch.func.vjp(self.forward, zeros)
        return vjp(y)[0]
