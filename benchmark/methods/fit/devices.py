"""Devices: which one, how tensors move to and from it, how much a step costs, and which
convolution kernels a fit uses there."""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmark.degradations import Observation
from benchmark.methods.fit.config import NATIVE_CONV_GFLOP, FitConfig
from benchmark.methods.networks import padded_size


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch."""
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


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(H, W, C)`` numpy -> ``(1, C, H, W)`` float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` tensor -> ``(H, W, C)`` float32 numpy."""
    return tensor[0].detach().float().cpu().numpy().transpose(1, 2, 0).copy()


def step_gflop(net: nn.Module, observation: Observation) -> float:
    """GFLOP of one forward and backward pass of ``net`` for this observation.

    Counted on a copy on the meta device (nothing is computed or allocated): the forward
    pass's count times three, as the backward pass computes the input and weight gradients.
    """
    return step_gflop_at(net, *observation.output_shape[:2])


def step_gflop_at(net: nn.Module, h: int, w: int) -> float:
    """:func:`step_gflop` for an ``h`` x ``w`` output."""
    ph, pw = padded_size(h, net.multiple, net.minimum), padded_size(w, net.multiple, net.minimum)
    shape = (1, net.input_channels, ph // net.input_downscale, pw // net.input_downscale)
    cfg = getattr(net, "cfg", None)
    try:
        hash(cfg)
    except TypeError:
        cfg = None
    if cfg is not None and getattr(net, "groups", 1) == 1:
        # Counting takes 0.2 s, as much as ten steps of a CIFAR-size cell: once per
        # architecture and size (a network built from a frozen config is that config's).
        return _architecture_gflop(type(net), cfg, shape)
    return _count_gflop(copy.deepcopy(net).to("meta"), shape)


@functools.lru_cache(maxsize=256)
def _architecture_gflop(kind: type[nn.Module], cfg: Any, shape: tuple[int, ...]) -> float:
    with torch.device("meta"):
        net = kind(cfg)
    return _count_gflop(net, shape)


def _count_gflop(meta: nn.Module, shape: tuple[int, ...]) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(shape, device="meta"))
    return 3 * counter.get_total_flops() / 1e9


def cpu_convolution_backend(cfg: FitConfig, gflop: float) -> str:
    """``native`` or ``onednn``: the CPU convolution kernels for a step of ``gflop``."""
    choice = cfg.cpu_convolutions
    if choice not in ("auto", "native", "onednn"):
        raise KeyError(f"unknown cpu_convolutions {choice!r}; known: auto, native, onednn")
    if choice == "auto":
        return "native" if gflop <= NATIVE_CONV_GFLOP else "onednn"
    return choice


@contextlib.contextmanager
def device_settings(dev: torch.device, cfg: FitConfig, gflop: float) -> Iterator[None]:
    """The convolution kernels for the duration of a fit (restored afterwards): on the CPU
    native or oneDNN, on CUDA TF32 and cuDNN autotuning."""
    if dev.type == "cpu":
        onednn = cpu_convolution_backend(cfg, gflop) == "onednn"
        previous = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = onednn  # (its flags() context also sets oneDNN TF32)
        try:
            yield
        finally:
            torch.backends.mkldnn.enabled = previous
        return
    if dev.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=True, allow_tf32=cfg.tf32):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
