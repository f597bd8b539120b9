"""Devices (chosen by :func:`benchmark.device.resolve_device`): how tensors move to and from
them, how much a step costs, and which convolution kernels a fit uses there."""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmark.degradations import Observation
from benchmark.methods.fit.config import NATIVE_CONV_GFLOP, FitConfig
from benchmark.methods.networks import FittedNetwork, padded_size


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(H, W, C)`` numpy -> ``(1, C, H, W)`` float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` tensor -> ``(H, W, C)`` float32 numpy."""
    return tensor[0].detach().float().cpu().numpy().transpose(1, 2, 0).copy()


def step_gflop(net: FittedNetwork, observation: Observation) -> float:
    """GFLOP of one forward and backward pass of ``net`` for this observation.

    Counted on a copy on the meta device (nothing is computed or allocated): the forward
    pass's count times three, as the backward pass computes the input and weight gradients.
    """
    return step_gflop_at(net, *observation.output_shape[:2])


def step_gflop_at(net: FittedNetwork, h: int, w: int) -> float:
    """:func:`step_gflop` for an ``h`` x ``w`` output."""
    return 3 * _on_meta(net, h, w, _count_flops) / 1e9


def _on_meta(net: FittedNetwork, h: int, w: int, count: Callable[[nn.Module, tuple], int]) -> int:
    """``count(meta_copy, input_shape)`` for ``net`` at an ``h`` x ``w`` output, on a copy
    on the meta device (nothing is computed or allocated)."""
    ph, pw = padded_size(h, net.multiple, net.minimum), padded_size(w, net.multiple, net.minimum)
    shape = (1, net.input_channels, ph // net.input_downscale, pw // net.input_downscale)
    cfg = getattr(net, "cfg", None)
    try:
        hash(cfg)
    except TypeError:
        cfg = None
    if cfg is not None and net.groups == 1:
        # Counting takes 0.1-0.2 s, as much as ten steps of a CIFAR-size cell: once per
        # architecture and size (a network built from a frozen config is that config's).
        return _architecture_count(type(net), cfg, shape, count)
    return count(copy.deepcopy(net).to("meta"), shape)


@functools.lru_cache(maxsize=256)
def _architecture_count(
    kind: type[nn.Module], cfg: Any, shape: tuple[int, ...], count: Callable
) -> int:
    with torch.device("meta"):
        net = kind(cfg)
    return count(net, shape)


def _count_flops(meta: nn.Module, shape: tuple[int, ...]) -> int:
    """The forward pass's FLOPs (the backward pass computes about twice as many)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(shape, device="meta"))
    return counter.get_total_flops()


def _count_saved_bytes(meta: nn.Module, shape: tuple[int, ...]) -> int:
    """Bytes of the tensors autograd saves for the backward pass."""
    saved: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        saved[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        meta(torch.empty(shape, device="meta"))
    return sum(saved.values())


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


# A step's peak over the tensors autograd saves (the backward pass's gradient buffers and
# temporaries): with it a whole fit's estimate is 1.06-1.12x its measured peak on this CPU
# (DIP and the Deep Decoder, 256-384 px, AVX-512 and AVX2 kernels); rounded up for others.
STEP_MEMORY_FACTOR = 1.75
# Per parameter: the weight, its gradient, Adam's two moments and the checkpoint's three.
PARAMETER_COPIES = 7


MEMORY_LIMIT = "DIPBENCH_MEMORY_LIMIT"  # a cap on a fit's memory, e.g. "8G" on a shared machine
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def memory_limit() -> int | None:
    """``DIPBENCH_MEMORY_LIMIT`` in bytes (a number with an optional K, M, G or T)."""
    text = os.environ.get(MEMORY_LIMIT, "").strip().upper().removesuffix("B").removesuffix("I")
    if not text:
        return None
    unit = text[-1] if text[-1] in _UNITS else ""
    try:
        return int(float(text.removesuffix(unit)) * _UNITS[unit])
    except ValueError:
        raise ValueError(
            f"{MEMORY_LIMIT}={os.environ[MEMORY_LIMIT]!r} is not a size: write e.g. 8G or 512M"
        ) from None


def available_memory(dev: torch.device) -> int | None:
    """Bytes free for a fit on ``dev`` now (None: not known here): on a GPU what CUDA says
    is free, on the CPU the smaller of the kernel's MemAvailable and what the cgroup's limit
    leaves; never more than ``DIPBENCH_MEMORY_LIMIT``."""
    free: list[int] = []
    limit = memory_limit()
    if limit is not None:
        free.append(limit)
    if dev.type == "cuda":
        free.append(int(torch.cuda.mem_get_info(dev)[0]))
    elif dev.type == "cpu":
        free += _cpu_free_memory()
    return min(free) if free else None


def _cpu_free_memory() -> list[int]:
    free: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    free.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            free.append(int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return free


def fit_memory(
    net: FittedNetwork, h: int, w: int, cells: int = 1, floats_per_pixel: int = 0
) -> tuple[int, int]:
    """The bytes a fit of ``cells`` stacked copies of ``net`` takes for an ``h`` x ``w``
    output, as ``(per padded pixel, fixed)``: a step's tensors that autograd saves (counted
    on the meta device) times :data:`STEP_MEMORY_FACTOR`, ``floats_per_pixel`` more per cell
    (the trackers, ES-WMV's window, snapshots), and the parameters' copies; with freed memory
    handed back at once (:mod:`benchmark.heap`; kept, it is up to
    :data:`benchmark.heap.KEPT_HEAP_FACTOR` times as much)."""
    ph, pw = padded_size(h, net.multiple, net.minimum), padded_size(w, net.multiple, net.minimum)
    saved = _on_meta(net, h, w, _count_saved_bytes)
    per_pixel = int(STEP_MEMORY_FACTOR * saved / (ph * pw)) + 1 + 4 * floats_per_pixel
    parameters = sum(p.numel() * p.element_size() for p in net.parameters())
    return per_pixel * cells, PARAMETER_COPIES * parameters * cells


def check_memory(
    net: FittedNetwork, h: int, w: int, cells: int, dev: torch.device, floats_per_pixel: int = 0
) -> None:
    """Refuse a fit that would not fit in ``dev``'s free memory (:func:`fit_memory`), before
    any is taken, with the largest square image that would: an out-of-memory kill takes the
    machine's other work with it on a CPU, and a CUDA error names no size that would work.

    Where fits keep freed memory for the next step (:mod:`benchmark.heap`), the heap this
    process kept is handed back first (it would count as taken), and a fit that fits only
    with freed memory handed back at once runs so (slower, the same numbers).
    """
    from benchmark import heap

    if dev.type == "cpu":
        heap.release_free_memory()
    free = available_memory(dev)
    if free is None:
        return
    limited = free == memory_limit()
    per_pixel, fixed = fit_memory(net, h, w, cells, floats_per_pixel)
    ph, pw = padded_size(h, net.multiple, net.minimum), padded_size(w, net.multiple, net.minimum)
    needed = per_pixel * ph * pw + fixed
    if dev.type == "cpu" and heap.kept_now() and heap.KEPT_HEAP_FACTOR * needed > free >= needed:
        heap.hand_back_from_now()
    if needed <= free:
        return
    gib = 2**30
    if cells > 1 and needed / cells <= free:
        hint = f"fit fewer cells together (--batch {max(1, int(free * cells // needed))})"
    else:
        # One cell; a side that is a multiple of the network's is not padded further.
        pixels = max(0, free - fixed // cells) * cells // per_pixel
        side = math.isqrt(pixels) // net.multiple * net.multiple
        hint = (
            f"the largest square image that fits is about {side}x{side} (a suite's `crop`)"
            if side >= net.minimum
            else "no image size fits this network here: use a smaller network"
        )
    raise MemoryError(
        f"a fit of {cells} cell(s) of {h}x{w} (padded to {ph}x{pw}) needs about "
        f"{needed / gib:.2f} GiB on {dev.type} and {free / gib:.2f} GiB is free"
        f"{f' under {MEMORY_LIMIT}' if limited else ''}: {hint}"
    )
