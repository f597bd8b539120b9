"""Fit settings: what a preset or a suite may set, and the fitting loop's constants."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from benchmark.options import check_known

# Up to this many GFLOP per step (forward and backward), CPU fits use PyTorch's native
# convolutions: faster than oneDNN for such small networks (measured: 6.6 vs 7.9 ms for DIP
# with 32 channels at 32x32, 0.13 GFLOP; 22 vs 17 ms with 128 channels, 1.8 GFLOP), and a
# grouped native convolution computes each group as a lone one does, so a batch of such
# cells needs no per-network calls to stay exact (see stack_networks).
NATIVE_CONV_GFLOP = 0.5


# Deep Decoder's best-loss rule: a new best needs the loss below 1/1.005 of the best so far.
BEST_LOSS_MARGIN = 1.005


CURVE_COLUMNS = ("iteration", "loss", "psnr_obs", "psnr_last", "psnr_ema", "es_variance")


MEMORY_FORMATS = {
    "auto": None,
    "channels_last": torch.channels_last,
    "contiguous": torch.contiguous_format,
}


class FitError(RuntimeError):
    """A fit that cannot produce a trustworthy output (for example a persistent NaN loss)."""


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings; every field can be overridden from a preset or a suite.

    The last five fields change speed, not the method: ``memory_format`` (``auto``:
    channels_last, measured faster with oneDNN on the CPU and what tensor cores want, except
    with native CPU convolutions, whose grouped channels_last kernels differ in rounding),
    ``cpu_convolutions`` (``auto``: PyTorch's native kernels for steps of at most
    ``NATIVE_CONV_GFLOP``, oneDNN above; see :func:`cpu_convolution_backend`),
    ``tf32`` (TensorFloat-32 convolutions and matmuls on CUDA), ``compile``
    (``torch.compile`` the network) and ``bf16`` (bfloat16 autocast of the forward pass; the
    loss and every tracker stay float32). ``compile`` and ``bf16`` are off by default: see
    docs/speed.md for their measured effect on PSNR.
    """

    iterations: int = 3000
    lr: float = 0.01
    reg_noise_std: float = 0.0
    reg_noise_decay: float = 1.0  # the input noise's std is multiplied by this ...
    reg_noise_decay_every: int = 0  # ... every this many steps (0: never; DD's inpainting)
    input: str = "noise"  # "noise": U(0, 1) * input_scale; "meshgrid": 2 coordinate channels
    input_scale: float = 0.1
    ema_decay: float = 0.99
    es_window: int = 100
    es_patience: int = 1000
    backtrack_db: float = 5.0
    check_every: int = 25
    record_every: int = 10
    snapshots: tuple[int, ...] = ()
    max_restores: int = 5
    stop_early: bool = False
    memory_format: str = "auto"
    cpu_convolutions: str = "auto"
    tf32: bool = True
    compile: bool = False
    bf16: bool = False

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FitConfig:
        """Build from a mapping, rejecting unknown keys with the list of valid ones."""
        check_known(values, {f.name for f in fields(cls)}, "fit option(s)")
        values = dict(values)
        if "snapshots" in values:
            values["snapshots"] = tuple(values["snapshots"])
        return replace(cls(), **values)


# Settings counted in iterations. A fit shortened below its preset's length scales them in
# proportion: DD's input-noise decay every 500 of 40 000 steps, kept at 1 000 steps, is
# another method (measured: house 28.81 dB with it, 31.26 without), and ES-WMV's patience of
# 1 000 never runs out in a fit of 1 000. A fit's length counts each step by its learning
# rate (iterations x LR; Adam moves a weight by about the LR a step): quick Table 1's 1 000
# steps at LR 0.01 are 0.91 of the preset's 11 000 at 0.001 by this count, 0.09 by steps.
# Scaled by 0.09, ES-WMV (window 9, patience 91) stops house at iteration 32, 21.08 dB, 6 dB
# under Telea; by 0.91 (91 / 909) it keeps its minimum-variance output, 33.29 dB. A fit that
# keeps its preset's LR scales by steps alone; one that keeps its preset's steps is not scaled.
SCHEDULE_FIELDS = ("reg_noise_decay_every", "check_every", "es_window", "es_patience")
# ES-WMV's window and patience are FitConfig's defaults (ES-WMV's own): scaled even when a
# preset does not name them. ``check_every`` is scaled only where a preset sets it (Table 1's
# backtracking every 50 steps); elsewhere it is this code's check interval, not a schedule.
_ALWAYS_SCALED = ("es_window", "es_patience")
_SMALLEST = {"es_window": 2}  # a variance needs two outputs


def scaled_schedule(
    preset_fit: Mapping[str, Any], overrides: Mapping[str, Any]
) -> dict[str, tuple[int, int]]:
    """The iteration-count settings of a fit that ``overrides`` shortens below its preset's,
    as ``{name: (preset's value, scaled value)}``.

    A fit's length is its iterations times its learning rate (:func:`fit_length_ratio`);
    each setting is scaled by the ratio of the two lengths (rounded, at least 1; 0 stays
    "never"); a setting the overrides name is theirs. Empty when the fit is not shortened:
    a fit of the preset's iterations keeps its schedules whatever its learning rate.
    """
    default = FitConfig()
    full = int(preset_fit.get("iterations", default.iterations))
    ratio = fit_length_ratio(preset_fit, overrides)
    if int(overrides.get("iterations", full)) >= full or ratio >= 1:
        return {}
    scaled = {}
    for name in SCHEDULE_FIELDS:
        if name in overrides or (name not in preset_fit and name not in _ALWAYS_SCALED):
            continue
        value = int(preset_fit.get(name, getattr(default, name)))
        if value > 0:
            scaled[name] = (value, max(_SMALLEST.get(name, 1), round(value * ratio)))
    return scaled


def fit_length_ratio(preset_fit: Mapping[str, Any], overrides: Mapping[str, Any]) -> float:
    """``(iterations x lr)`` of the fit ``overrides`` make, over the preset's: below 1 for a
    shortened fit.

    Examples
    --------
    >>> fit_length_ratio({"iterations": 11000, "lr": 0.001}, {"iterations": 1000, "lr": 0.01})
    0.9090909090909091
    >>> fit_length_ratio({"iterations": 3000}, {"iterations": 1000})
    0.3333333333333333
    """
    default = FitConfig()
    full = int(preset_fit.get("iterations", default.iterations))
    full_lr = float(preset_fit.get("lr", default.lr))
    short = int(overrides.get("iterations", full))
    short_lr = float(overrides.get("lr", full_lr))
    return (short * short_lr) / (full * full_lr)
