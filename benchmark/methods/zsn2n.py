"""Zero-Shot Noise2Noise (ZS-N2N; Mansour and Heckel, CVPR 2023) as a registered network method.

A two-layer residual network ``f`` (3x3 convolution to 48 channels, LeakyReLU 0.2, 3x3
convolution, LeakyReLU, 1x1 convolution back to the image's channels: 22,275 weights for
RGB, 21,313 for gray) predicts the noise of the observation ``y``; the denoised image is
``y - f(y)``. It is fitted to ``y`` alone through the pair downsampler ``D = (D1, D2)``: two
fixed depthwise 2x2 kernels of stride 2, each averaging one diagonal of every 2x2 block, so
``D1(y)`` and ``D2(y)`` are half-size images of nearly the same signal whose pixel-wise
independent noises are independent. The loss (each norm a mean over pixels)::

    L_res  = 1/2 (|D1(y) - f(D1(y)) - D2(y)|^2 + |D2(y) - f(D2(y)) - D1(y)|^2)
    L_cons = 1/2 (|D1(y) - f(D1(y)) - D1(y - f(y))|^2 + |D2(y) - f(D2(y)) - D2(y - f(y))|^2)

is minimised with Adam, its rate multiplied by ``decay`` every ``decay_every`` steps. The
output is ``clamp(y - f(y), 0, 1)`` with the final weights (``last``). The length and the
schedule are the authors' notebook's (3000 steps, lr 1e-3 halved every 1000); a later copy of
the code runs 2000 steps halved at 1500 (``iterations = 2000, decay_every = 1500``).

Every step already computes ``y - f(y)`` for ``L_cons``: its PSNR against the clean image (when
the runner gives one) is the curve, and the best of them and of the final output is
``oracle``, at no extra forward pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.degradations import Observation
from benchmark.device import resolve_device
from benchmark.methods.contract import NetworkMethod
from benchmark.methods.fit.config import FitError
from benchmark.methods.fit.devices import to_numpy, to_tensor
from benchmark.methods.networks import reset_parameters
from benchmark.methods.registry import Restoration, register
from benchmark.options import check_fields, check_known


@dataclass(frozen=True)
class ZsN2NSettings:
    """ZS-N2N's network and fit; each field is a method option of a suite or ``restore``."""

    iterations: int = 3000
    lr: float = 0.001
    decay_every: int = 1000  # StepLR: the rate is multiplied by ``decay`` every this many steps
    decay: float = 0.5
    channels: int = 48
    slope: float = 0.2  # LeakyReLU's negative slope


OUTPUTS = ("last", "oracle")
# A call's own keywords (the runner's and ``restore``'s), not settings.
CALL_KEYWORDS = frozenset({"output", "device", "progress", "monitor_reference"})


def settings_from(options: dict[str, Any]) -> ZsN2NSettings:
    """The settings of a call's options (its :data:`CALL_KEYWORDS` aside), checked by name
    and type."""
    fields = {k: v for k, v in options.items() if k not in CALL_KEYWORDS}
    check_fields(ZsN2NSettings, fields, "zsn2n")
    return replace(ZsN2NSettings(), **fields)


def build_network(image_channels: int, settings: ZsN2NSettings, generator: torch.Generator):
    """The noise-predicting network, its weights drawn from ``generator`` (PyTorch's default
    initialisation, as the authors' code gets from ``nn.Conv2d``)."""
    width = settings.channels
    net = nn.Sequential(
        nn.Conv2d(image_channels, width, 3, padding=1),
        nn.LeakyReLU(settings.slope),
        nn.Conv2d(width, width, 3, padding=1),
        nn.LeakyReLU(settings.slope),
        nn.Conv2d(width, image_channels, 1),
    )
    reset_parameters(net, generator)
    return net


def pair_downsample(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(D1(x), D2(x))`` of a ``(B, C, H, W)`` tensor: the mean of each 2x2 block's
    anti-diagonal and of its diagonal (an odd last row or column is dropped)."""
    channels = image.shape[1]
    anti = image.new_tensor([[0.0, 0.5], [0.5, 0.0]]).expand(channels, 1, 2, 2)
    diagonal = image.new_tensor([[0.5, 0.0], [0.0, 0.5]]).expand(channels, 1, 2, 2)
    first = F.conv2d(image, anti, stride=2, groups=channels)
    second = F.conv2d(image, diagonal, stride=2, groups=channels)
    return first, second


def zsn2n_loss(net: nn.Module, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_res + L_cons, y - f(y))`` for the observation ``y`` (the second, detached, is the
    current weights' unclamped output)."""
    y1, y2 = pair_downsample(y)
    pred1, pred2 = y1 - net(y1), y2 - net(y2)
    residual = 0.5 * (F.mse_loss(pred1, y2) + F.mse_loss(pred2, y1))
    denoised = y - net(y)
    down1, down2 = pair_downsample(denoised)
    consistency = 0.5 * (F.mse_loss(pred1, down1) + F.mse_loss(pred2, down2))
    return residual + consistency, denoised.detach()


def _psnr(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return -10 * torch.log10((image.clamp(0, 1) - reference).square().mean())


class _Fit:
    """One ZS-N2N fit: network, Adam, schedule and the on-device records (read by the host
    only at the end: the loop never waits)."""

    def __init__(
        self,
        y: torch.Tensor,
        settings: ZsN2NSettings,
        seed: int,
        reference: torch.Tensor | None,
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.y, self.settings, self.reference = y, settings, reference
        self.net = build_network(y.shape[1], settings, generator).to(y.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=settings.lr)
        self.schedule = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=settings.decay_every, gamma=settings.decay
        )
        steps = settings.iterations
        self.losses = torch.full((steps,), float("nan"), device=y.device)
        self.psnrs = torch.full((steps,), float("nan"), device=y.device)
        self.best = y.clone() if reference is not None else None
        self.best_psnr = torch.tensor(-float("inf"), device=y.device)
        self.best_at = torch.tensor(0, device=y.device)

    def step(self, it: int) -> None:
        """Step ``it`` (1-based): the loss at the current weights, then Adam's update."""
        loss, denoised = zsn2n_loss(self.net, self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        self.losses[it - 1] = loss.detach()
        if self.reference is not None:
            self._consider(it, denoised)

    @torch.no_grad()
    def _consider(self, it: int, image: torch.Tensor) -> None:
        psnr = _psnr(image, self.reference)
        if it <= self.settings.iterations:
            self.psnrs[it - 1] = psnr
        better = psnr > self.best_psnr
        torch.where(better, image, self.best, out=self.best)
        self.best_at.copy_(torch.where(better, it, self.best_at))
        self.best_psnr.copy_(torch.maximum(psnr, self.best_psnr))

    @torch.no_grad()
    def finish(self) -> torch.Tensor:
        """The final weights' output (the authors' read-out), a candidate of the oracle."""
        final = self.y - self.net(self.y)
        if self.reference is not None:
            self._consider(self.settings.iterations + 1, final)
        return final


def fit_zsn2n(
    observation: Observation,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    monitor_reference: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    output: str = "last",
    **options: Any,
) -> Restoration:
    """Fit ZS-N2N to a noisy observation; ``options`` are :class:`ZsN2NSettings` fields.

    Returns
    -------
    Restoration
        ``last`` (the final weights' output) and, with ``monitor_reference``, ``oracle``
        (the best PSNR over every step's output and the final one; it uses the clean image).

    Raises
    ------
    FitError
        If the loss was not finite.
    """
    settings = settings_from(options)
    if output not in OUTPUTS:
        raise KeyError(f"zsn2n output {output!r}; outputs: {', '.join(OUTPUTS)}")
    dev = resolve_device(device)
    y = to_tensor(observation.y, dev)
    reference = None if monitor_reference is None else to_tensor(monitor_reference, dev)
    state = _Fit(y, settings, seed, reference)
    started = time.perf_counter()
    report_every = max(1, settings.iterations // 100)
    for it in range(1, settings.iterations + 1):
        state.step(it)
        if progress is not None and (it % report_every == 0 or it == settings.iterations):
            progress(it, settings.iterations)
    final = state.finish()
    losses = state.losses.cpu().numpy()
    if not np.isfinite(losses).all():
        first = int(np.argmin(np.isfinite(losses))) + 1
        raise FitError(f"ZS-N2N's loss was not finite at step {first}")
    outputs = {"last": to_numpy(final)}
    info: dict[str, Any] = {
        "iterations": settings.iterations,
        "seconds_fit": time.perf_counter() - started,
        "device": str(dev),
        "settings": asdict(settings),
        "oracle_iteration": None,
        "oracle_output": None,
    }
    if reference is not None:
        outputs["oracle"] = to_numpy(state.best)
        at = int(state.best_at)
        info["oracle_iteration"] = min(at, settings.iterations)
        info["oracle_output"] = "last"
    curves = {
        "iteration": np.arange(1, settings.iterations + 1, dtype=np.float32),
        "loss": losses,
        "psnr_last": state.psnrs.cpu().numpy(),
    }
    return Restoration(outputs=outputs, default=output, info=info, curves=curves)


class ZsN2NNetwork(NetworkMethod):
    """ZS-N2N's contract with the runner: one cell at a time, its steps and one step's time."""

    def iterations(self, task: str, factor: int | None = None, **options: Any) -> int:
        return settings_from(options).iterations

    def measure_step(
        self,
        observations: Sequence[Observation],
        targets: Sequence[np.ndarray],
        device: str,
        *,
        steps: int,
        warmup: int,
        min_seconds: float,
        clock: Callable[[], float],
        **options: Any,
    ) -> float:
        settings = replace(settings_from(options), iterations=warmup + steps)
        dev = resolve_device(device)
        fits = [
            _Fit(to_tensor(o.y, dev), settings, seed, None) for seed, o in enumerate(observations)
        ]
        for it in range(1, warmup + 1):
            for fit in fits:
                fit.step(it)
        _synchronize(dev)
        started, done, elapsed = clock(), 0, 0.0
        while done < steps:
            for fit in fits:
                fit.step(warmup + done + 1)
            _synchronize(dev)
            done, elapsed = done + 1, clock() - started
            if elapsed >= min_seconds:
                break
        return elapsed / done


def _synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _check(task: str, factor: int | None = None, **options: Any) -> None:
    check_known(options, {*ZsN2NSettings.__dataclass_fields__, "output"}, "zsn2n option(s)")
    settings_from(options)
    if options.get("output", "last") not in OUTPUTS:
        raise KeyError(f"zsn2n output {options['output']!r}; outputs: {', '.join(OUTPUTS)}")


@register(
    "zsn2n",
    tasks=("denoising",),
    description="Zero-Shot Noise2Noise (Mansour & Heckel, CVPR 2023)",
    label="ZS-N2N",
    outputs=OUTPUTS,
    network=ZsN2NNetwork(),
    check_options=_check,
)
def zsn2n(observation: Observation, *, seed: int = 0, **options: Any) -> Restoration:
    """Zero-Shot Noise2Noise; options as :func:`fit_zsn2n`."""
    return fit_zsn2n(observation, seed=seed, **options)
