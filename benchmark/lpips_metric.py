"""LPIPS (Zhang et al., 2018), an optional metric: ``pip install 'dipbench[lpips]'``.

The ``lpips`` package's AlexNet variant (the one its authors recommend as a metric), on the
CPU, with inputs scaled from [0, 1] to [-1, 1] as it expects; a gray image is repeated to
three channels. Lower is better. Its linear layers ship with the package; the AlexNet backbone
comes from torchvision's model download the first time (cached under ``$TORCH_HOME``), so an
offline machine needs that cache filled once.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from benchmark.scoring import Metric, register_metric

INSTALL_HINT = "pip install 'dipbench[lpips]' (the lpips package and torchvision)"


@cache
def _network() -> Any:
    try:
        import lpips
    except ImportError as err:
        raise RuntimeError(f"LPIPS needs the lpips package: {INSTALL_HINT}") from err
    try:
        return lpips.LPIPS(net="alex", verbose=False).eval()
    except (OSError, RuntimeError, ValueError) as err:  # urllib errors are OSErrors
        raise RuntimeError(
            f"LPIPS could not load its AlexNet weights ({type(err).__name__}: {err}); they are "
            "downloaded by torchvision once: run it where the internet is reachable, or copy "
            "$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth from such a machine"
        ) from err


def lpips_distance(output: np.ndarray, reference: np.ndarray) -> float:
    """LPIPS (AlexNet) between two ``(H, W, C)`` images in [0, 1]; 0 for identical images."""
    import torch

    def tensor(image: np.ndarray) -> torch.Tensor:
        rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].float() * 2 - 1

    with torch.no_grad():
        return float(_network()(tensor(output), tensor(reference)).item())


LPIPS = register_metric(
    Metric(
        "lpips",
        lpips_distance,
        "learned perceptual image patch similarity, AlexNet (Zhang et al., 2018); lower is better",
        higher_is_better=False,
        digits=4,
        library="lpips",
    )
)
