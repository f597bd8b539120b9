"""One fitting loop for every untrained-network prior (DIP, Deep Decoder).

A network maps a fixed random input ``z`` to an image; Adam fits its weights so that the
image, passed through the task's forward operator, matches the observation:

- denoising: ``||f(z) - y||^2``
- inpainting: ``||m * f(z) - m * y||^2`` (known pixels only)
- super-resolution: ``||D f(z) - y||^2`` with D the Lanczos-2 downsampler.

From a single run it returns several outputs:

``last``       the output after the final step;
``ema``        the exponential moving average ``avg = d * avg + (1 - d) * out`` (d = 0.99);
``es``         ES-WMV (no ground truth): the output at the iteration whose window of the last
               W outputs has the smallest variance, detected online and frozen once the
               variance has not improved for P iterations;
``best_loss``  the output with the smallest training loss (the Deep Decoder's rule);
``oracle``     the output with the best PSNR against the clean image, only when a monitoring
               reference is given. It uses the ground truth and is labelled as an oracle.

The hot loop never waits for the device: trackers, curves and snapshots live in device
tensors, and the host reads them every ``check_every`` steps (backtracking and NaN checks) and
at the end.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.degradations import Observation
from benchmark.methods.networks import padded_size
from benchmark.methods.registry import Restoration
from benchmark.operators import LanczosDownsampler

CURVE_COLUMNS = ("iteration", "loss", "psnr_obs", "psnr_last", "psnr_ema", "es_variance")


class FitError(RuntimeError):
    """A fit that cannot produce a trustworthy output (for example a persistent NaN loss)."""


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings; every field can be overridden from a preset or a suite."""

    iterations: int = 3000
    lr: float = 0.01
    reg_noise_std: float = 0.0
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

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FitConfig:
        """Build from a mapping, rejecting unknown keys with the list of valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise KeyError(f"unknown fit option(s) {unknown}; valid: {', '.join(sorted(names))}")
        values = dict(values)
        if "snapshots" in values:
            values["snapshots"] = tuple(values["snapshots"])
        return replace(cls(), **values)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch."""
    if str(device) != "auto":
        chosen = torch.device(device)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here")
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


def make_input(
    kind: str, channels: int, size: tuple[int, int], scale: float, generator: torch.Generator
) -> torch.Tensor:
    """The fixed network input ``z`` on the CPU: uniform noise times ``scale``, or a meshgrid."""
    h, w = size
    if kind == "noise":
        return torch.rand(1, channels, h, w, generator=generator) * scale
    if kind == "meshgrid":
        ys = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
        xs = torch.linspace(0, 1, w).view(1, w).expand(h, w)
        return torch.stack([xs, ys])[None].contiguous()
    raise KeyError(f"unknown input kind {kind!r}; known: noise, meshgrid")


class _Problem:
    """The data term of one task: what the output is compared with, and how."""

    def __init__(self, observation: Observation, device: torch.device) -> None:
        self.y = to_tensor(observation.y, device)
        self.channels = observation.y.shape[2]
        self.size = observation.output_shape[:2]
        self.data_fraction = 1.0
        self.mask: torch.Tensor | None = None
        self.operator: nn.Module | None = None
        if observation.task == "inpainting":
            assert observation.mask is not None
            self.mask = to_tensor(observation.mask, device)
            self.masked_y = self.y * self.mask
            self.data_fraction = float(observation.mask.mean()) or 1.0
        elif observation.task == "super_resolution":
            assert observation.factor is not None
            self.operator = LanczosDownsampler(observation.factor, self.channels).to(device)

    def loss(self, out: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            return F.mse_loss(out * self.mask, self.masked_y)
        if self.operator is not None:
            return F.mse_loss(self.operator(out), self.y)
        return F.mse_loss(out, self.y)


def _psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    return -10.0 * torch.log10(mse)


class _Trackers:
    """Device-side bookkeeping of EMA, best loss, ES-WMV, oracle and curves.

    Every update is a handful of tensor operations on one image: no host synchronisation.
    ES-WMV's window variance is kept as running sums of the outputs' differences from a
    reference image (re-centred every window), which is exact up to float rounding and costs
    O(image) per step instead of O(window x image).
    """

    def __init__(self, cfg: FitConfig, like: torch.Tensor, reference: torch.Tensor | None) -> None:
        dev = like.device
        self.cfg = cfg
        self.reference = reference
        self.inf = torch.tensor(math.inf, device=dev)
        self.ema = torch.zeros_like(like)
        self.best_loss = self.inf.clone()
        self.best_loss_out = torch.zeros_like(like)
        self.best_loss_it = torch.zeros((), dtype=torch.long, device=dev)
        w = cfg.es_window
        self.window = torch.zeros((w, *like.shape[1:]), device=dev)
        self.centre = torch.zeros_like(like[0])
        self.sum = torch.zeros_like(like[0])
        self.sumsq = torch.zeros((), device=dev)
        self.es_var = self.inf.clone()
        self.es_out = torch.zeros_like(like)
        self.es_it = torch.zeros((), dtype=torch.long, device=dev)
        self.es_stopped = torch.zeros((), dtype=torch.bool, device=dev)
        self.es_stop_it = torch.zeros((), dtype=torch.long, device=dev)
        self.oracle_mse = self.inf.clone()
        self.oracle_out = torch.zeros_like(like)
        self.oracle_it = torch.zeros((), dtype=torch.long, device=dev)
        rows = cfg.iterations // cfg.record_every
        self.curves = torch.full((rows, len(CURVE_COLUMNS)), math.nan, device=dev)
        self.snapshots: dict[int, torch.Tensor] = {}
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=dev)
        self.current_var = self.inf.clone()

    def _es_update(self, it: int, out: torch.Tensor) -> None:
        cfg, w = self.cfg, self.cfg.es_window
        slot = (it - 1) % w
        pixels = out[0].numel()
        if it > w and slot == 0:  # re-centre on the window's mean: keeps the sums small
            self.centre = self.window.mean(0)
            diffs = self.window - self.centre
            self.sum = diffs.sum(0)
            self.sumsq = diffs.square().sum()
        new = out[0] - self.centre
        old = self.window[slot] - self.centre if it > w else torch.zeros_like(new)
        self.sum += new - old
        self.sumsq += new.square().sum() - old.square().sum()
        self.window[slot] = out[0]
        if it < w:
            return
        mean = self.sum / w
        var = (self.sumsq / w - mean.square().sum()) / pixels
        self.current_var = var
        better = (var < self.es_var) & ~self.es_stopped
        self.es_var = torch.where(better, var, self.es_var)
        self.es_it = torch.where(better, it, self.es_it)
        self.es_out = torch.where(better, out, self.es_out)
        newly = ~self.es_stopped & (it - self.es_it >= cfg.es_patience)
        self.es_stop_it = torch.where(newly, it, self.es_stop_it)
        self.es_stopped = self.es_stopped | newly

    @torch.no_grad()
    def update(self, it: int, out: torch.Tensor, loss: torch.Tensor, fraction: float) -> None:
        finite = torch.isfinite(loss)
        self.nonfinite |= ~finite
        out = torch.where(finite, out, self.ema)  # a NaN step must not poison the trackers
        d = self.cfg.ema_decay
        self.ema = (
            out.clone() if it == 1 else torch.where(finite, d * self.ema + (1 - d) * out, self.ema)
        )
        better = loss < self.best_loss
        self.best_loss = torch.where(better, loss, self.best_loss)
        self.best_loss_out = torch.where(better, out, self.best_loss_out)
        self.best_loss_it = torch.where(better, it, self.best_loss_it)
        self._es_update(it, out)
        if self.reference is not None:
            mse = F.mse_loss(out, self.reference)
            better = mse < self.oracle_mse
            self.oracle_mse = torch.where(better, mse, self.oracle_mse)
            self.oracle_out = torch.where(better, out, self.oracle_out)
            self.oracle_it = torch.where(better, it, self.oracle_it)
        if it in self.cfg.snapshots:
            self.snapshots[it] = out.clone()
        if it % self.cfg.record_every == 0:
            self._record(it, out, loss, fraction)

    def _record(self, it: int, out: torch.Tensor, loss: torch.Tensor, fraction: float) -> None:
        nan = torch.full((), math.nan, device=out.device)
        if self.reference is not None:
            psnr_last = _psnr_from_mse(F.mse_loss(out.clamp(0, 1), self.reference))
            psnr_ema = _psnr_from_mse(F.mse_loss(self.ema.clamp(0, 1), self.reference))
        else:
            psnr_last = psnr_ema = nan
        row = torch.stack(
            [
                torch.full((), float(it), device=out.device),
                loss.detach(),
                _psnr_from_mse(loss.detach() / fraction),
                psnr_last,
                psnr_ema,
                self.current_var,
            ]
        )
        self.curves[it // self.cfg.record_every - 1] = row


def _snapshot(net: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    return copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict())


def fit(
    net: nn.Module,
    observation: Observation,
    cfg: FitConfig,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    monitor_reference: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Restoration:
    """Fit ``net`` to ``observation`` and collect its outputs.

    Parameters
    ----------
    net : nn.Module
        A freshly initialised network with the attributes ``input_channels`` and
        ``input_downscale`` (the input ``z`` is that many times smaller than the output),
        ``multiple`` and ``minimum`` (the output is padded to a multiple of ``multiple``, at
        least ``minimum``, and cropped back to the image).
    observation : Observation
        Denoising, inpainting or super-resolution data.
    cfg : FitConfig
        Optimisation settings.
    seed : int
        Seeds the input ``z`` and the per-step input perturbation.
    device : str or torch.device
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    monitor_reference : ndarray, optional
        The clean image, used only for the PSNR curves and the ``oracle`` output; every
        other output is computed without it.
    progress : callable, optional
        Called as ``progress(done, total)`` at each check point.

    Raises
    ------
    FitError
        If the loss stays NaN/Inf after ``cfg.max_restores`` restores of the last good weights.
    """
    dev = resolve_device(device)
    started = time.perf_counter()
    problem = _Problem(observation, dev)
    h, w = problem.size
    ph = padded_size(h, net.multiple, net.minimum)
    pw = padded_size(w, net.multiple, net.minimum)
    top, left = (ph - h) // 2, (pw - w) // 2
    cpu_gen = torch.Generator().manual_seed(seed)
    z_size = (ph // net.input_downscale, pw // net.input_downscale)
    z = make_input(cfg.input, net.input_channels, z_size, cfg.input_scale, cpu_gen)
    z = z.to(dev)
    net = net.to(dev).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    noise_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    perturbation = torch.empty_like(z)
    z_in = torch.empty_like(z)
    reference = None if monitor_reference is None else to_tensor(monitor_reference, dev)
    like = torch.zeros(1, problem.channels, h, w, device=dev)
    trackers = _Trackers(cfg, like, reference)
    good = _snapshot(net, optimizer)
    last_psnr_obs = -math.inf
    restores = consecutive_bad = 0
    it = 0
    for it in range(1, cfg.iterations + 1):
        if cfg.reg_noise_std > 0:
            perturbation.normal_(0.0, cfg.reg_noise_std, generator=noise_gen)
            torch.add(z, perturbation, out=z_in)
            out = net(z_in)
        else:
            out = net(z)
        out = out[:, :, top : top + h, left : left + w]
        loss = problem.loss(out)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        trackers.update(it, out.detach(), loss.detach(), problem.data_fraction)

        if it % cfg.check_every and it != cfg.iterations:
            continue
        # Host check point: backtracking, NaN/Inf, early stop, progress.
        psnr_obs = float(_psnr_from_mse(loss.detach() / problem.data_fraction))
        bad = bool(trackers.nonfinite) or not math.isfinite(psnr_obs)
        if bad or psnr_obs < last_psnr_obs - cfg.backtrack_db:
            restores += 1
            consecutive_bad = consecutive_bad + 1 if bad else 0
            if consecutive_bad > cfg.max_restores:
                raise FitError(
                    f"loss was NaN/Inf at iteration {it} after {cfg.max_restores} restores of "
                    "the last good weights; try a lower learning rate"
                )
            net.load_state_dict(good[0])
            optimizer.load_state_dict(good[1])
            trackers.nonfinite.zero_()
        else:
            consecutive_bad = 0
            good = _snapshot(net, optimizer)
            last_psnr_obs = psnr_obs
        if progress is not None:
            progress(it, cfg.iterations)
        if cfg.stop_early and bool(trackers.es_stopped):
            break

    return _result(trackers, it, restores, cfg, reference is not None, started, dev)


def _result(
    t: _Trackers,
    iterations: int,
    restores: int,
    cfg: FitConfig,
    has_reference: bool,
    started: float,
    dev: torch.device,
) -> Restoration:
    es_found = bool(torch.isfinite(t.es_var))
    last = to_numpy(t.window[(iterations - 1) % cfg.es_window][None])
    outputs = {
        "last": last,
        "ema": to_numpy(t.ema),
        "es": to_numpy(t.es_out) if es_found else last,
        "best_loss": to_numpy(t.best_loss_out),
    }
    if has_reference:
        outputs["oracle"] = to_numpy(t.oracle_out)
    curves_np = t.curves.cpu().numpy()
    valid = ~np.isnan(curves_np[:, 0])
    info = {
        "iterations": iterations,
        "es_iteration": int(t.es_it) if es_found else None,
        "es_stop_iteration": int(t.es_stop_it) if bool(t.es_stopped) else None,
        "best_loss_iteration": int(t.best_loss_it),
        "best_loss": float(t.best_loss),
        "oracle_iteration": int(t.oracle_it) if has_reference else None,
        "restores": restores,
        "seconds": time.perf_counter() - started,
        "device": str(dev),
    }
    return Restoration(
        outputs=outputs,
        default="last",
        info=info,
        curves={name: curves_np[valid, i] for i, name in enumerate(CURVE_COLUMNS)},
        snapshots={k: to_numpy(v) for k, v in sorted(t.snapshots.items())},
    )
