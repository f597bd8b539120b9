"""Which device computes: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked once
where it is named (the command line, the runner) rather than deep in a fit."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch.

    Raises
    ------
    ValueError
        The device named is not available here (no CUDA, too few GPUs, no MPS).
    """
    import torch

    if str(device) != "auto":
        chosen = torch.device(device)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here")
        if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} requested but there are {torch.cuda.device_count()} GPU(s)"
            )
        mps = getattr(torch.backends, "mps", None)
        if chosen.type == "mps" and not (mps and mps.is_available()):
            raise ValueError(f"device {device!r} requested but MPS is not available here")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
